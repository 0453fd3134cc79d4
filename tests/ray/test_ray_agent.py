"""The agent driving a real local Ray: a deferrable job stays out of Ray until its clean
window, an interruptible one is placed in the cleaner region, paused over the dirty hours
(its run stopped) and resumed after them (its next run), and every outcome is recorded.

The agent runs on a fake clock; Ray runs on real time, and nothing starts in Ray unless the
agent submits it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gridshift.adapters.ray import RayAdapter
from gridshift.scheduler.agent import Agent
from gridshift.scheduler.clock import FakeClock
from gridshift.scheduler.config import load_settings
from gridshift.scheduler.models import JobSpec, JobState
from tests.conftest import wait_for, write_trace

from .conftest import RayHead

pytestmark = [pytest.mark.ray, pytest.mark.slow]

START = datetime(2026, 3, 4, 0, 0, tzinfo=UTC)


def make_agent(head: RayHead, tmp_path: Path, traces: dict[str, Path], clock: FakeClock) -> Agent:
    settings = load_settings(
        None,
        state_dir=tmp_path / "state",
        providers={"replay": {"type": "replay"}},
        regions={
            region: {"sources": [{"provider": "replay", "location": str(path)}]}
            for region, path in traces.items()
        },
        default_region="brown",
        ray={"regions": {region: {"address": head.address} for region in traces}},
    )
    agent = Agent.build(settings, clock=clock, registry=CollectorRegistry())
    assert isinstance(agent.adapters["ray"], RayAdapter)
    agent.startup()
    return agent


def step(agent: Agent, clock: FakeClock, minutes: float) -> None:
    clock.advance(timedelta(minutes=minutes))
    agent.refresh_signals()
    agent.reconcile()
    agent.tick()


def spec(command: str, **kw: Any) -> JobSpec:
    return JobSpec(engine="ray", command=[command], shell=True, **kw)


def test_held_until_clean_then_paused_over_dirty_hours_and_resumed(
    ray_head: RayHead, tmp_path: Path, agents: list[Agent]
) -> None:
    clock = FakeClock(START)
    # brown is dirty throughout; green is clean from 01:00 to 03:00 and from 06:00 to 08:00
    brown = write_trace(tmp_path / "brown.csv", START, [700] * 24, 700)
    green_hours = [900, 100, 100, 900, 900, 900, 100, 100]
    green = write_trace(tmp_path / "green.csv", START, green_hours, 900)
    agent = make_agent(ray_head, tmp_path, {"brown": brown, "green": green}, clock)
    agents.append(agent)
    runs_log = tmp_path / "runs.log"

    job = agent.submit(
        spec(
            f"echo run $GRIDSHIFT_RUN >> {runs_log}; sleep 300",
            expected_duration_s=4 * 3600,
            interruptible=True,
            allowed_regions=["brown", "green"],
        ),
        deadline_in_s=8 * 3600,  # four hours of work in eight: both clean stretches
    )
    ref = f"gridshift-{job.id}"
    assert job.state == JobState.HELD and job.region == "green"
    assert job.planned_start == START + timedelta(hours=1)
    assert all(r["submission_id"] != ref for r in ray_head.jobs())  # held: not in Ray

    step(agent, clock, 60)  # 01:00, the clean hours begin
    assert agent.store.get_job(job.id).state == JobState.RUNNING
    wait_for(lambda: ray_head.job(ref)["status"] == "RUNNING", what="Ray to run it")
    agent.reconcile()
    assert agent.store.get_job(job.id).state == JobState.RUNNING

    step(agent, clock, 120)  # 03:00, dirty again: paused
    assert agent.store.get_job(job.id).state == JobState.SUSPENDED
    wait_for(lambda: ray_head.job(ref)["status"] == "STOPPED", what="Ray to stop the run")
    step(agent, clock, 60)  # reconcile sees the stopped run as the suspension, not an end
    assert agent.store.get_job(job.id).state == JobState.SUSPENDED

    while clock.now() < START + timedelta(hours=6):
        step(agent, clock, 30)
    resumed = agent.store.get_job(job.id)
    assert resumed.state == JobState.RUNNING
    wait_for(lambda: ray_head.job(ref + "-2")["status"] == "RUNNING", what="the second run")
    wait_for(lambda: runs_log.read_text().split() == ["run", "1", "run", "2"], what="run 2")

    agent.cancel(job.id)
    wait_for(lambda: ray_head.job(ref + "-2")["status"] == "STOPPED", what="the cancel")
    step(agent, clock, 1)
    assert agent.store.get_job(job.id).state == JobState.CANCELLED


def test_outcomes_and_exit_codes_are_recorded(
    ray_head: RayHead, tmp_path: Path, agents: list[Agent]
) -> None:
    clock = FakeClock(START)
    flat = write_trace(tmp_path / "flat.csv", START, [300] * 24, 300)
    agent = make_agent(ray_head, tmp_path, {"brown": flat}, clock)
    agents.append(agent)
    ok = agent.submit(spec("echo fine", expected_duration_s=600), deadline_in_s=1800)
    bad = agent.submit(spec("exit 3", expected_duration_s=600), deadline_in_s=1800)
    for job in (ok, bad):
        assert job.state == JobState.RUNNING  # nothing to wait for on a flat grid

    def ended() -> bool:
        agent.reconcile()
        return all(agent.store.get_job(j.id).state.terminal for j in (ok, bad))

    wait_for(ended, what="both jobs to end")
    assert agent.store.get_job(ok.id).state == JobState.SUCCEEDED
    failed = agent.store.get_job(bad.id)
    assert failed.state == JobState.FAILED and failed.exit_code == 3
