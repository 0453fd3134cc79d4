"""Baseline policies, run in the same simulator as gridshift's planner.

Each is a `Planner` (snapshot in, decisions out). Policies that decide once at submission
(Carbon Aware SDK window, Let's Wait Awhile, GAIA) keep their choice in the job's
`planned_start` (HOLD) and start when it comes; Let's Wait Awhile's interruptible variant
remembers its chosen slots per job (the only state a baseline keeps). Every baseline
starts a job at its latest start whatever the signal says, so none misses a deadline by
waiting. Each uses the job's first allowed region (no relocation).

- `RunNow`: start at submission (the carbon-agnostic reference).
- `Threshold`: hold while the current intensity is above a level, up to the latest start
  (as Compute Gardener does).
- `SdkWindow`: the Carbon Aware SDK's lowest-average window of the job's length, looked up
  once at submission in a forecast of at most `forecast_horizon_s` (24 h by default).
- `WaitAwhile`: Let's Wait Awhile (Wiesner et al., Middleware '21): non-interruptible,
  the lowest-mean window before the latest start, decided at submission; interruptible, the
  cheapest slots of the job's length before the deadline, decided at submission (it
  suspends and resumes at every boundary and ignores the checkpoint cost).
- `GaiaLowestSlot`: GAIA's Lowest-Slot: start in the single lowest-intensity slot before
  the latest start.
- `GaiaCarbonTime`: GAIA's Carbon-Time: the start that maximises carbon saved (vs starting
  now) per hour of added completion time, i.e. saving / (wait + length).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..models import Action, Decision, Job, JobState, Snapshot
from .planner import Grid, build_grid, fmt_t, job_regions, window_sums

_EPS = 1e-9


def _decision(
    action: Action, job: Job, grid: Grid, region: str, reason: str, planned: int | None = None
) -> Decision:
    return Decision.model_construct(
        action=action,
        reason=reason,
        at=grid.now,
        job_id=job.id,
        region=region,
        planned_start=grid.at(planned) if planned is not None else None,
        expected_saving_g=None,
        saving_is_estimate=True,
        device_index=None,
        power_limit_w=None,
    )


class _Base:
    slot_s: float = 3600.0
    name = "base"

    def _grid(self, snapshot: Snapshot) -> Grid:
        far = max(
            [(j.deadline - snapshot.now).total_seconds() for j in snapshot.jobs] + [self.slot_s]
        )
        return build_grid(snapshot, self.slot_s, math.ceil(far / self.slot_s) + 1)

    def _region(self, job: Job, snapshot: Snapshot) -> str:
        return job.region or job_regions(job, snapshot.default_region)[0]

    def _latest(self, job: Job, grid: Grid) -> int:
        return math.floor((job.latest_start - grid.now).total_seconds() / self.slot_s + _EPS)

    def plan(self, snapshot: Snapshot) -> list[Decision]:
        grid = self._grid(snapshot)
        out: list[Decision] = []
        for job in snapshot.jobs:
            if job.state.terminal or job.state == JobState.RUNNING:
                continue
            region = self._region(job, snapshot)
            if self._latest(job, grid) <= 0 or not grid.fresh[grid.index[region]]:
                act = Action.RESUME if job.state == JobState.SUSPENDED else Action.START
                out.append(_decision(act, job, grid, region, "latest start reached or no signal"))
                continue
            out.extend(self.plan_job(job, grid, region))
        return out

    def plan_job(self, job: Job, grid: Grid, region: str) -> list[Decision]:
        raise NotImplementedError

    def _once(self, job: Job, grid: Grid, region: str, choose: int) -> list[Decision]:
        """Decide at submission (PENDING), then follow the decision kept in planned_start."""
        if job.state == JobState.HELD and job.planned_start is not None:
            s = round((job.planned_start - grid.now).total_seconds() / self.slot_s)
        else:
            s = choose
        if s <= 0:
            return [_decision(Action.START, job, grid, region, f"{self.name}: start")]
        return [_decision(Action.HOLD, job, grid, region, f"{self.name}: wait", planned=s)]


@dataclass
class RunNow(_Base):
    slot_s: float = 3600.0
    name: str = "run-now"

    def plan_job(self, job: Job, grid: Grid, region: str) -> list[Decision]:
        act = Action.RESUME if job.state == JobState.SUSPENDED else Action.START
        return [_decision(act, job, grid, region, "run at submission")]


@dataclass
class Threshold(_Base):
    """threshold_g_per_kwh: one level, or one per region (a region not named has none:
    its jobs run at once)."""

    threshold_g_per_kwh: float | dict[str, float] = 200.0
    slot_s: float = 3600.0
    name: str = "threshold"

    def plan_job(self, job: Job, grid: Grid, region: str) -> list[Decision]:
        now_i = float(grid.intensity[grid.index[region], 0])
        level = self.threshold_g_per_kwh
        if isinstance(level, dict):
            level = level.get(region, math.inf)
        if now_i <= level:
            return [_decision(Action.START, job, grid, region, f"{now_i:.0f} <= threshold")]
        return [
            _decision(
                Action.HOLD,
                job,
                grid,
                region,
                f"{now_i:.0f} g/kWh above {level:.0f}; latest start {fmt_t(job.latest_start)}",
                planned=1,
            )
        ]


def _best_window(grid: Grid, region: str, job: Job, last: int, slot_s: float) -> int:
    row = grid.intensity[grid.index[region]][None, :]
    d = job.remaining_s / slot_s
    need = math.ceil(d) + 1
    ext = np.concatenate([row, np.repeat(row.mean(keepdims=True), need, axis=1)], axis=1)
    cum = np.concatenate([[[0.0]], np.cumsum(ext, axis=1)], axis=1)
    n = max(1, min(last + 1, grid.slots))
    sums = window_sums(cum, ext, n, d)[0]
    return int(np.argmin(sums))


@dataclass
class SdkWindow(_Base):
    forecast_horizon_s: float = 24 * 3600.0
    slot_s: float = 3600.0
    name: str = "carbon-aware-sdk"

    def plan_job(self, job: Job, grid: Grid, region: str) -> list[Decision]:
        d = math.ceil(job.remaining_s / self.slot_s)
        last = min(self._latest(job, grid), int(self.forecast_horizon_s / self.slot_s) - d)
        s = _best_window(grid, region, job, max(0, last), self.slot_s)
        return self._once(job, grid, region, s)


@dataclass
class GaiaLowestSlot(_Base):
    slot_s: float = 3600.0
    name: str = "gaia-lowest-slot"

    def plan_job(self, job: Job, grid: Grid, region: str) -> list[Decision]:
        last = min(self._latest(job, grid), grid.slots - 1)
        row = grid.intensity[grid.index[region], : last + 1]
        return self._once(job, grid, region, int(np.argmin(row)))


@dataclass
class GaiaCarbonTime(_Base):
    slot_s: float = 3600.0
    name: str = "gaia-carbon-time"

    def plan_job(self, job: Job, grid: Grid, region: str) -> list[Decision]:
        row = grid.intensity[grid.index[region]][None, :]
        d = job.remaining_s / self.slot_s
        need = math.ceil(d) + 1
        ext = np.concatenate([row, np.repeat(row.mean(keepdims=True), need, axis=1)], axis=1)
        cum = np.concatenate([[[0.0]], np.cumsum(ext, axis=1)], axis=1)
        last = min(self._latest(job, grid), grid.slots - 1)
        sums = window_sums(cum, ext, last + 1, d)[0]
        gain = sums[0] - sums
        score = gain / (np.arange(last + 1) + d)
        s = int(np.argmax(score)) if gain.max() > 0 else 0
        return self._once(job, grid, region, s)


@dataclass
class WaitAwhile(_Base):
    interruptible: bool = False
    slot_s: float = 3600.0
    name: str = "wait-awhile"
    _slots: dict[str, set[float]] = field(default_factory=dict)

    def plan(self, snapshot: Snapshot) -> list[Decision]:
        if not self.interruptible:
            return super().plan(snapshot)
        grid = self._grid(snapshot)
        out: list[Decision] = []
        for job in snapshot.jobs:
            if job.state.terminal:
                continue
            region = self._region(job, snapshot)
            if not job.spec.interruptible:
                if job.state != JobState.RUNNING:
                    if self._latest(job, grid) <= 0:
                        out.append(_decision(Action.START, job, grid, region, "latest start"))
                    else:
                        out.extend(self.plan_job(job, grid, region))
                continue
            chosen = self._slots.get(job.id)
            if chosen is None:
                k = math.ceil(job.remaining_s / self.slot_s - _EPS)
                dl = math.floor((job.deadline - grid.now).total_seconds() / self.slot_s)
                dl = max(k, min(dl, grid.slots))
                row = grid.intensity[grid.index[region], :dl]
                pick = np.sort(np.argsort(row, kind="stable")[:k])
                chosen = {grid.now.timestamp() + float(i) * self.slot_s for i in pick}
                self._slots[job.id] = chosen
            now_s = grid.now.timestamp()
            # still behind: run from the latest moment that meets the deadline
            must = (job.deadline - grid.now).total_seconds() < (
                job.remaining_s + job.spec.checkpoint_cost_s + self.slot_s
            )
            run = must or any(abs(now_s - c) < 1.0 for c in chosen)
            if run and job.state != JobState.RUNNING:
                act = Action.RESUME if job.state == JobState.SUSPENDED else Action.START
                out.append(_decision(act, job, grid, region, "chosen slot"))
            elif not run and job.state == JobState.RUNNING:
                out.append(_decision(Action.SUSPEND, job, grid, region, "not a chosen slot"))
            elif not run and job.state in (JobState.PENDING, JobState.HELD):
                out.append(_decision(Action.HOLD, job, grid, region, "waiting", planned=1))
        return out

    def plan_job(self, job: Job, grid: Grid, region: str) -> list[Decision]:
        last = min(self._latest(job, grid), grid.slots - 1)
        s = _best_window(grid, region, job, last, self.slot_s)
        return self._once(job, grid, region, s)
