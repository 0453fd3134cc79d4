import json
import os
import time
from datetime import UTC, datetime

import pytest

from gridshift.adapters.local import LocalAdapter, _proc_state
from gridshift.scheduler.clock import FakeClock
from gridshift.scheduler.interfaces import Adapter, EngineState, Suspendable
from gridshift.scheduler.models import Job, JobSpec

NOW = datetime(2024, 1, 1, tzinfo=UTC)


def make_job(job_id, command, *, shell=True, gpus=0, **kw):
    spec = JobSpec(
        command=[command] if shell else command,
        shell=shell,
        expected_duration_s=60,
        gpus=gpus,
        **kw,
    )
    return Job(id=job_id, spec=spec, submitted_at=NOW, deadline=NOW, updated_at=NOW)


def wait_for(fn, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.fixture
def adapter(tmp_path):
    return LocalAdapter(tmp_path / "runs", FakeClock(), gpus=4, kill_grace_s=1)


def test_implements_the_interfaces(adapter):
    assert isinstance(adapter, Adapter)
    assert isinstance(adapter, Suspendable)


def test_runs_records_exit_code_and_output(adapter, tmp_path):
    job = make_job("j-a", "echo out; echo err >&2; echo $CUDA_VISIBLE_DEVICES; exit 3", gpus=2)
    assert adapter.status(job).state == EngineState.HELD
    adapter.release(job)
    st = wait_for(lambda: (s := adapter.status(job)).state == EngineState.FAILED and s)
    assert st.exit_code == 3
    assert st.gpus == [0, 1]
    run_dir = tmp_path / "runs" / "j-a"
    assert (run_dir / "stdout.log").read_text() == "out\n0,1\n"
    assert (run_dir / "stderr.log").read_text() == "err\n"


def test_release_twice_starts_once(adapter, tmp_path):
    marker = tmp_path / "count"
    job = make_job("j-b", f"echo x >> {marker}")
    adapter.release(job)
    adapter.release(job)
    wait_for(lambda: adapter.status(job).state == EngineState.SUCCEEDED)
    adapter.release(job)
    time.sleep(0.2)
    assert marker.read_text() == "x\n"


def test_gpus_are_not_shared_between_running_jobs(adapter):
    a = make_job("j-c", "sleep 5", gpus=2)
    b = make_job("j-d", "sleep 5", gpus=2)
    adapter.release(a)
    wait_for(lambda: adapter.status(a).state == EngineState.RUNNING)
    adapter.release(b)
    assert set(adapter.status(a).gpus).isdisjoint(adapter.status(b).gpus)
    adapter.cancel(a)
    adapter.cancel(b)
    wait_for(lambda: adapter.status(b).state == EngineState.CANCELLED)


def test_suspend_resume_and_cancel(adapter, tmp_path):
    ticks = tmp_path / "ticks"
    job = make_job("j-e", f"while true; do echo t >> {ticks}; sleep 0.05; done")
    adapter.release(job)
    wait_for(lambda: ticks.exists())
    adapter.suspend(job)
    adapter.suspend(job)  # idempotent
    wait_for(lambda: adapter.status(job).state == EngineState.SUSPENDED)
    size = ticks.stat().st_size
    time.sleep(0.3)
    assert ticks.stat().st_size == size  # really stopped
    adapter.resume(job)
    wait_for(lambda: ticks.stat().st_size > size)
    assert adapter.status(job).state == EngineState.RUNNING
    adapter.cancel(job)
    st = wait_for(lambda: (s := adapter.status(job)).state == EngineState.CANCELLED and s)
    assert st.exit_code == 128 + 15
    adapter.cancel(job)  # idempotent


def test_cancel_of_a_stubborn_job_escalates_to_sigkill(adapter, tmp_path):
    job = make_job("j-f", "trap '' TERM; while true; do sleep 0.05; done")
    adapter.release(job)
    pgid = wait_for(
        lambda: (
            (tmp_path / "runs" / "j-f" / "pid").exists()
            and int((tmp_path / "runs" / "j-f" / "pid").read_text())
        )
    )
    wait_for(lambda: (tmp_path / "runs" / "j-f" / "child_pid").exists())
    adapter.cancel(job)
    wait_for(lambda: adapter.status(job).state == EngineState.CANCELLED, timeout_s=5)
    wait_for(lambda: _proc_state(pgid) in (None, "Z"), timeout_s=5)


def test_cancel_before_start_prevents_start(adapter):
    job = make_job("j-g", "echo never")
    adapter.cancel(job)
    adapter.release(job)
    assert adapter.status(job).state == EngineState.CANCELLED


def test_a_missing_command_fails_clearly(adapter, tmp_path):
    job = make_job("j-h", ["/no/such/binary"], shell=False)
    adapter.release(job)
    st = wait_for(lambda: (s := adapter.status(job)).state == EngineState.FAILED and s)
    assert st.exit_code == 127
    assert "cannot start" in (tmp_path / "runs" / "j-h" / "stderr.log").read_text()


def test_status_survives_a_new_adapter_instance(adapter, tmp_path):
    job = make_job("j-i", "sleep 0.3; exit 0")
    adapter.release(job)
    fresh = LocalAdapter(tmp_path / "runs", FakeClock(), gpus=4)
    assert fresh.status(job).state == EngineState.RUNNING
    wait_for(lambda: fresh.status(job).state == EngineState.SUCCEEDED)
    launch = json.loads((tmp_path / "runs" / "j-i" / "launch.json").read_text())
    assert launch["env"]["GRIDSHIFT_JOB_ID"] == "j-i"
    assert os.path.exists(tmp_path / "runs" / "j-i" / "exit.json")
