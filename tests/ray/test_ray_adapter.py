"""The Ray adapter against a real local Ray (its Jobs API over HTTP): held jobs stay out of
Ray, a release starts exactly one run, exit codes and GPUs come back, a suspended job is
stopped and resumed as its next run, and what Ray does outside gridshift is recognised."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from gridshift.adapters.ray import RayAdapter
from gridshift.scheduler.clock import FakeClock
from gridshift.scheduler.config import RayAdapterConfig
from gridshift.scheduler.errors import AdapterError, Conflict, EngineUnavailable, ValidationError
from gridshift.scheduler.interfaces import Adapter, EngineState, Relocatable, Suspendable
from gridshift.scheduler.models import Job, JobSpec, new_job_id
from tests.conftest import free_port, wait_for

from .conftest import RayHead

pytestmark = [pytest.mark.ray, pytest.mark.slow]

NOW = datetime(2026, 3, 4, tzinfo=UTC)


def make_adapter(head: RayHead, tmp_path: Path, **regions: Any) -> RayAdapter:
    config = RayAdapterConfig(
        regions=regions or {"east": {"address": head.address, "capacity_gpus": 2}},
        timeout_s=10,
    )
    return RayAdapter(config, FakeClock(NOW), tmp_path / "ray")


def make_job(command: str, region: str | None = None, **kw: Any) -> Job:
    spec = JobSpec(engine="ray", command=[command], shell=True, expected_duration_s=600, **kw)
    return Job(
        id=new_job_id(),
        spec=spec,
        submitted_at=NOW,
        deadline=NOW + timedelta(hours=2),
        updated_at=NOW,
        region=region,
    )


def state_of(adapter: RayAdapter, job: Job) -> EngineState:
    return adapter.status(job).state


def test_a_held_job_stays_out_of_ray_and_one_release_starts_one_run(
    ray_head: RayHead, tmp_path: Path
) -> None:
    adapter = make_adapter(ray_head, tmp_path)
    assert isinstance(adapter, Adapter)
    assert isinstance(adapter, Suspendable) and isinstance(adapter, Relocatable)
    out = tmp_path / "out.txt"
    job = make_job(
        f'echo "$GRIDSHIFT_JOB_ID $GRIDSHIFT_RUN $GREETING $(pwd)" >> {out}',
        env={"GREETING": "hello"},
        workdir=str(tmp_path),
    )
    ref = adapter.submit(job)
    assert ref == "gridshift-" + job.id
    adapter.hold(job)
    adapter.hold(job)
    st = adapter.status(job)
    assert st.state == EngineState.HELD and st.job_id == job.id and st.region == "east"
    assert all(r["submission_id"] != ref for r in ray_head.jobs())  # Ray never saw it

    adapter.release(job)
    adapter.release(job)  # idempotent: no second run
    wait_for(lambda: state_of(adapter, job) == EngineState.SUCCEEDED, what="the job to finish")
    adapter.release(job)  # still nothing: it ran
    st = adapter.status(job)
    assert st.exit_code == 0 and st.started_at is not None and st.ended_at is not None
    assert out.read_text().split() == [job.id, "1", "hello", str(tmp_path)]
    assert [r["submission_id"] for r in ray_head.jobs() if ref in r["submission_id"]] == [ref]
    assert ray_head.job(ref)["metadata"]["gridshift_job_id"] == job.id


def test_exit_codes_and_gpus_come_from_ray(ray_head: RayHead, tmp_path: Path) -> None:
    adapter = make_adapter(ray_head, tmp_path)
    failing = make_job("exit 7")
    gpu = make_job("echo CVD=$CUDA_VISIBLE_DEVICES", gpus=1)
    too_big = make_job("echo never", gpus=4)  # the cluster has 2
    for job in (failing, gpu, too_big):
        adapter.submit(job)
        adapter.release(job)
    wait_for(lambda: state_of(adapter, failing) == EngineState.FAILED, what="the failure")
    st = adapter.status(failing)
    assert st.exit_code == 7 and "exit code 7" in st.message
    wait_for(lambda: state_of(adapter, gpu) == EngineState.SUCCEEDED, what="the GPU job")
    assert "CVD=0" in ray_head.logs("gridshift-" + gpu.id) or "CVD=1" in ray_head.logs(
        "gridshift-" + gpu.id
    )
    assert state_of(adapter, too_big) == EngineState.QUEUED  # waits for GPUs Ray lacks


def test_suspend_stops_the_run_and_resume_starts_the_next_from_its_checkpoint(
    ray_head: RayHead, tmp_path: Path
) -> None:
    adapter = make_adapter(ray_head, tmp_path)
    ckpt = tmp_path / "ckpt"
    # Counts to 40 in tenths of a second, keeping its count in a checkpoint file; each run
    # starts from the checkpoint and records its run number.
    job = make_job(
        f"n=$(cat {ckpt} 2>/dev/null || echo 0); echo run$GRIDSHIFT_RUN from $n >> {ckpt}.log; "
        f"while [ $n -lt 40 ]; do n=$((n+1)); echo $n > {ckpt}; sleep 0.1; done",
        interruptible=True,
    )
    adapter.submit(job)
    adapter.release(job)
    wait_for(lambda: ckpt.exists() and int(ckpt.read_text() or 0) >= 3, what="progress")
    adapter.suspend(job)
    adapter.suspend(job)  # idempotent
    wait_for(lambda: state_of(adapter, job) == EngineState.SUSPENDED, what="the stop")
    paused_at = int(ckpt.read_text())
    assert paused_at < 40
    adapter.resume(job)
    adapter.resume(job)  # idempotent: one second run
    wait_for(lambda: state_of(adapter, job) == EngineState.SUCCEEDED, what="the second run")
    runs = (tmp_path / "ckpt.log").read_text().splitlines()
    assert runs[0] == "run1 from 0" and runs[1].startswith("run2 from ")
    assert int(runs[1].split()[-1]) >= paused_at - 1
    assert int(ckpt.read_text()) == 40
    ids = sorted(r["submission_id"] for r in ray_head.jobs() if job.id in r["submission_id"])
    assert ids == [f"gridshift-{job.id}", f"gridshift-{job.id}-2"]
    [managed] = [m for m in adapter.list_managed() if m.job_id == job.id]
    assert managed.state == EngineState.SUCCEEDED and managed.region == "east"


def test_a_run_stopped_outside_gridshift_is_cancelled_not_suspended(
    ray_head: RayHead, tmp_path: Path
) -> None:
    adapter = make_adapter(ray_head, tmp_path)
    job = make_job("sleep 60", interruptible=True)
    adapter.submit(job)
    adapter.release(job)
    wait_for(lambda: state_of(adapter, job) == EngineState.RUNNING, what="the start")
    url = f"{ray_head.address}/api/jobs/gridshift-{job.id}/stop"
    assert requests.post(url, timeout=10).json()["stopped"] is True  # `ray job stop`
    wait_for(lambda: state_of(adapter, job) == EngineState.CANCELLED, what="the outside stop")
    with pytest.raises(AdapterError, match="not suspended by gridshift"):
        adapter.resume(job)


def test_regions_relocation_and_bad_input(ray_head: RayHead, tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{_closed_port()}"
    adapter = make_adapter(
        ray_head,
        tmp_path,
        east={"address": ray_head.address, "capacity_gpus": 2},
        west={"address": ray_head.address},
        down={"address": down},
    )
    assert adapter.regions() == {"east": 2, "west": None, "down": None}
    job = make_job("true", region="east")
    adapter.submit(job)
    adapter.relocate(job, "west")  # not released: free to move
    with pytest.raises(ValidationError, match="no Ray cluster"):
        adapter.relocate(job, "mars")
    moved = job.model_copy(update={"region": "west"})
    adapter.release(moved)
    wait_for(lambda: state_of(adapter, moved) == EngineState.SUCCEEDED, what="the moved job")
    assert adapter.status(moved).region == "west"
    with pytest.raises(Conflict, match="already released"):
        adapter.relocate(moved, "east")

    with pytest.raises(ValidationError, match="unknown Ray engine options colour"):
        adapter.submit(make_job("true", engine_options={"colour": "green"}))
    unreachable = make_job("true", region="down")
    refused = r"cannot be reached at http://127.0.0.1:\d+ \(connection refused\): .*ray start"
    with pytest.raises(EngineUnavailable, match=refused):
        adapter.status(unreachable)
    with pytest.raises(EngineUnavailable):
        adapter.release(unreachable)


def _closed_port() -> int:
    return free_port()  # bound and released: nothing listens there


def test_a_suspended_job_that_ray_lost_resumes_as_a_first_run(
    ray_head: RayHead, tmp_path: Path
) -> None:
    # A restart of the head keeps no jobs: resuming submits the job again.
    adapter = make_adapter(ray_head, tmp_path)
    out = tmp_path / "out.txt"
    job = make_job(f"echo run $GRIDSHIFT_RUN >> {out}", interruptible=True)
    adapter.submit(job)
    adapter.resume(job)
    wait_for(lambda: state_of(adapter, job) == EngineState.SUCCEEDED, what="the job")
    assert out.read_text().split() == ["run", "1"]
