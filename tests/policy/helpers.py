"""Small builders for planner tests: snapshots and traces from plain arrays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from gridshift.scheduler.models import (
    Forecast,
    ForecastPoint,
    IntensitySample,
    Job,
    JobSpec,
    JobState,
    RegionSignal,
    Snapshot,
)
from gridshift.scheduler.sim.traces import PerfectForecast, RegionTrace

T0 = datetime(2024, 6, 3, tzinfo=UTC)
HOUR = 3600.0


def signal(
    name: str,
    values: list[float] | np.ndarray,
    now: datetime = T0,
    slot_s: float = HOUR,
    fresh: bool = True,
    error_g: float | None = None,
) -> RegionSignal:
    step = timedelta(seconds=slot_s)
    pts = [
        ForecastPoint(start=now + i * step, end=now + (i + 1) * step, intensity_g_per_kwh=float(v))
        for i, v in enumerate(values)
    ]
    return RegionSignal(
        region=name,
        current=IntensitySample(
            region=name,
            start=now,
            end=now + step,
            intensity_g_per_kwh=float(values[0]),
            provider="test",
        ),
        forecast=Forecast(region=name, provider="test", issued_at=now, points=pts),
        provider="test",
        age_s=0.0,
        fresh=fresh,
        error=None if fresh else "signal is 4 h old",
        forecast_error_g_per_kwh=error_g,
    )


def job(
    job_id: str,
    duration_h: float,
    deadline_h: float,
    *,
    gpus: int = 1,
    interruptible: bool = False,
    regions: list[str] | None = None,
    state: JobState = JobState.PENDING,
    submitted: datetime = T0,
    checkpoint_cost_s: float = 0.0,
    min_run_s: float = 0.0,
    run_s: float = 0.0,
    region: str | None = None,
) -> Job:
    regions = regions or ["a"]
    spec = JobSpec(
        command=["true"],
        gpus=gpus,
        expected_duration_s=duration_h * HOUR,
        deadline=submitted + timedelta(hours=deadline_h),
        interruptible=interruptible,
        checkpoint_cost_s=checkpoint_cost_s,
        min_run_s=min_run_s,
        allowed_regions=regions,
    )
    return Job(
        id=job_id,
        spec=spec,
        state=state,
        submitted_at=submitted,
        deadline=submitted + timedelta(hours=deadline_h),
        region=region or regions[0],
        run_s=run_s,
        updated_at=submitted,
    )


def snapshot(
    jobs: list[Job],
    regions: dict[str, RegionSignal],
    now: datetime = T0,
    capacity: dict[str, int | None] | None = None,
) -> Snapshot:
    return Snapshot(
        now=now,
        jobs=jobs,
        regions=regions,
        default_region=next(iter(regions)),
        capacity_gpus=capacity or {},
    )


def traces(arrays: dict[str, np.ndarray], origin: datetime = T0, slot_s: float = HOUR):
    tr = {
        n: RegionTrace(n, origin.timestamp(), slot_s, np.asarray(v, float))
        for n, v in arrays.items()
    }
    return tr, {n: PerfectForecast(t) for n, t in tr.items()}
