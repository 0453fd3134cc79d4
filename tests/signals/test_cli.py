"""`gridshift signals` against the API replicas, through the real CLI entry point."""

from __future__ import annotations

import importlib.util
import itertools
import json
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from gridshift.scheduler.agent import HISTORY_KEY
from gridshift.scheduler.cli import main
from gridshift.scheduler.clock import SystemClock
from gridshift.scheduler.models import Forecast, ForecastPoint
from gridshift.scheduler.signals.cli import hourly, sparkline
from gridshift.scheduler.signals.history import MeasuredHistory
from gridshift.scheduler.store import SqliteStore

from ..conftest import require
from .replicas import ReplicaSet


@pytest.fixture
def config_file(tmp_path, monkeypatch):
    monkeypatch.delenv("GRIDSHIFT_CONFIG", raising=False)
    replicas = ReplicaSet(SystemClock()).start()
    config = {
        "state_dir": str(tmp_path),
        "default_region": "gb",
        "providers": {
            "em": {
                "type": "electricitymaps",
                "base_url": replicas.em.base_url,
                "api_key": replicas.em.api_key,
                "retries": 0,
            },
            "ukci": {"type": "ukci", "base_url": replicas.uk.base_url, "retries": 0},
        },
        "regions": {
            "gb": {
                "sources": [
                    {"provider": "em", "location": "GB"},
                    {"provider": "ukci", "location": "national"},
                ]
            },
            "london": {"sources": [{"provider": "ukci", "location": "13"}]},
        },
    }
    path = tmp_path / "gridshift.yaml"
    path.write_text(yaml.safe_dump(config))
    yield path, replicas
    replicas.stop()


def test_table_and_chart(config_file, capsys):
    path, replicas = config_file
    replicas.em.forecast_access = False  # a free-tier key: the forecast comes from ukci
    assert main(["signals", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    gb = next(line for line in lines if line.startswith("gb "))
    assert "em" in gb and "average/direct" in gb and "fresh" in gb
    london = next(line for line in lines if line.startswith("london "))
    assert "ukci" in london
    assert "gb: forecast from ukci" in out
    assert any(ch in out for ch in "▁▂▃▄▅▆▇█")
    assert "no_access" not in out  # errors of the chain show only when the value is missing


def test_a_free_key_region_shows_the_forecast_an_agent_made_from_its_measured_values(
    config_file, tmp_path, capsys
):
    path, replicas = config_file
    replicas.em.forecast_access = False
    config = yaml.safe_load(path.read_text())
    config["regions"] = {"de": {"sources": [{"provider": "em", "location": "DE"}]}}
    config["default_region"] = "de"
    path.write_text(yaml.safe_dump(config))
    replicas.em.fail("empty")  # the provider's history gives nothing either
    assert main(["signals", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "de: no forecast in use" in out  # nothing measured, no store
    # an agent on this state_dir measured the last day, hour by hour
    history = MeasuredHistory()
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    for h in range(1, 25):
        start = hour - timedelta(hours=h)
        history.record(start.timestamp(), start.timestamp() + 3600, replicas.em.value_at(start))
    store = SqliteStore.open(tmp_path / "gridshift.db", SystemClock())
    store.set_json(HISTORY_KEY, {"de": history.state()})
    store.close()
    assert main(["signals", "--config", str(path)]) == 0
    assert "de: forecast from history" in capsys.readouterr().out
    # a demo agent's store (a simulated clock): its timeline is not this command's
    store = SqliteStore.open(tmp_path / "gridshift.db", SystemClock())
    store.set_meta("clock", "simulated")
    store.close()
    assert main(["signals", "--config", str(path)]) == 0
    captured = capsys.readouterr()
    assert "de: no forecast in use" in captured.out
    assert "runs on a simulated clock and this command on a wall one" in captured.err


def test_one_region_as_json(config_file, capsys):
    path, replicas = config_file
    assert main(["signals", "london", "--json", "--config", str(path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert list(data["regions"]) == ["london"]
    london = data["regions"]["london"]
    assert london["provider"] == "ukci" and london["fresh"] is True
    assert london["current"]["intensity_g_per_kwh"] > 0
    # fw48h from this minute: 97 half hours from the current one; in the first minute after
    # a half hour the API's first period is the one that has just ended, which is dropped
    points = london["forecast"]["points"]
    assert len(points) in (96, 97)
    starts = [datetime.fromisoformat(p["start"]) for p in points]
    assert all(b - a == timedelta(minutes=30) for a, b in itertools.pairwise(starts))
    assert datetime.fromisoformat(points[0]["end"]) > datetime.now(UTC) - timedelta(minutes=1)
    assert replicas.em.requests == []  # only the region asked for was refreshed


def test_every_provider_down_exits_3_and_says_fail_open(config_file, capsys):
    path, replicas = config_file
    replicas.em.stop()
    replicas.uk.stop()
    assert main(["signals", "gb", "--config", str(path)]) == 3
    out = capsys.readouterr().out
    assert "UNKNOWN: fail open" in out
    assert "em:" in out and "ukci:" in out


def test_unknown_region(config_file, capsys):
    path, _ = config_file
    assert main(["signals", "mars", "--config", str(path)]) == 1
    assert "configured regions: gb, london" in capsys.readouterr().err


def test_png(config_file, tmp_path, capsys):
    require(
        "matplotlib", importlib.util.find_spec("matplotlib") is not None, "pip install -e .[test]"
    )
    path, _ = config_file
    png = tmp_path / "forecast.png"
    assert main(["signals", "--config", str(path), "--png", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_hourly_means_and_sparkline():
    t0 = datetime(2024, 5, 1, 12, tzinfo=UTC)
    half = timedelta(minutes=30)
    points = [
        ForecastPoint(start=t0 + i * half, end=t0 + (i + 1) * half, intensity_g_per_kwh=v)
        for i, v in enumerate([100, 200, 300, 300, 50, 50])
    ]
    fc = Forecast(region="x", provider="p", issued_at=t0, points=points)
    rows = hourly(fc, t0 + timedelta(minutes=10), 3)
    assert rows == [(t0, 150.0), (t0 + 2 * half, 300.0), (t0 + 4 * half, 50.0)]
    assert sparkline([150.0, 300.0, 50.0]) == "▄█▁"
    assert sparkline([5.0, 5.0]) == "▁▁"
