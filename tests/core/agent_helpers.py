"""Build an in-process agent on a fake clock, for tests."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from gridshift.scheduler.agent import Agent
from gridshift.scheduler.clock import FakeClock
from gridshift.scheduler.config import load_settings
from gridshift.scheduler.models import Job, JobState

# A Wednesday in March; the bundled trace maps onto it by whole weeks.
START = datetime(2026, 3, 4, 0, 0, tzinfo=UTC)


def make_agent(state_dir: Path, clock: FakeClock | None = None, **overrides: Any) -> Agent:
    settings = load_settings(None, state_dir=state_dir, **overrides)
    return Agent.build(settings, clock=clock or FakeClock(START), registry=CollectorRegistry())


def wait_until(fn, timeout_s: float = 10.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def reconcile_until(agent: Agent, job_id: str, state: JobState) -> Job:
    """Reconcile until the job reaches `state` (its process ends in real time); the job."""

    def reached() -> bool:
        agent.reconcile()
        return agent.store.get_job(job_id).state == state

    wait_until(reached)
    return agent.store.get_job(job_id)
