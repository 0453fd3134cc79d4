"""The agent driving a real Slurm: held on plan, released by the deadline on a dirty grid,
relocated to the cleaner partition, and surviving a slurmctld restart.

The agent runs on a fake clock (March 2026, so the generated traces line up); Slurm runs
on real time. The adapter's hold mode makes that safe: only the agent releases jobs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gridshift.adapters.slurm import SlurmAdapter, SlurmCli
from gridshift.scheduler.agent import Agent
from gridshift.scheduler.clock import FakeClock
from gridshift.scheduler.config import load_settings
from gridshift.scheduler.models import JobSpec, JobState
from tests.conftest import wait_for
from tests.conftest import write_trace as shared_write_trace

from .bed import PARTITIONS, SlurmBed

pytestmark = pytest.mark.slurm

START = datetime(2026, 3, 4, 0, 0, tzinfo=UTC)
CLEAN_G = 50.0


def write_trace(path: Path, first_hours: Sequence[float], then: float) -> Path:
    """An hourly trace over two weeks from START: `first_hours`, then `then`."""
    return shared_write_trace(path, START, first_hours, then)


def make_agent(
    bed: SlurmBed,
    tmp_path: Path,
    traces: dict[str, Path],
    clock: FakeClock,
    planner: str = "carbon",
    **slurm: Any,
) -> Agent:
    settings = load_settings(
        None,
        state_dir=tmp_path / "state",
        planner=planner,
        providers={"replay": {"type": "replay"}},
        regions={
            region: {"sources": [{"provider": "replay", "location": str(path)}]}
            for region, path in traces.items()
        },
        default_region="brown",
        slurm={
            "regions": {region: {"partition": part} for region, part in PARTITIONS.items()},
            "slurm_conf": str(bed.conf),
            "timeout_s": 15,
            **slurm,
        },
    )
    agent = Agent.build(settings, clock=clock, registry=CollectorRegistry())
    assert isinstance(agent.adapters["slurm"], SlurmAdapter)
    agent.startup()
    return agent


def spec(bed: SlurmBed, **kw: Any) -> JobSpec:
    base: dict[str, Any] = {
        "name": "agent-job",
        "engine": "slurm",
        "command": ["sleep 600"],
        "shell": True,
        "workdir": str(bed.root / "jobs"),
        "gpus": 1,
        "expected_duration_s": 3600,
    }
    base.update(kw)
    return JobSpec(**base)


def squeue(bed: SlurmBed, ref: str, fmt: str) -> str:
    return bed.run("squeue", "-h", "-t", "all", "-j", ref, "-o", fmt).strip()


def step(agent: Agent, clock: FakeClock, minutes: float) -> None:
    clock.advance(timedelta(minutes=minutes))
    agent.refresh_signals()
    agent.reconcile()
    agent.tick()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.mark.parametrize("planner", ["carbon", "window"])
def test_deadline_forces_release_while_the_grid_is_still_dirty(
    bed: SlurmBed, tmp_path: Path, clock: FakeClock, agents: list[Agent], planner: str
) -> None:
    # Dirty until 03:00, clean after. The job needs 2 h and must end by 04:00, so its
    # latest start is 02:00: the cleaner the later, but it cannot wait for the clean hours.
    brown = write_trace(tmp_path / "brown.csv", [800, 800, 800], CLEAN_G)
    green = write_trace(tmp_path / "green.csv", [900, 900, 900], CLEAN_G)
    agent = make_agent(bed, tmp_path, {"brown": brown, "green": green}, clock, planner=planner)
    agents.append(agent)

    job = agent.submit(spec(bed, expected_duration_s=2 * 3600), deadline_in_s=4 * 3600)
    latest = START + timedelta(hours=2)
    assert job.latest_start == latest
    assert job.state == JobState.HELD and job.engine_ref is not None
    assert job.planned_start is not None and START < job.planned_start <= latest
    line = squeue(bed, job.engine_ref, "%r|%P|%k")
    assert line == (
        f"JobHeldUser|gpu-brown|gridshift:id={job.id};start={job.planned_start:%Y-%m-%dT%H:%M:%SZ}"
    )

    # Every tick before the release keeps it held, in Slurm too; the release comes by the
    # latest start at the latest, while the grid is still at 800 g/kWh.
    while agent.store.get_job(job.id).state == JobState.HELD:
        assert squeue(bed, job.engine_ref, "%T|%r") == "PENDING|JobHeldUser"
        assert clock.now() < latest
        step(agent, clock, 10)
    started = agent.store.get_job(job.id)
    assert started.state == JobState.RUNNING
    assert started.started_at is not None and started.started_at <= latest
    assert agent.hub.intensity_at("brown", started.started_at) == 800
    assert agent.hub.intensity_at("brown", START + timedelta(hours=3)) == CLEAN_G
    wait_for(lambda: squeue(bed, job.engine_ref, "%T") == "RUNNING", what="Slurm to run it")

    agent.reconcile()  # Slurm's view of the GPUs reaches the store (for NVML attribution)
    assert len(agent.store.get_job(job.id).gpus_assigned) == 1


def test_agent_places_a_job_in_the_cleaner_partition(
    bed: SlurmBed, tmp_path: Path, clock: FakeClock, agents: list[Agent]
) -> None:
    brown = write_trace(tmp_path / "brown.csv", [700] * 24, 600)
    green = write_trace(tmp_path / "green.csv", [300, 280, 260] + [120] * 21, 100)
    agent = make_agent(bed, tmp_path, {"brown": brown, "green": green}, clock)
    agents.append(agent)

    job = agent.submit(spec(bed, allowed_regions=["brown", "green"]), deadline_in_s=12 * 3600)
    assert job.engine_ref is not None and job.region == "green"
    assert squeue(bed, job.engine_ref, "%P") == "gpu-green"
    assert agent.adapters["slurm"].status(job).region == "green"


def test_held_jobs_survive_a_slurmctld_restart_and_start_on_plan(
    bed: SlurmBed, tmp_path: Path, clock: FakeClock, agents: list[Agent]
) -> None:
    brown = write_trace(tmp_path / "brown.csv", [800, 800, 800, 800], 100)
    green = write_trace(tmp_path / "green.csv", [800, 800, 800, 800], 100)
    agent = make_agent(bed, tmp_path, {"brown": brown, "green": green}, clock)
    agents.append(agent)
    jobs = [agent.submit(spec(bed, name=f"restart-{i}"), deadline_in_s=12 * 3600) for i in (1, 2)]
    plan = jobs[0].planned_start
    assert plan is not None and plan >= START + timedelta(hours=2)
    for job in jobs:
        assert job.state == JobState.HELD and job.planned_start == plan
    refs = [j.engine_ref for j in jobs]
    assert None not in refs

    bed.stop_daemon("slurmctld")
    try:
        # Slurm is down: ticks and reconciles go on, nothing is lost or released.
        step(agent, clock, 30)
        step(agent, clock, 30)
        for job in jobs:
            assert agent.store.get_job(job.id).state == JobState.HELD
        errors = agent.metrics.adapter_errors.labels(adapter="slurm", operation="list")
        assert errors._value.get() >= 1
    finally:
        bed.start_slurmctld()

    time.sleep(3)  # Slurm schedules again: held jobs must stay held
    step(agent, clock, 1)
    for job, ref in zip(jobs, refs, strict=True):
        assert agent.store.get_job(job.id).engine_ref == ref  # not resubmitted
        assert squeue(bed, ref, "%T|%r") == "PENDING|JobHeldUser"
    assert len(bed.run("squeue", "-h", "-o", "%i").split()) == 2

    # The planned start falls while the controller is down again: the release waits for it.
    clock.set(START + timedelta(hours=3))  # an hour before the grid turns clean
    step(agent, clock, 0)
    assert all(agent.store.get_job(j.id).state == JobState.HELD for j in jobs)
    bed.stop_daemon("slurmctld")
    try:
        # Tick through the planned start: the plan says start, but Slurm cannot be told.
        while agent.store.get_job(jobs[0].id).state == JobState.HELD:
            assert clock.now() <= plan
            step(agent, clock, 10)
        assert all(agent.store.get_job(j.id).state == JobState.RUNNING for j in jobs)
        start_errors = agent.metrics.adapter_errors.labels(adapter="slurm", operation="start")
        assert start_errors._value.get() == 2
    finally:
        bed.start_slurmctld()
    for ref in refs:  # nothing was released behind the agent's back, nothing lost
        assert squeue(bed, ref, "%T|%r") == "PENDING|JobHeldUser"
    # The adapter stops asking a controller that failed for a moment (no pile-up of
    # timeouts); the next reconcile after that carries the recorded start out.
    time.sleep(SlurmCli.unavailable_retry_s)
    step(agent, clock, 1)
    for ref in refs:
        wait_for(lambda r=ref: squeue(bed, r, "%T") == "RUNNING", what=f"slurm job {ref} to run")
    for job in jobs:
        assert agent.store.get_job(job.id).state == JobState.RUNNING


def test_native_job_is_adopted_planned_and_released_by_the_agent(
    bed: SlurmBed, tmp_path: Path, clock: FakeClock, agents: list[Agent]
) -> None:
    brown = write_trace(tmp_path / "brown.csv", [800, 800], 100)
    green = write_trace(tmp_path / "green.csv", [800, 800], 100)
    agent = make_agent(bed, tmp_path, {"brown": brown, "green": green}, clock)
    agents.append(agent)
    ref = bed.run(
        "sbatch", "--parsable", "--chdir", str(bed.root / "jobs"), "-p", "gpu-brown",
        "--gres=gpu:1", "-t", "60", "-J", "native", "--comment", "gridshift:deadline=12h",
        "--wrap", "sleep 600",
    ).strip()  # fmt: skip

    agent.reconcile()
    adopted = agent.store.find_by_engine_ref("slurm", ref)
    assert adopted is not None and adopted.spec.engine_options["native"] is True
    agent.tick()
    job = agent.store.get_job(adopted.id)
    assert job.state == JobState.HELD and job.planned_start is not None
    assert START + timedelta(hours=1) <= job.planned_start <= job.latest_start
    assert squeue(bed, ref, "%r|%k") == (
        f"JobHeldUser|gridshift:deadline=12h;id={job.id};"
        f"start={job.planned_start:%Y-%m-%dT%H:%M:%SZ}"
    )
    agent.reconcile()  # the tagged job maps to the same gridshift job: no second adoption
    assert [j.id for j in agent.store.list_jobs() if j.engine_ref == ref] == [job.id]

    while agent.store.get_job(job.id).state == JobState.HELD:
        assert squeue(bed, ref, "%T|%r") == "PENDING|JobHeldUser"
        assert clock.now() <= job.planned_start
        step(agent, clock, 10)
    assert agent.store.get_job(job.id).state == JobState.RUNNING
    wait_for(lambda: squeue(bed, ref, "%T") == "RUNNING", what="the adopted job to run")
