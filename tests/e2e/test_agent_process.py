"""End to end: the agent as a real process, on the bundled real trace, with the clock
accelerated 3600x (one wall second is one simulated hour). Jobs are submitted through the
CLI and run as real local processes. The agent is then killed with SIGKILL while jobs are
held and running, restarted, and checked: no job lost, none started twice, held jobs still
held, running jobs finished with their exit codes recorded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from gridshift.scheduler.clock import FakeClock
from gridshift.scheduler.config import ReplayProviderConfig
from gridshift.scheduler.policy.window import StepSeries
from gridshift.scheduler.signals.replay import ReplayProvider
from tests import agentproc
from tests.conftest import free_port

pytestmark = pytest.mark.slow

SPEED = 3600.0
# Simulated start: 02:00 UTC (18:00 in California): the evening peak, with the solar
# trough of the next day ahead, so deferrable jobs have something to wait for.
SIM_START = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


class AgentProcess(agentproc.AgentProcess):
    def __init__(self, tmp: Path, origin: datetime) -> None:
        super().__init__(tmp)
        self.env = {
            **os.environ,
            "GRIDSHIFT_STATE_DIR": str(tmp / "state"),
            "GRIDSHIFT_API__PORT": str(self.port),
            "GRIDSHIFT_CLOCK_SPEED": str(SPEED),
            "GRIDSHIFT_CLOCK_ORIGIN": origin.isoformat(),
            "GRIDSHIFT_CLOCK_START": SIM_START.isoformat(),  # what the clock shows at origin
            "GRIDSHIFT_TICK_S": "0.2",
            "GRIDSHIFT_RECONCILE_S": "0.2",
            "GRIDSHIFT_SIGNAL_REFRESH_S": "0.5",
            "GRIDSHIFT_API_URL": self.api,
        }

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "gridshift.scheduler.cli", *args],
            env=self.env,
            cwd=self.tmp,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    def jobs(self) -> dict[str, dict]:
        return {j["id"]: j for j in json.loads(self.cli("list", "--json"))}

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                raise


def wait_for(fn, timeout_s: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def ts(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


@pytest.fixture
def agent(tmp_path):
    a = AgentProcess(tmp_path, datetime.now(UTC))
    a.start()
    yield a
    a.stop()


def test_jobs_run_in_cleaner_windows_and_survive_sigkill(agent, tmp_path):
    starts_log = tmp_path / "starts.txt"
    record = f'echo "$GRIDSHIFT_JOB_ID" >> {starts_log}'

    def submit(name: str, duration: str, deadline: str, body: str) -> str:
        out = agent.cli(
            "submit", "--name", name, "--duration", duration, "--deadline", deadline,
            "--shell", "--", f"{record}; {body}",
        )  # fmt: skip
        return out.split()[0]

    ids = {
        # deferrable: an hour of work, due within a day
        "deferrable": submit("deferrable", "1h", "24h", "sleep 1"),
        "deferrable2": submit("deferrable2", "2h", "20h", "sleep 2"),
        # must start within the hour to make its deadline
        "urgent": submit("urgent", "1h", "90m", "sleep 1"),
        # fails with a code of its own
        "failing": submit("failing", "30m", "2h", "exit 7"),
        # a long one that will be running when the agent is killed
        "long": submit("long", "6h", "7h", "sleep 8"),
    }
    jobs = agent.jobs()
    assert set(ids.values()) <= set(jobs)
    exposition = requests.get(f"{agent.api}/metrics", timeout=10).text
    assert "gridshift_decisions_total{" in exposition
    assert "_created" not in exposition  # no creation-time series beside the counters
    assert jobs[ids["deferrable"]]["state"] == "held", jobs[ids["deferrable"]]["reason"]
    explained = agent.cli("explain", ids["deferrable"])
    assert "held until" in explained and "g/kWh" in explained

    # Kill the agent while some jobs are held and some running.
    wait_for(
        lambda: agent.jobs()[ids["long"]]["state"] == "running",
        timeout_s=15,
        what="the long job to start",
    )
    before = agent.jobs()
    held_before = {i: j for i, j in before.items() if j["state"] == "held"}
    running_before = {i for i, j in before.items() if j["state"] == "running"}
    assert held_before and running_before
    agent.kill()
    agent.start()
    after = agent.jobs()
    assert set(after) == set(before), "a job was lost"
    for job_id, job in held_before.items():
        if ts(after[job_id]["updated_at"]) <= ts(job["updated_at"]):
            assert after[job_id]["state"] == "held"
            assert after[job_id]["planned_start"] == job["planned_start"]

    # Everything finishes, each job exactly once, each inside its deadline.
    final = wait_for(
        lambda: (
            (j := agent.jobs())
            and all(x["state"] in ("succeeded", "failed") for x in j.values())
            and j
        ),
        timeout_s=60,
        what="all jobs to finish",
    )
    starts = starts_log.read_text().split()
    assert sorted(starts) == sorted(set(starts)), f"a job started twice: {starts}"
    assert set(starts) == set(ids.values())
    assert final[ids["failing"]]["state"] == "failed"
    assert final[ids["failing"]]["exit_code"] == 7
    for name in ("deferrable", "deferrable2", "urgent", "long"):
        assert final[ids[name]]["state"] == "succeeded", final[ids[name]]
        assert final[ids[name]]["exit_code"] == 0

    # Each started no later than its latest start, in a window no dirtier than running at
    # once (judged on the same real trace the agent replays).
    provider = ReplayProvider("replay", ReplayProviderConfig(), FakeClock(SIM_START))
    series = StepSeries(provider.forecast("", SIM_START, SIM_START + timedelta(hours=30)))
    slack = timedelta(seconds=0.6 * SPEED)  # up to a few ticks and a restart, in sim time
    for name, job_id in ids.items():
        job = final[job_id]
        duration = job["spec"]["expected_duration_s"]
        started, submitted = ts(job["started_at"]), ts(job["submitted_at"])
        latest = ts(job["deadline"]) - timedelta(seconds=duration)
        assert started <= latest + slack, f"{name} started after its latest start"
        now_mean = series.mean(submitted.timestamp(), submitted.timestamp() + duration)
        run_mean = series.mean(started.timestamp(), started.timestamp() + duration)
        assert run_mean is not None and now_mean is not None
        assert run_mean <= now_mean * 1.02, f"{name} ran dirtier ({run_mean} > {now_mean})"
    held_job = final[ids["deferrable"]]
    assert ts(held_job["started_at"]) - ts(held_job["submitted_at"]) > timedelta(hours=3)


@pytest.mark.parametrize("same", ["port", "state_dir"])
def test_a_second_agent_on_the_same_port_or_state_stops_before_acting(agent, tmp_path, same):
    env = dict(agent.env)
    if same == "port":
        env["GRIDSHIFT_STATE_DIR"] = str(tmp_path / "other-state")
        expected = f"cannot listen on 127.0.0.1:{agent.port}"
    else:
        env["GRIDSHIFT_API__PORT"] = str(free_port())
        expected = "another gridshift agent is running on"
    second = subprocess.run(
        [sys.executable, "-m", "gridshift.scheduler.cli", "agent"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 1, second.stderr
    assert expected in second.stderr
    assert "API and /metrics on" not in second.stderr  # it never claimed to serve
    assert not (tmp_path / "other-state" / "gridshift.db").exists()  # nor opened a store
    assert requests.get(agent.api + "/healthz", timeout=5).ok  # the first one runs on


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_drain_cleanly(tmp_path, sig):
    a = AgentProcess(tmp_path, datetime.now(UTC))
    a.start()
    job_id = a.cli("submit", "--duration", "1h", "--deadline", "30h", "--", "true").split()[0]
    assert a.proc is not None
    a.proc.send_signal(sig)
    assert a.proc.wait(timeout=20) == 0
    assert "stopped" in a.log()
    # the held job is still there for the next start
    a.start()
    assert a.jobs()[job_id]["state"] in ("held", "running", "succeeded")
    a.stop()


def test_sigkill_with_held_running_and_suspended_jobs(agent, tmp_path):
    """An interruptible job runs through the first clean afternoon, is suspended over the
    night and resumed the next afternoon; the agent is killed while it is suspended, with
    another job running and a third held."""
    starts_log = tmp_path / "starts.txt"
    record = f'echo "$GRIDSHIFT_JOB_ID" >> {starts_log}'
    # work that only advances while the process runs (a stopped loop makes no progress)
    work = "i=0; while [ $i -lt {n} ]; do sleep 0.1; i=$((i+1)); done"

    def submit(*args: str, body: str) -> str:
        out = agent.cli("submit", *args, "--shell", "--", f"{record}; {body}")
        return out.split()[0]

    pausable = submit(
        "--name", "pausable", "--duration", "10h", "--deadline", "40h", "--interruptible",
        body=work.format(n=100),
    )  # fmt: skip
    steady = submit("--name", "steady", "--duration", "40h", "--deadline", "41h",
                    body=work.format(n=350))  # fmt: skip

    def state(job_id: str) -> str:
        return agent.jobs()[job_id]["state"]

    def paused_for_the_night() -> bool:
        # a pause of an hour lasts a wall second here: wait for one that leaves time to act
        j = agent.jobs()[pausable]
        if j["state"] != "suspended":
            return False
        return ts(j["planned_start"]) - ts(j["updated_at"]) >= timedelta(hours=6)

    wait_for(lambda: state(pausable) == "running", timeout_s=30, what="the pausable job to run")
    wait_for(paused_for_the_night, timeout_s=40, what="a suspension over the night")
    held = submit("--name", "later", "--duration", "1h", "--deadline", "20h", body="true")
    before = agent.jobs()
    assert before[held]["state"] == "held", before[held]["reason"]
    assert before[steady]["state"] == "running"
    assert before[pausable]["state"] == "suspended"
    progress_file = tmp_path / "state" / "runs" / pausable / "stdout.log"
    assert progress_file.exists()

    agent.kill()
    agent.start()
    after = agent.jobs()
    assert set(after) == set(before), "a job was lost"
    assert after[held]["state"] == "held"
    assert after[held]["planned_start"] == before[held]["planned_start"]
    assert after[steady]["state"] == "running"
    if after[pausable]["state"] == "suspended":
        pid = int((tmp_path / "state" / "runs" / pausable / "pid").read_text())
        stat = Path(f"/proc/{pid}/stat").read_text()
        assert stat[stat.rindex(")") + 2] == "T", "recorded suspended but the process runs"

    final = wait_for(
        lambda: (
            (j := agent.jobs())
            and all(x["state"] in ("succeeded", "failed") for x in j.values())
            and j
        ),
        timeout_s=90,
        what="all jobs to finish",
    )
    starts = starts_log.read_text().split()
    assert sorted(starts) == sorted(set(starts)), f"a job started twice: {starts}"
    assert set(starts) == {pausable, steady, held}
    for job_id in (pausable, steady, held):
        assert final[job_id]["state"] == "succeeded" and final[job_id]["exit_code"] == 0
        assert ts(final[job_id]["ended_at"]) <= ts(final[job_id]["deadline"]) + timedelta(hours=1)
