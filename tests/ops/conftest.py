"""Fixtures for the ops tests: a real agent (replay signal, fake GPUs, local jobs) running as a
subprocess with a fast clock, and a real Prometheus scraping it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from gridshift.scheduler.clock import SystemClock
from gridshift.scheduler.signals.hub import SKILLS_VERSION
from gridshift.scheduler.signals.skill import ForecastSkill
from gridshift.scheduler.store import SqliteStore
from tests.conftest import require
from tests.nvml.fakenvml import FakeGpu, FakeNvmlState, build
from tests.ops.tools import HTTP_TIMEOUT_S, RULES, Agent, Prometheus, tool

# One wall second is ten simulated minutes: a job's hour passes in six seconds.
CLOCK_SPEED = 600.0
# The simulated clock starts at a fixed time, so the replayed grid (the bundled CISO trace,
# shifted by whole weeks) is the same whenever the tests run: 20:00 in California, the
# evening peak, with the next day's solar hours the cleanest window ahead.
CLOCK_START = datetime(2026, 1, 13, 4, 0, tzinfo=UTC)
# What an earlier run of the agent had learnt of the `local` forecast: 30 g/kWh off.
SEEDED_FORECAST_ERROR_G_PER_KWH = 30.0


@dataclass
class LiveStack:
    agent: Agent
    prometheus: Prometheus
    nvml: FakeNvmlState
    jobs: dict[str, dict[str, Any]]


def agent_config(workdir: Path) -> dict[str, Any]:
    """Two regions: `local` served by the bundled replay trace, `offline` by a provider whose
    trace is empty (it fails on every call, so its signal is never fresh)."""
    empty = workdir / "empty-trace.csv"
    empty.write_text("")
    return {
        "state_dir": str(workdir / "state"),
        "tick_s": 1,
        "reconcile_s": 1,
        "signal_refresh_s": 2,
        "clock_speed": CLOCK_SPEED,
        "clock_origin": datetime.now(UTC).isoformat(),
        "clock_start": CLOCK_START.isoformat(),
        "default_region": "local",
        "providers": {
            "replay": {"type": "replay"},
            "recorded": {"type": "replay", "path": str(empty)},
        },
        "regions": {
            "local": {"sources": [{"provider": "replay"}]},
            "offline": {"sources": [{"provider": "recorded"}]},
        },
        "local": {"gpus": 2, "kill_grace_s": 1},
        "nvml": {
            "enabled": True,
            "sample_interval_s": 1,
            "capping": True,
            "min_change_interval_s": 0,
            # Any grid this dirty caps the GPUs, so the caps show on the dashboard.
            "curve": [
                {"intensity_g_per_kwh": 0, "cap_pct": 100},
                {"intensity_g_per_kwh": 50, "cap_pct": 60},
            ],
        },
        "log_level": "INFO",
    }


@pytest.fixture(scope="module")
def fake_nvml_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    have_cc = shutil.which("gcc") is not None or shutil.which("cc") is not None
    require("a C compiler (gcc)", have_cc, "apt-get install gcc libc6-dev")
    return build(tmp_path_factory.mktemp("fake-nvml-ops"))


def seed_forecast_skill(state_dir: Path) -> None:
    """Leave in the store what an earlier run learnt of its forecasts (a day of targets, all
    off by the same amount), as the agent itself writes it; the agent started on this
    state dir reads it back, so the forecast-error gauge has data from the first scrape."""
    skill = ForecastSkill()
    t0 = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
    for hour in range(26):
        now = t0 + hour * 3600.0
        skill.record_actual(now, now + 3600.0, 100.0)
        skill.record_forecast(
            now, [(now + 3600.0, now + 7200.0, 100.0 + SEEDED_FORECAST_ERROR_G_PER_KWH)]
        )
    state_dir.mkdir(parents=True, exist_ok=True)
    store = SqliteStore.open(state_dir / "gridshift.db", SystemClock())
    try:
        # each region's skills by the forecast provider they score (here the replay)
        skills = {"version": SKILLS_VERSION, "providers": {"replay": skill.state()}}
        store.set_json("forecast_skill", {"local": skills})
    finally:
        store.close()


def start_agent(workdir: Path, lib: Path) -> tuple[Agent, FakeNvmlState]:
    seed_forecast_skill(workdir / "state")
    nvml = FakeNvmlState(
        workdir / "nvml-state.conf", [FakeGpu(demand_w=420.0), FakeGpu(demand_w=250.0)], None
    )
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = str(lib.parent)
    env["FAKE_NVML_STATE"] = str(nvml.path)
    for key in list(env):
        if key.startswith("GRIDSHIFT_") and key != "GRIDSHIFT_REQUIRE_COMPONENTS":
            del env[key]
    agent = Agent(workdir, agent_config(workdir), env=env)
    try:
        agent.wait_healthy()
    except BaseException:
        agent.stop()
        raise
    return agent, nvml


def submit(agent: Agent, body: dict[str, Any]) -> dict[str, Any]:
    resp = requests.post(agent.url + "/jobs", json=body, timeout=HTTP_TIMEOUT_S)
    assert resp.status_code == 201, resp.text
    job: dict[str, Any] = resp.json()
    return job


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, fake_nvml_lib: Path) -> Iterator[LiveStack]:
    prometheus_bin = tool("prometheus", "apt-get install prometheus")
    workdir = tmp_path_factory.mktemp("ops-live")
    agent, nvml = start_agent(workdir, fake_nvml_lib)
    prom = None
    jobs: dict[str, dict[str, Any]] = {}
    try:
        prom = Prometheus(prometheus_bin, workdir, [f"127.0.0.1:{agent.port}"], [RULES])
        prom.wait_target_up()
        jobs = {
            # Due now: its latest start has come, so it starts at once and finishes.
            "urgent": submit(agent, {
                "name": "urgent", "command": ["sleep", "2"], "gpus": 1,
                "expected_duration_s": 600, "deadline_in": "15m", "expected_power_w": 400,
            }),
            # A day of slack: held for the cleanest window.
            "deferrable": submit(agent, {
                "name": "deferrable", "command": ["sleep", "1"], "gpus": 1,
                "expected_duration_s": 3600, "deadline_in": "2d",
            }),
            # Long and interruptible: runs and may be suspended through dirty hours.
            "interruptible": submit(agent, {
                "name": "interruptible", "command": ["sleep", "60"], "gpus": 1,
                "expected_duration_s": 6 * 3600, "deadline_in": "12h", "interruptible": True,
            }),
        }  # fmt: skip
        yield LiveStack(agent, prom, nvml, jobs)
    finally:
        if prom is not None:
            prom.stop()
        if agent.alive():
            for job in jobs.values():
                requests.post(f"{agent.url}/jobs/{job['id']}/cancel", timeout=HTTP_TIMEOUT_S)
        agent.stop()
        _end_leftover_jobs(workdir / "state" / "runs")


def _end_leftover_jobs(runs_dir: Path) -> None:
    """Local jobs outlive the agent by design (a restarted agent re-adopts them). Jobs the
    test could not cancel are ended by the process group their supervisor recorded."""
    if not runs_dir.is_dir():
        return
    for run_dir in runs_dir.iterdir():
        pid_file = run_dir / "pid"
        if (run_dir / "exit.json").exists() or not pid_file.exists():
            continue
        with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
            os.killpg(int(pid_file.read_text().strip()), signal.SIGKILL)
