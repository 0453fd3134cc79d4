"""GPU metrics and `gridshift gpus`."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, generate_latest

from gridshift.scheduler.clock import SystemClock
from gridshift.scheduler.models import PowerSample
from gridshift.scheduler.telemetry.metrics import GpuCollector
from gridshift.scheduler.telemetry.nvml import NvmlTelemetry
from tests.nvml.conftest import FakeNvml

T0 = datetime(2024, 5, 1, tzinfo=UTC)


def test_collector_exports_units_and_bounded_labels(fake_nvml: FakeNvml) -> None:
    registry = CollectorRegistry()
    collector = GpuCollector(registry)
    t = NvmlTelemetry(SystemClock())
    try:
        collector.update(t.sample())
    finally:
        t.close()
    get = registry.get_sample_value
    labels0 = {"gpu": "0", "uuid": "GPU-00000000-0000-4000-8000-000000000000"}
    assert get("gridshift_gpu_power_watts", labels0) == 400.0
    assert get("gridshift_gpu_energy_joules_total", labels0) == 0.0
    assert get("gridshift_gpu_power_limit_watts", labels0) == 700.0
    assert get("gridshift_gpu_default_power_limit_watts", labels0) == 700.0
    assert get("gridshift_gpu_utilization_ratio", labels0) == 0.9
    text = generate_latest(registry).decode()
    for line in text.splitlines():
        if line.startswith("gridshift_gpu_"):
            assert line.split("{")[1].split("}")[0].count("=") == 2, line  # gpu and uuid only


def test_collector_integrates_where_no_counter() -> None:
    registry = CollectorRegistry()
    collector = GpuCollector(registry)
    for k in range(4):
        collector.update(
            [PowerSample(index=0, uuid="GPU-x", at=T0 + timedelta(seconds=k), power_w=100.0)]
        )
    labels = {"gpu": "0", "uuid": "GPU-x"}
    assert registry.get_sample_value("gridshift_gpu_energy_joules_total", labels) == 300.0


def test_two_registries_do_not_clash() -> None:
    GpuCollector(CollectorRegistry())
    GpuCollector(CollectorRegistry())


def run_cli(fake: FakeNvml, *args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from gridshift.scheduler.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, "gpus", "--no-api", *args],
        env=fake.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_gpus_command_table_and_json(fake_nvml_files: FakeNvml) -> None:
    fake_nvml_files.state.change(1, power_limit_w=450.0)
    out = run_cli(fake_nvml_files)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["GPU", "NAME", "UUID"]
    assert "GPU-00000001-0000-4000-8000-000000000001" in lines[2]
    assert " 450 " in lines[2] and "200-700" in lines[2]
    out = run_cli(fake_nvml_files, "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["index"] for r in rows] == [0, 1]
    assert rows[0]["power_w"] == 400.0
    assert rows[1]["power_limit_w"] == 450.0
    assert rows[1]["power_w"] == 350.0
    assert rows[0]["energy_j"] is not None and rows[0]["energy_j"] >= 0
    assert rows[0]["jobs"] == []


def test_gpus_command_without_driver(fake_nvml_files: FakeNvml, tmp_path) -> None:
    env = fake_nvml_files.env()
    env["FAKE_NVML_STATE"] = str(tmp_path / "absent")
    code = "import sys; from gridshift.scheduler.cli import main; sys.exit(main(sys.argv[1:]))"
    out = subprocess.run(
        [sys.executable, "-c", code, "gpus", "--no-api"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1
    assert "GPU telemetry is off on this host" in out.stderr
    assert "driver is not loaded" in out.stderr
