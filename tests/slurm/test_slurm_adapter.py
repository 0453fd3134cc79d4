"""The Slurm adapter against a real Slurm (slurmctld + slurmd + munged started by conftest)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

import pytest

from gridshift.adapters.slurm import SlurmAdapter
from gridshift.scheduler.clock import FakeClock
from gridshift.scheduler.errors import Conflict, EngineUnavailable, ValidationError
from gridshift.scheduler.interfaces import Adapter, EngineState, Relocatable, Suspendable
from gridshift.scheduler.models import Job, JobSpec
from tests.conftest import wait_for

from .bed import SlurmBed
from .conftest import slurm_config

pytestmark = pytest.mark.slurm


def squeue(bed: SlurmBed, ref: str, fmt: str) -> str:
    return bed.run("squeue", "-h", "-t", "all", "-j", ref, "-o", fmt).strip()


def state_of(adapter: SlurmAdapter, job: Job) -> EngineState:
    return adapter.status(job).state


def test_adapter_implements_the_interfaces(adapter: SlurmAdapter) -> None:
    assert isinstance(adapter, Adapter)
    assert isinstance(adapter, Suspendable)
    assert isinstance(adapter, Relocatable)


def test_submit_held_shows_plan_in_squeue_and_release_runs_it(
    bed: SlurmBed, adapter: SlurmAdapter, make_job: Callable[..., Job], clock: FakeClock
) -> None:
    job = make_job(command="echo gpu=$CUDA_VISIBLE_DEVICES; sleep 300", gpus=2)
    ref = adapter.submit(job)
    job.engine_ref = ref

    # Held in Slurm, and the plan is visible to Slurm users.
    line = squeue(bed, ref, "%T|%r|%P|%k")
    state, reason, partition, comment = line.split("|", 3)
    assert (state, reason, partition) == ("PENDING", "JobHeldUser", "gpu-brown")
    assert f"id={job.id}" in comment
    assert f"start={(clock.now() + timedelta(hours=1)):%Y-%m-%dT%H:%M:%SZ}" in comment

    # Idempotent: a second submit (e.g. after an agent crash) finds the same Slurm job.
    assert adapter.submit(job.model_copy(update={"engine_ref": None})) == ref
    assert len(bed.run("squeue", "-h", "-n", job.spec.name, "-o", "%i").split()) == 1
    adapter.hold(job)  # already held: nothing changes
    assert squeue(bed, ref, "%r") == "JobHeldUser"

    # Still held a while later: nothing but gridshift releases it.
    time.sleep(3)
    status = adapter.status(job)
    assert status.state is EngineState.HELD and status.region == "brown"

    clock.advance(3600)
    adapter.release(job)
    adapter.release(job)  # idempotent
    status = wait_for(
        lambda: (s := adapter.status(job)).state is EngineState.RUNNING and s,
        what="the released job to run",
    )
    assert len(status.gpus) == 2  # the GPUs Slurm gave it, for NVML attribution
    assert status.started_at is not None
    assert "start=now" in squeue(bed, ref, "%k")
    out = bed.root / "jobs" / f"slurm-{ref}.out"
    wait_for(lambda: out.exists() and "gpu=" in out.read_text(), what="job output")
    assert out.read_text().strip() == "gpu=" + ",".join(str(i) for i in status.gpus)

    managed = {s.job_id: s for s in adapter.list_managed()}
    assert managed[job.id].ref == ref and managed[job.id].state is EngineState.RUNNING
    adapter.release(job)  # still a no-op once running


def test_begin_mode_keeps_a_fail_safe_start_in_slurm(
    bed: SlurmBed, clock: FakeClock, make_job: Callable[..., Job]
) -> None:
    adapter = SlurmAdapter(slurm_config(bed, start_mode="begin"), clock)
    job = make_job(planned_in_s=None, deadline_s=6 * 3600, duration_s=3600)
    job.engine_ref = adapter.submit(job)
    begin = squeue(bed, job.engine_ref, "%S")
    wait_for(lambda: squeue(bed, job.engine_ref, "%r") == "BeginTime", what="BeginTime")
    # Without a plan, Slurm's begin time is the job's latest start: 5 h from now.
    begin_s = _epoch(begin) - time.time()
    assert 5 * 3600 - 120 < begin_s < 5 * 3600 + 120

    job.planned_start = clock.now() + timedelta(hours=2)
    adapter.hold(job)
    begin_s = _epoch(squeue(bed, job.engine_ref, "%S")) - time.time()
    assert 2 * 3600 - 120 < begin_s < 2 * 3600 + 120
    assert adapter.status(job).state is EngineState.HELD

    adapter.release(job)
    wait_for(lambda: state_of(adapter, job) is EngineState.RUNNING, what="begin-mode release")


def _epoch(text: str) -> float:
    from datetime import UTC, datetime

    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()


def test_native_job_that_opts_in_is_claimed_and_adopted(
    bed: SlurmBed, adapter: SlurmAdapter, clock: FakeClock
) -> None:
    jobs_dir = str(bed.root / "jobs")
    ref = bed.run(
        "sbatch", "--parsable", "--chdir", jobs_dir, "-p", "gpu-green", "--gres=gpu:1",
        "-t", "30", "-J", "native-train", "--comment", "gridshift:deadline=8h;interruptible=yes",
        "--wrap", "sleep 300",
    ).strip()  # fmt: skip
    plain = bed.run(
        "sbatch", "--parsable", "--chdir", jobs_dir, "-p", "gpu-green", "--wrap", "sleep 300"
    ).strip()

    found = [s for s in adapter.list_managed() if s.ref == ref]
    assert len(found) == 1
    status = found[0]
    assert status.job_id is None and status.adopt_spec is not None
    assert status.region == "green"
    spec = JobSpec(**status.adopt_spec)
    assert spec.engine == "slurm" and spec.gpus == 1 and spec.interruptible
    assert spec.expected_duration_s == 1800
    assert spec.max_delay_s is not None and 8 * 3600 - 1800 - 120 < spec.max_delay_s <= 7.5 * 3600
    assert spec.allowed_regions == ["green"]
    assert not [s for s in adapter.list_managed() if s.ref == plain]  # did not opt in

    # Claimed: it does not start on its own before the agent has planned it.
    time.sleep(3)
    assert squeue(bed, ref, "%T|%r") == "PENDING|JobHeldUser"
    wait_for(lambda: squeue(bed, plain, "%T") == "RUNNING", what="the plain job to run")

    # The agent adopts it: a Job with engine_ref; the first hold tags gridshift's id.
    now = clock.now()
    job = Job(
        id="j-adopted1",
        spec=spec,
        submitted_at=now,
        deadline=spec.resolve_deadline(now, 86400),
        engine_ref=ref,
        region=status.region,
        planned_start=now + timedelta(hours=1),
        updated_at=now,
    )
    adapter.hold(job)
    comment = squeue(bed, ref, "%k")
    assert comment.startswith("gridshift:deadline=8h;interruptible=yes;id=j-adopted1;start=")
    (mapped,) = [s for s in adapter.list_managed() if s.ref == ref]
    assert mapped.job_id == "j-adopted1" and mapped.adopt_spec is None

    adapter.release(job)
    wait_for(lambda: state_of(adapter, job) is EngineState.RUNNING, what="adopted job to run")


def test_native_job_with_bad_marker_is_left_alone(bed: SlurmBed, adapter: SlurmAdapter) -> None:
    ref = bed.run(
        "sbatch", "--parsable", "--chdir", str(bed.root / "jobs"), "-p", "gpu-green",
        "--comment", "gridshift:deadline=soon", "--wrap", "sleep 300",
    ).strip()  # fmt: skip
    assert not [s for s in adapter.list_managed() if s.ref == ref]
    wait_for(lambda: squeue(bed, ref, "%T") == "RUNNING", what="the unmanaged job to run")


def test_opt_in_partition_adopts_without_a_comment(bed: SlurmBed, clock: FakeClock) -> None:
    adapter = SlurmAdapter(slurm_config(bed, opt_in_partitions=["gpu-brown"]), clock)
    ref = bed.run(
        "sbatch", "--parsable", "--chdir", str(bed.root / "jobs"), "-p", "gpu-brown",
        "-t", "20", "--wrap", "sleep 300",
    ).strip()  # fmt: skip
    (status,) = [s for s in adapter.list_managed() if s.ref == ref]
    assert status.adopt_spec is not None and status.adopt_spec["expected_duration_s"] == 1200
    assert squeue(bed, ref, "%r") == "JobHeldUser"


def test_suspend_and_resume_stop_and_continue_the_processes(
    bed: SlurmBed, adapter: SlurmAdapter, make_job: Callable[..., Job]
) -> None:
    job = make_job(
        command="i=0; while true; do i=$((i+1)); echo $i; sleep 0.2; done", interruptible=True
    )
    job.engine_ref = adapter.submit(job)
    adapter.release(job)
    wait_for(lambda: state_of(adapter, job) is EngineState.RUNNING, what="running")
    out = bed.root / "jobs" / f"slurm-{job.engine_ref}.out"
    wait_for(lambda: out.exists() and len(out.read_text().split()) > 2, what="output")

    adapter.suspend(job)
    adapter.suspend(job)  # idempotent
    status = adapter.status(job)
    assert status.state is EngineState.SUSPENDED
    assert len(status.gpus) == 1  # a suspended job keeps its GPUs in Slurm
    time.sleep(0.5)
    lines = len(out.read_text().split())
    time.sleep(1.5)
    assert len(out.read_text().split()) == lines, "a suspended job must not make progress"

    adapter.resume(job)
    adapter.resume(job)  # idempotent
    assert state_of(adapter, job) is EngineState.RUNNING
    wait_for(lambda: len(out.read_text().split()) > lines + 2, what="progress after resume")


def test_suspend_refuses_a_job_that_is_not_interruptible(
    adapter: SlurmAdapter, make_job: Callable[..., Job]
) -> None:
    job = make_job()
    job.engine_ref = adapter.submit(job)
    adapter.release(job)
    wait_for(lambda: state_of(adapter, job) is EngineState.RUNNING, what="running")
    with pytest.raises(ValidationError, match="not interruptible"):
        adapter.suspend(job)
    assert state_of(adapter, job) is EngineState.RUNNING


def test_requeue_mode_pauses_by_requeue_held(
    bed: SlurmBed, adapter: SlurmAdapter, make_job: Callable[..., Job]
) -> None:
    job = make_job(interruptible=True, engine_options={"interrupt": "requeue"})
    job.engine_ref = adapter.submit(job)
    adapter.release(job)
    wait_for(lambda: state_of(adapter, job) is EngineState.RUNNING, what="running")

    adapter.suspend(job)
    wait_for(lambda: squeue(bed, job.engine_ref, "%T") == "PENDING", what="requeued")
    assert state_of(adapter, job) is EngineState.SUSPENDED
    assert "paused=requeue" in squeue(bed, job.engine_ref, "%k")
    adapter.suspend(job)  # idempotent

    adapter.release(job)  # releasing a paused job resumes it
    adapter.resume(job)  # idempotent
    wait_for(lambda: state_of(adapter, job) is EngineState.RUNNING, what="running again")
    assert squeue(bed, job.engine_ref, "%k").endswith("start=now")


def test_relocate_moves_a_waiting_job_to_the_cleaner_partition(
    bed: SlurmBed,
    adapter: SlurmAdapter,
    make_job: Callable[..., Job],
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert adapter.regions() == {"green": 4, "brown": 4}
    job = make_job(region="brown")
    job.engine_ref = adapter.submit(job)
    assert adapter.status(job).region == "brown"

    job.reason = "green is 300 g/kWh cleaner over the run"
    with caplog.at_level("INFO", logger="gridshift.adapters.slurm"):
        adapter.relocate(job, "green")
        adapter.relocate(job, "green")  # idempotent: done once, logged once
    logged = [r.getMessage() for r in caplog.records if "relocated" in r.getMessage()]
    assert logged == [
        f"slurm: relocated job {job.id} (slurm {job.engine_ref}) [gpu-brown -> gpu-green "
        "(green)]: green is 300 g/kWh cleaner over the run"
    ]
    assert squeue(bed, job.engine_ref, "%P|%r") == "gpu-green|JobHeldUser"  # still held
    assert adapter.status(job).region == "green"
    with pytest.raises(ValidationError, match="no Slurm partition"):
        adapter.relocate(job, "mars")

    adapter.release(job)
    wait_for(lambda: state_of(adapter, job) is EngineState.RUNNING, what="running")
    with pytest.raises(Conflict, match="not started"):
        adapter.relocate(job, "brown")
    assert adapter.status(job).region == "green"


def test_an_administrators_hold_is_left_alone(
    bed: SlurmBed, adapter: SlurmAdapter, make_job: Callable[..., Job]
) -> None:
    job = make_job()
    job.engine_ref = adapter.submit(job)
    bed.run("scontrol", "hold", job.engine_ref)  # as root: an admin hold
    assert squeue(bed, job.engine_ref, "%r") == "JobHeldAdmin"
    adapter.release(job)
    time.sleep(2.5)
    assert squeue(bed, job.engine_ref, "%T|%r") == "PENDING|JobHeldAdmin"
    bed.run("scontrol", "release", job.engine_ref)
    adapter.release(job)
    wait_for(lambda: state_of(adapter, job) is EngineState.RUNNING, what="running")


def test_cancel_and_exit_codes(
    bed: SlurmBed, adapter: SlurmAdapter, make_job: Callable[..., Job]
) -> None:
    held = make_job()
    held.engine_ref = adapter.submit(held)
    adapter.cancel(held)
    adapter.cancel(held)  # idempotent
    assert state_of(adapter, held) is EngineState.CANCELLED

    failing = make_job(command="exit 3", gpus=0)
    failing.engine_ref = adapter.submit(failing)
    adapter.release(failing)
    status = wait_for(
        lambda: (s := adapter.status(failing)).state is EngineState.FAILED and s, what="failed"
    )
    assert status.exit_code == 3 and status.ended_at is not None

    fine = make_job(command="true", gpus=0)
    fine.engine_ref = adapter.submit(fine)
    adapter.release(fine)
    status = wait_for(
        lambda: (s := adapter.status(fine)).state is EngineState.SUCCEEDED and s, what="ok"
    )
    assert status.exit_code == 0

    gone = make_job()
    gone.engine_ref = "999999"
    gone.id = "j-never-submitted"
    assert adapter.status(gone).state is EngineState.MISSING


def test_text_output_reads_the_same_as_json(
    bed: SlurmBed, clock: FakeClock, adapter: SlurmAdapter, make_job: Callable[..., Job]
) -> None:
    text = SlurmAdapter(slurm_config(bed, output="text"), clock)
    running = make_job(gpus=2)
    running.engine_ref = adapter.submit(running)
    adapter.release(running)
    wait_for(lambda: state_of(adapter, running) is EngineState.RUNNING, what="running")
    waiting = make_job()
    waiting.engine_ref = adapter.submit(waiting)

    for job in (running, waiting):
        a, b = adapter.status(job), text.status(job)
        assert (a.state, a.gpus, a.region) == (b.state, b.gpus, b.region)
        assert a.started_at == b.started_at
    assert len(text.status(running).gpus) == 2


def test_controller_restart_while_jobs_are_held_loses_nothing(
    bed: SlurmBed, adapter: SlurmAdapter, make_job: Callable[..., Job]
) -> None:
    jobs = [make_job(), make_job(region="green")]
    for job in jobs:
        job.engine_ref = adapter.submit(job)

    bed.stop_daemon("slurmctld")
    try:
        for job in jobs:
            with pytest.raises(EngineUnavailable, match="retried"):
                adapter.status(job)
        with pytest.raises(EngineUnavailable):
            adapter.release(jobs[0])
        with pytest.raises(EngineUnavailable):
            adapter.list_managed()
    finally:
        bed.start_slurmctld()

    time.sleep(3)  # a scheduling pass or more after the restart
    for job in jobs:
        status = adapter.status(job)
        assert status.state is EngineState.HELD, status
        assert squeue(bed, job.engine_ref, "%r") == "JobHeldUser"
    assert {s.job_id for s in adapter.list_managed()} >= {j.id for j in jobs}
    adapter.release(jobs[0])
    wait_for(lambda: state_of(adapter, jobs[0]) is EngineState.RUNNING, what="release after")
    assert state_of(adapter, jobs[1]) is EngineState.HELD


def test_environment_reaches_the_job_quoted(
    bed: SlurmBed, adapter: SlurmAdapter, make_job: Callable[..., Job]
) -> None:
    env = {"GREETING": "it's; $HOME", "OTHER": "b"}
    job = make_job(command='echo "[$GREETING] [$OTHER] $(pwd)"', gpus=0, env=env)
    job.engine_ref = adapter.submit(job)
    adapter.release(job)
    out = bed.root / "jobs" / f"slurm-{job.engine_ref}.out"
    wait_for(lambda: out.exists() and out.read_text().strip(), what="job output")
    assert out.read_text().strip() == f"[it's; $HOME] [b] {bed.root / 'jobs'}"


def test_begin_mode_claims_a_native_job_with_its_latest_start(
    bed: SlurmBed, clock: FakeClock
) -> None:
    adapter = SlurmAdapter(slurm_config(bed, start_mode="begin"), clock)
    ref = bed.run(
        "sbatch", "--parsable", "--chdir", str(bed.root / "jobs"), "-p", "gpu-green",
        "-t", "60", "--comment", "gridshift:deadline=8h", "--wrap", "sleep 300",
    ).strip()  # fmt: skip
    (status,) = [s for s in adapter.list_managed() if s.ref == ref]
    assert status.adopt_spec is not None
    # Not held: Slurm itself will start it at its latest start (8 h - 1 h) if nobody does.
    wait_for(lambda: squeue(bed, ref, "%r") == "BeginTime", what="BeginTime")
    begin_s = _epoch(squeue(bed, ref, "%S")) - time.time()
    assert 7 * 3600 - 120 < begin_s <= 7 * 3600 + 5
