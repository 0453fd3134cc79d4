"""The agent as a real process on the fake NVML (LD_LIBRARY_PATH): it caps GPUs from the
carbon curve, attributes measured energy to a GPU job, exports GPU metrics, and after a
SIGKILL with GPUs capped, the restarted agent restores the limits before its first tick.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
import yaml

from gridshift.adapters.powercap import DEFAULTS_FILE
from tests.agentproc import AgentProcess
from tests.nvml.conftest import FakeNvml

pytestmark = pytest.mark.slow

TICK_S = 0.5


def constant_trace(path: Path, intensity_g_per_kwh: float) -> Path:
    """A replay trace with one value for every hour of several days around now."""
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=3)
    rows = ["time,local"]
    for h in range(24 * 7):
        rows.append(
            f"{(start + timedelta(hours=h)).strftime('%Y-%m-%d %H:%M:%S')},{intensity_g_per_kwh}"
        )
    path.write_text("\n".join(rows) + "\n")
    return path


class Agent(AgentProcess):
    def __init__(self, tmp: Path, fake: FakeNvml, trace: Path) -> None:
        super().__init__(tmp, up_timeout_s=60)
        self.state_dir = tmp / "state"
        self.config = tmp / "gridshift.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "state_dir": str(self.state_dir),
                    "api": {"port": self.port},
                    "tick_s": TICK_S,
                    "reconcile_s": TICK_S,
                    "signal_refresh_s": 1.0,
                    "providers": {"replay": {"type": "replay", "path": str(trace)}},
                    "local": {"gpus": 2},
                    "nvml": {
                        "capping": True,
                        "min_change_interval_s": 0,
                        "sample_interval_s": 0.2,
                    },
                }
            )
        )
        self.env = {**fake.env(), "GRIDSHIFT_CONFIG": str(self.config)}


@pytest.fixture
def agent_factory(tmp_path: Path, fake_nvml_files: FakeNvml) -> Iterator[Callable[[float], Agent]]:
    made: list[Agent] = []

    def make(intensity: float) -> Agent:
        trace = constant_trace(tmp_path / "trace.csv", intensity)
        a = Agent(tmp_path, fake_nvml_files, trace)
        made.append(a)
        return a

    yield make
    for a in made:
        if a.proc is not None and a.proc.poll() is None:
            a.proc.kill()
            a.proc.wait(timeout=30)


def wait_for(what: str, check: Callable[[], bool], timeout_s: float, agent: Agent) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}\n" + agent.log())


def limits_mw(fake: FakeNvml) -> list[int]:
    kv = fake.state.read_back()
    return [int(kv[f"gpu{i}.power_limit_mw"]) for i in range(2)]


def test_sigkill_after_capping_then_restart_restores_defaults(
    agent_factory: Callable[[float], Agent], fake_nvml_files: FakeNvml
) -> None:
    agent = agent_factory(600.0)  # dirty grid: the default curve caps to 70 %
    agent.start()
    wait_for("both GPUs capped", lambda: limits_mw(fake_nvml_files) == [490_000] * 2, 15, agent)
    record = json.loads((agent.state_dir / DEFAULTS_FILE).read_text())["devices"]
    assert {e["restore_w"] for e in record.values()} == {700.0}

    agent.kill(signal.SIGKILL)  # no shutdown handler runs
    assert limits_mw(fake_nvml_files) == [490_000] * 2  # still capped: nobody restored them

    # Restart with capping switched off: the record alone makes it restore, before any tick.
    agent.start(GRIDSHIFT_NVML__CAPPING="false")
    assert limits_mw(fake_nvml_files) == [700_000] * 2
    assert not (agent.state_dir / DEFAULTS_FILE).exists()
    assert "restored to 700 W (agent starting" in agent.log()
    time.sleep(3 * TICK_S)  # and nothing caps them again
    assert limits_mw(fake_nvml_files) == [700_000] * 2
    agent.kill(signal.SIGTERM)


def test_restart_with_capping_on_restores_then_recaps_and_sigterm_restores(
    agent_factory: Callable[[float], Agent], fake_nvml_files: FakeNvml
) -> None:
    agent = agent_factory(600.0)
    agent.start()
    wait_for("GPUs capped", lambda: limits_mw(fake_nvml_files) == [490_000] * 2, 15, agent)
    agent.kill(signal.SIGKILL)
    agent.start()
    assert "restored to 700 W (agent starting" in agent.log()
    wait_for("GPUs capped again", lambda: limits_mw(fake_nvml_files) == [490_000] * 2, 15, agent)
    agent.kill(signal.SIGTERM)  # a clean stop restores
    assert limits_mw(fake_nvml_files) == [700_000] * 2
    assert not (agent.state_dir / DEFAULTS_FILE).exists()


def test_gpu_job_energy_is_measured_and_metrics_exported(
    agent_factory: Callable[[float], Agent], fake_nvml_files: FakeNvml
) -> None:
    agent = agent_factory(200.0)  # clean grid: no cap, the job starts at once
    agent.start()
    resp = requests.post(
        agent.api + "/jobs",
        json={
            "name": "train",
            "command": [sys.executable, "-c", "import time; time.sleep(6)"],
            "expected_duration_s": 6,
            "gpus": 1,
        },
        timeout=10,
    )
    assert resp.status_code == 201, resp.text
    job_id = resp.json()["id"]

    def placed() -> bool:
        job = requests.get(f"{agent.api}/jobs/{job_id}", timeout=5).json()
        return job["state"] == "running" and bool(job["gpus_assigned"])

    wait_for("the job to run on a GPU", placed, 30, agent)
    gpu = requests.get(f"{agent.api}/jobs/{job_id}", timeout=5).json()["gpus_assigned"][0]
    code = "import sys; from gridshift.scheduler.cli import main; sys.exit(main(sys.argv[1:]))"
    out = subprocess.run(
        [sys.executable, "-c", code, "gpus", "--json", "--api", agent.api],
        env=agent.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    rows = {r["index"]: r for r in json.loads(out.stdout)}
    assert rows[gpu]["jobs"] == [job_id]  # `gridshift gpus` shows the job on its GPU
    assert rows[1 - gpu]["jobs"] == []

    def finished() -> bool:
        job = requests.get(f"{agent.api}/jobs/{job_id}", timeout=5).json()
        return job["state"] in ("succeeded", "failed")

    wait_for("the job to finish", finished, 60, agent)
    metrics = requests.get(agent.api + "/metrics", timeout=5).text
    assert (
        'gridshift_gpu_power_watts{gpu="0",uuid="GPU-00000000-0000-4000-8000-000000000000"}'
        in metrics
    )
    assert "gridshift_gpu_energy_joules_total" in metrics
    assert "gridshift_gpu_default_power_limit_watts" in metrics
    agent.kill(signal.SIGTERM)  # flushes pending energy to the store
    agent.start()
    job = requests.get(f"{agent.api}/jobs/{job_id}", timeout=5).json()
    assert job["state"] == "succeeded", job
    gpu_w = 400.0 if job["gpus_assigned"] == [0] else 350.0
    # about 6 s on one fake GPU, less the time until the agent learns which GPU it got
    assert 2 * gpu_w <= job["energy_j"] <= 9 * gpu_w, job
    assert job["saving_is_estimate"] is False
    assert job["emissions_g"] == pytest.approx(job["energy_j"] / 3.6e6 * 200.0, rel=0.05)
    agent.kill(signal.SIGTERM)


def test_agent_without_a_driver_says_telemetry_off_once_and_schedules(
    agent_factory: Callable[[float], Agent], tmp_path: Path
) -> None:
    agent = agent_factory(200.0)
    agent.env["FAKE_NVML_STATE"] = str(tmp_path / "no-driver")  # NVML: driver not loaded
    agent.start()
    resp = requests.post(
        agent.api + "/jobs",
        json={"command": [sys.executable, "-c", "pass"], "expected_duration_s": 1, "gpus": 1},
        timeout=10,
    )
    assert resp.status_code == 201, resp.text
    job_id = resp.json()["id"]

    def finished() -> bool:
        job = requests.get(f"{agent.api}/jobs/{job_id}", timeout=5).json()
        return job["state"] == "succeeded"

    wait_for("the job to finish without telemetry", finished, 60, agent)
    time.sleep(1.0)  # several sampling rounds (every 0.2 s) have passed
    assert agent.log().count("GPU telemetry is off") == 1, agent.log()
    assert "driver is not loaded" in agent.log()
    assert "gridshift_gpu_power_watts{" not in requests.get(agent.api + "/metrics", timeout=5).text
    agent.kill(signal.SIGTERM)
