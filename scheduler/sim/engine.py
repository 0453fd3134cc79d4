"""The simulator: a fake clock steps slot by slot; at each slot the policy sees a Snapshot
(current value and forecast per region, the jobs submitted so far, capacity) and its
decisions are applied; running jobs consume energy at the actual intensity of the slot."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from ..clock import FakeClock
from ..interfaces import Planner
from ..models import (
    Action,
    Forecast,
    ForecastPoint,
    IntensitySample,
    Job,
    JobState,
    RegionSignal,
    Snapshot,
)
from ..policy.window import expected_power_w
from ..signals.skill import ForecastSkill
from .traces import ForecastModel, RegionTrace


@dataclass
class JobOutcome:
    job_id: str
    region: str | None
    submitted_s: float
    first_start_s: float | None
    end_s: float | None
    deadline_s: float
    emissions_g: float
    energy_kwh: float
    suspensions: int
    run_slots: list[tuple[str, int]] = field(default_factory=list)
    length_s: float = 0.0  # the job's run time when started at once and never paused

    @property
    def wait_s(self) -> float:
        """Delay of the first start."""
        return (self.first_start_s - self.submitted_s) if self.first_start_s is not None else 0.0

    @property
    def delay_s(self) -> float:
        """How much later than at submission the job finished: its wait for the first start,
        its pauses and its checkpoints (a job that never finished counts up to its deadline)."""
        end = self.end_s if self.end_s is not None else max(self.deadline_s, self.submitted_s)
        return max(0.0, end - self.submitted_s - self.length_s)

    @property
    def missed(self) -> bool:
        return self.end_s is None or self.end_s > self.deadline_s + 1.0


@dataclass
class SimResult:
    policy: str
    forecast: str
    jobs: list[JobOutcome]
    capacity_refusals: int = 0
    plan_time_s: float = 0.0
    ticks: int = 0

    @property
    def emissions_g(self) -> float:
        return float(sum(j.emissions_g for j in self.jobs))

    @property
    def mean_wait_h(self) -> float:
        return float(np.mean([j.wait_s for j in self.jobs]) / 3600) if self.jobs else 0.0

    @property
    def mean_delay_h(self) -> float:
        return float(np.mean([j.delay_s for j in self.jobs]) / 3600) if self.jobs else 0.0

    @property
    def missed(self) -> int:
        return sum(1 for j in self.jobs if j.missed)


def _points_s(t0_s: float, slot_s: float, vals: np.ndarray) -> list[tuple[float, float, float]]:
    return [(t0_s + i * slot_s, t0_s + (i + 1) * slot_s, float(v)) for i, v in enumerate(vals)]


class Progress:
    """Progress on standard error: one line rewritten in place on a terminal; elsewhere (a
    log, a pipe) a line at each quarter, so captured output stays short."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.tty = sys.stderr.isatty()
        self._next_pct = 0.0

    def show(self, pct: float, text: str | None = None) -> None:
        text = text or f"{pct:5.1f}%"
        if self.tty:
            print(f"\r  {self.label}: {text}", end="", file=sys.stderr, flush=True)
        elif pct >= self._next_pct:
            print(f"  {self.label}: {text}", file=sys.stderr, flush=True)
            self._next_pct = 25.0 * (pct // 25.0 + 1)

    def done(self, text: str = "done") -> None:
        line = f"  {self.label}: {text}"
        print(f"\r{line}   " if self.tty else line, file=sys.stderr, flush=True)


def _fresh_copy(job: Job) -> Job:
    return job.model_copy(deep=True)


def simulate(
    policy: Planner,
    traces: dict[str, RegionTrace],
    forecasts: dict[str, ForecastModel],
    jobs: list[Job],
    *,
    capacity_gpus: dict[str, int | None] | None = None,
    horizon_s: float = 8 * 86400.0,
    policy_name: str = "",
    forecast_name: str = "",
    progress: bool = False,
    warmup_s: float = 2 * 86400.0,
) -> SimResult:
    """Replay `jobs` (not modified) through `policy` over the aligned `traces`.

    Each region's forecasts are scored against the actual values as the clock moves (as the
    agent's signal hub does), starting `warmup_s` before the first job where the trace
    allows, and the policy sees that measured error in its snapshot."""
    names = list(traces)
    first = traces[names[0]]
    slot_s, origin = first.slot_s, first.origin_s
    n_slots = min(len(t) for t in traces.values())
    capacity = dict(capacity_gpus or {})
    work = sorted((_fresh_copy(j) for j in jobs), key=lambda j: j.submitted_at)
    clock = FakeClock(datetime.fromtimestamp(origin, UTC))
    h = max(1, int(horizon_s // slot_s))
    out: dict[str, JobOutcome] = {
        j.id: JobOutcome(
            j.id,
            j.region,
            j.submitted_at.timestamp(),
            None,
            None,
            j.deadline.timestamp(),
            0.0,
            0.0,
            0,
            length_s=j.spec.expected_duration_s,
        )
        for j in work
    }
    by_id = {j.id: j for j in work}
    visible: list[Job] = []
    nxt = 0
    refusals = 0
    plan_time = 0.0
    ticks = 0
    default_region = names[0]
    last_deadline = max((j.deadline.timestamp() for j in work), default=origin)
    t_end = min(n_slots, math.ceil((last_deadline - origin) / slot_s) + 2)
    t = max(0, int((work[0].submitted_at.timestamp() - origin) // slot_s)) if work else t_end
    report_every = max(1, (t_end - t) // 50)
    start_t = t
    skills = {name: ForecastSkill() for name in names}
    bar = Progress(f"{policy_name or 'policy'} / {forecast_name}")
    scored = max(0, t - int(warmup_s // slot_s))  # next slot whose forecasts are scored

    def score_until(t_now: int) -> None:
        nonlocal scored
        for tt in range(scored, t_now + 1):
            s0 = origin + tt * slot_s
            for name in names:
                sk = skills[name]
                sk.record_actual(s0, s0 + slot_s, float(traces[name].values[tt]))
                if tt < t_now:  # the current tick's forecast is recorded below
                    vals = forecasts[name].values(tt, min(h, n_slots - tt))
                    sk.record_forecast(s0, _points_s(s0, slot_s, vals))
        scored = t_now + 1

    while t < t_end:
        now_s = origin + t * slot_s
        clock.set(datetime.fromtimestamp(now_s, UTC))
        now = clock.now()
        while nxt < len(work) and work[nxt].submitted_at.timestamp() <= now_s + 1e-6:
            visible.append(work[nxt])
            nxt += 1
        visible = [j for j in visible if not j.state.terminal]
        if not visible:
            if nxt >= len(work):
                break
            t = max(t + 1, math.ceil((work[nxt].submitted_at.timestamp() - origin) / slot_s))
            continue
        regions = {}
        score_until(t)
        for name in names:
            vals = forecasts[name].values(t, min(h, n_slots - t))
            skills[name].record_forecast(now_s, _points_s(now_s, slot_s, vals))
            pts = [
                ForecastPoint.model_construct(
                    start=now + timedelta(seconds=i * slot_s),
                    end=now + timedelta(seconds=(i + 1) * slot_s),
                    intensity_g_per_kwh=float(v),
                )
                for i, v in enumerate(vals)
            ]
            cur = IntensitySample.model_construct(
                region=name,
                start=now,
                end=now + timedelta(seconds=slot_s),
                intensity_g_per_kwh=float(traces[name].values[t]),
                provider="sim",
            )
            fc = Forecast.model_construct(region=name, provider="sim", issued_at=now, points=pts)
            regions[name] = RegionSignal.model_construct(
                region=name,
                current=cur,
                forecast=fc,
                provider="sim",
                age_s=0.0,
                fresh=True,
                error=None,
                forecast_error_g_per_kwh=skills[name].error_sd(),
            )
        snap = Snapshot.model_construct(
            now=now,
            jobs=visible,
            regions=regions,
            default_region=default_region,
            capacity_gpus=capacity,
            gpus=[],
        )
        t0 = time.perf_counter()
        decisions = policy.plan(snap)
        plan_time += time.perf_counter() - t0
        ticks += 1
        in_use = {n: 0 for n in names}
        for j in visible:
            if j.state == JobState.RUNNING and j.region:
                in_use[j.region] = in_use.get(j.region, 0) + j.spec.gpus
        for d in decisions:
            job = by_id.get(d.job_id or "")
            if job is None or job.state.terminal:
                continue
            if d.action == Action.RELOCATE and job.state in (JobState.PENDING, JobState.HELD):
                job.region = d.region
            elif d.action == Action.HOLD and job.state in (JobState.PENDING, JobState.HELD):
                job.state = JobState.HELD
                job.planned_start = d.planned_start
                if d.region:
                    job.region = d.region
            elif d.action in (Action.START, Action.RESUME) and job.state in (
                JobState.PENDING,
                JobState.HELD,
                JobState.SUSPENDED,
            ):
                region = d.region or job.region or default_region
                cap = capacity.get(region)
                if cap is not None and in_use.get(region, 0) + job.spec.gpus > cap:
                    refusals += 1
                    continue
                in_use[region] = in_use.get(region, 0) + job.spec.gpus
                if job.state == JobState.SUSPENDED:
                    job.run_s = max(0.0, job.run_s - job.spec.checkpoint_cost_s)
                job.region = region
                job.state = JobState.RUNNING
                if job.started_at is None:
                    job.started_at = now
                    out[job.id].first_start_s = now_s
                out[job.id].region = region
            elif d.action == Action.SUSPEND and job.state == JobState.RUNNING:
                job.state = JobState.SUSPENDED
                out[job.id].suspensions += 1
                in_use[job.region or default_region] -= job.spec.gpus
        # Advance one slot.
        for j in visible:
            if j.state != JobState.RUNNING:
                continue
            dt = min(slot_s, j.remaining_s)
            kwh = expected_power_w(j) * dt / 3.6e6
            region = j.region or default_region
            o = out[j.id]
            o.energy_kwh += kwh
            o.emissions_g += kwh * float(traces[region].values[t])
            o.run_slots.append((region, t))
            j.run_s += dt
            if j.remaining_s <= 1e-6:
                j.state = JobState.SUCCEEDED
                o.end_s = now_s + dt
        if progress and (t - start_t) % report_every == 0:
            bar.show(100.0 * (t - start_t) / max(1, t_end - start_t))
        t += 1
    if progress:
        bar.done()
    return SimResult(
        policy=policy_name,
        forecast=forecast_name,
        jobs=list(out.values()),
        capacity_refusals=refusals,
        plan_time_s=plan_time,
        ticks=ticks,
    )
