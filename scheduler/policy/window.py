"""The first planner: start each job in the window of its expected duration with the lowest
mean forecast intensity that still ends by its deadline.

Rules, in order, for each job that has not started:
1. No fresh signal for its region: start now (fail open; no carbon preference).
2. Its latest start (deadline minus remaining duration) falls before the next tick: start now.
3. Otherwise compare every window start from now to the latest start (each forecast step
   boundary, and the latest start itself); start now if "now" is the best, else hold until
   the best start.
Running and suspended jobs are left alone (this planner does not suspend).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..models import Action, Decision, Forecast, Job, JobSpec, JobState, Snapshot

DEFAULT_GPU_POWER_W = 300.0
DEFAULT_HOST_POWER_W = 100.0


def spec_power_w(spec: JobSpec) -> float:
    """The power assumed for a job's estimate: its own figure, else a default per GPU."""
    if spec.expected_power_w is not None:
        return spec.expected_power_w
    return DEFAULT_GPU_POWER_W * spec.gpus if spec.gpus else DEFAULT_HOST_POWER_W


def expected_power_w(job: Job) -> float:
    return spec_power_w(job.spec)


class StepSeries:
    """A piecewise-constant intensity series with O(log n) window means."""

    def __init__(self, forecast: Forecast) -> None:
        self.starts = [p.start.timestamp() for p in forecast.points]
        self.ends = [p.end.timestamp() for p in forecast.points]
        self.values = [p.intensity_g_per_kwh for p in forecast.points]
        # cumulative integral (g/kWh x s) at each point's start, gaps contribute nothing
        self.cum = [0.0]
        for s, e, v in zip(self.starts, self.ends, self.values, strict=True):
            self.cum.append(self.cum[-1] + (e - s) * v)

    @property
    def start_s(self) -> float:
        return self.starts[0]

    @property
    def end_s(self) -> float:
        return self.ends[-1]

    def _integral_to(self, t: float) -> float:
        i = bisect.bisect_right(self.starts, t) - 1
        if i < 0:
            return 0.0
        inside = min(t, self.ends[i]) - self.starts[i]
        return self.cum[i] + max(0.0, inside) * self.values[i]

    def mean(self, t0: float, t1: float) -> float | None:
        """Mean intensity over [t0, t1], or None if the series does not cover it."""
        if t1 <= t0 or t0 < self.start_s or t1 > self.end_s:
            return None
        return (self._integral_to(t1) - self._integral_to(t0)) / (t1 - t0)

    def boundaries(self, t0: float, t1: float) -> list[float]:
        i = bisect.bisect_right(self.starts, t0)
        j = bisect.bisect_right(self.starts, t1)
        return self.starts[i:j]


@dataclass
class WindowPlanner:
    lookahead_s: float = 0.0  # how long until the next tick, in clock seconds
    min_saving_fraction: float = 0.01  # hold only for a window at least this much cleaner

    def plan(self, snapshot: Snapshot) -> list[Decision]:
        decisions: list[Decision] = []
        series_cache: dict[str, StepSeries | None] = {}
        for job in snapshot.jobs:
            if job.state not in (JobState.PENDING, JobState.HELD):
                continue
            region = job.region or (
                job.spec.allowed_regions[0] if job.spec.allowed_regions else snapshot.default_region
            )
            decisions.append(self._plan_job(job, region, snapshot, series_cache))
        return decisions

    def _plan_job(
        self,
        job: Job,
        region: str,
        snapshot: Snapshot,
        cache: dict[str, StepSeries | None],
    ) -> Decision:
        now = snapshot.now
        latest = job.latest_start
        duration_s = job.remaining_s
        base = {"job_id": job.id, "region": region, "at": now}
        signal = snapshot.regions.get(region)
        if signal is None or not signal.fresh or signal.forecast is None:
            why = signal.error if signal and signal.error else "no fresh carbon signal"
            return Decision(
                action=Action.START,
                reason=f"{why} for {region}: running now (fail open)",
                **base,
            )
        if (latest - now).total_seconds() <= self.lookahead_s:
            return Decision(
                action=Action.START,
                reason=f"latest start {latest:%Y-%m-%d %H:%M}Z "
                f"{'has passed' if latest <= now else 'comes before the next tick'}: starting "
                f"to meet the deadline {job.deadline:%Y-%m-%d %H:%M}Z",
                **base,
            )
        if region not in cache:
            cache[region] = StepSeries(signal.forecast) if signal.forecast.points else None
        series = cache[region]
        now_s, latest_s = now.timestamp(), latest.timestamp()
        now_mean = series.mean(now_s, now_s + duration_s) if series else None
        if series is None or now_mean is None:
            return Decision(
                action=Action.START,
                reason=f"the forecast for {region} does not cover the job's duration: running now",
                **base,
            )
        best_s, best_mean = now_s, now_mean
        for t in [*series.boundaries(now_s, latest_s), latest_s]:
            m = series.mean(t, t + duration_s)
            if m is not None and m < best_mean - 1e-9:
                best_s, best_mean = t, m
        energy_kwh = expected_power_w(job) * duration_s / 3.6e6
        saving_g = (now_mean - best_mean) * energy_kwh
        if best_s <= now_s or best_mean > now_mean * (1 - self.min_saving_fraction):
            return Decision(
                action=Action.START,
                reason=f"now is the cleanest window before the deadline: {now_mean:.0f} g/kWh "
                f"over the next {_fmt_duration(duration_s)}",
                expected_saving_g=0.0,
                **base,
            )
        start = datetime.fromtimestamp(best_s, now.tzinfo)
        return Decision(
            action=Action.HOLD,
            planned_start=start,
            reason=f"waiting for the window {start:%Y-%m-%d %H:%M}Z-"
            f"{start + timedelta(seconds=duration_s):%H:%M}Z at {best_mean:.0f} g/kWh, "
            f"vs {now_mean:.0f} g/kWh now; latest start {latest:%Y-%m-%d %H:%M}Z",
            expected_saving_g=saving_g,
            saving_is_estimate=True,
            **base,
        )


def _fmt_duration(seconds: float) -> str:
    whole = round(seconds)
    if whole < 120:
        return f"{whole}s"
    if whole < 7200:
        return f"{whole // 60}min"
    return f"{whole / 3600:.1f}h"
