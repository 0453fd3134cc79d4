"""GpuAccounting: the agent's sampling task (telemetry off once, flushing to the store)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gridshift.scheduler.clock import FakeClock
from gridshift.scheduler.errors import NotFound
from gridshift.scheduler.models import Job, JobSpec, JobState, PowerSample
from gridshift.scheduler.telemetry.accounting import GpuAccounting
from gridshift.scheduler.telemetry.nvml import NvmlUnavailable

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


class Source:
    """A PowerSource over a fake clock: one GPU at a fixed power, or no driver."""

    def __init__(self, clock: FakeClock, power_w: float = 500.0) -> None:
        self.clock = clock
        self.power_w = power_w
        self.energy_j = 0.0
        self.fail = False
        self.calls = 0

    def sample(self) -> list[PowerSample]:
        self.calls += 1
        if self.fail:
            raise NvmlUnavailable("NVML failed to initialise: Driver Not Loaded")
        at = self.clock.now()
        self.energy_j = (at - T0).total_seconds() * self.power_w
        return [
            PowerSample(index=0, uuid="GPU-0", at=at, power_w=self.power_w, energy_j=self.energy_j)
        ]


class Store:
    def __init__(self, jobs: list[Job]) -> None:
        self.jobs = {j.id: j for j in jobs}

    def get_job(self, job_id: str) -> Job:
        if job_id not in self.jobs:
            raise NotFound(job_id)
        return self.jobs[job_id]

    def update(self, job_id: str, **fields: Any) -> Job:
        self.jobs[job_id] = self.jobs[job_id].model_copy(update=fields)
        return self.jobs[job_id]


def job(gpus: list[int], **kw: Any) -> Job:
    return Job(
        id="j1",
        spec=JobSpec(command=["train"], expected_duration_s=3600, gpus=len(gpus)),
        state=JobState.RUNNING,
        submitted_at=T0,
        deadline=T0 + timedelta(hours=2),
        gpus_assigned=gpus,
        updated_at=T0,
        **kw,
    )


def run(acct: GpuAccounting, clock: FakeClock, jobs: list[Job], seconds: int) -> None:
    for _ in range(seconds):
        acct.sample(lambda: jobs, lambda region, when: 360.0, ["local"], "local")
        clock.advance(1)


def test_measured_energy_flushed_to_the_store() -> None:
    clock = FakeClock(T0)
    acct = GpuAccounting(Source(clock), CollectorRegistry(), jobs_refresh_s=0)
    j = job([0], counterfactual_g=999.0, saving_is_estimate=True)
    store = Store([j])
    run(acct, clock, [j], 11)  # 10 intervals of 1 s at 500 W
    assert acct.measures(j)
    acct.flush(store)
    got = store.get_job("j1")
    assert got.energy_j == pytest.approx(5000.0)
    assert got.emissions_g == pytest.approx(5000 / 3.6e6 * 360)
    assert got.counterfactual_g == pytest.approx(5000 / 3.6e6 * 360)  # replaces the estimate
    assert got.saving_is_estimate is False
    run(acct, clock, [j], 10)
    acct.flush(store)
    assert store.get_job("j1").energy_j == pytest.approx(10000.0)
    assert store.get_job("j1").counterfactual_g == pytest.approx(10000 / 3.6e6 * 360)


def test_job_without_gpus_is_not_measured() -> None:
    clock = FakeClock(T0)
    acct = GpuAccounting(Source(clock), CollectorRegistry(), jobs_refresh_s=0)
    j = job([])
    run(acct, clock, [j], 3)
    assert not acct.measures(j)
    acct.flush(Store([j]))


def test_telemetry_off_said_once_then_retried(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(T0)
    source = Source(clock)
    source.fail = True
    acct = GpuAccounting(source, CollectorRegistry(), retry_s=0)
    with caplog.at_level(logging.WARNING):
        run(acct, clock, [job([0])], 5)
    offs = [r for r in caplog.records if "GPU telemetry is off" in r.getMessage()]
    assert len(offs) == 1
    assert "Driver Not Loaded" in offs[0].getMessage()
    assert acct.telemetry_off is not None and not acct.active
    assert not acct.measures(job([0]))  # estimates go on
    source.fail = False
    run(acct, clock, [job([0])], 1)
    assert acct.telemetry_off is None and acct.active


def test_retry_is_spaced_out() -> None:
    clock = FakeClock(T0)
    source = Source(clock)
    source.fail = True
    acct = GpuAccounting(source, CollectorRegistry(), retry_s=3600)
    run(acct, clock, [], 20)
    assert source.calls == 1


def test_unknown_job_in_flush_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(T0)
    acct = GpuAccounting(Source(clock), CollectorRegistry(), jobs_refresh_s=0)
    j = job([0])
    run(acct, clock, [j], 3)
    with caplog.at_level(logging.WARNING):
        acct.flush(Store([]))
    assert "could not record GPU energy of job j1" in caplog.text
