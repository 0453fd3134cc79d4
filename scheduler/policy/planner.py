"""gridshift's carbon planner: time shifting, suspend/resume, relocation and capacity.

`CarbonPlanner.plan(snapshot)` is pure (no I/O, no clock but `snapshot.now`). It works on a
grid of slots of `slot_s` seconds starting at `snapshot.now`: slot 0 is "now". Every
region's current value and forecast are turned into one numpy row per region once per plan.

How a job is planned:

- **Not yet started, not interruptible**: the (region, start slot) with the lowest forecast
  emissions over the job's remaining duration, among the regions the job allows whose
  signal is fresh, with a start no later than its latest start. Window sums come from a
  cumulative sum, vectorised over every job of the same duration.
- **Interruptible**: an exact dynamic programme over (slot, work left, state) with three
  states (never started, suspended, running). Every (re)start commits to a block of at least
  `min_run_s`; a resume pays the job's `checkpoint_cost_s` as extra energy and time, so the
  plan only splits a job where the gap is worth more than the checkpoint, and never
  thrashes. The job's last slot costs only the part of it the work left needs. Slots
  after the deadline cost "infinity"; a plan whose checkpoints would push
  the job past its deadline is solved again with that time held back (or the job runs
  straight through).
- **Capacity**: running non-interruptible jobs hold their GPUs until they end; then
  interruptible jobs that have started are committed (least slack first; a running one
  holds the slots its plan runs in, a paused one claims those it will resume on); then
  unstarted jobs, those that must start now first, then the largest (GPUs x time left).
  A job whose best choice would overfill a region in any slot takes its next-best option
  that fits; an interruptible one moves to a region with room (its plan ends a slot before
  the deadline, unless it never pauses). Where that one-by-one placement made a job take a
  worse option, the jobs not yet started (up to `exact_max_jobs`, not interruptible) are
  planned together exactly, with the oracle's programme on the forecast and the GPUs left
  per slot; that plan is used when it is proven optimal within `exact_time_limit_s` and
  cheaper. It places a small job in the second-cleanest region when that keeps the
  cleanest one for a long job. Where GPUs are limited, an interruptible job that may run
  in several regions (not paused, nor queued again after a checkpoint) is planned the same
  way, as one run that is not paused once started (`straight_relocatable`), unless that
  leaves one of them no start by its latest start: the whole plan is then made with
  pause-and-resume plans. Jobs not started that find no GPUs before their deadline (a
  small job that may run in one region only, after larger ones took it) are placed again
  ahead of the others, and that plan is kept if fewer jobs are then left without room
  (while at most `repair_max_jobs` jobs are not started: it plans the tick twice). A
  running job that no plan fits runs on; a paused one resumes while its GPUs are free.
  Pauses come first in the decisions, and no plan starts more GPUs now than a region has
  (`_fit_now`: starts kept least slack first).
- **Hysteresis**: a held job keeps its planned (region, start) unless a new plan is cheaper
  by more than `hysteresis_fraction`; it is never postponed, and it starts when due. Where
  a region's forecast is read through its measured noise, held jobs there are planned
  afresh at every tick, but postponed only for a gain above `noisy_postpone_fraction`
  (3 %). A new job starts now unless waiting saves more than `min_saving_fraction` (0.01 %
  where the forecast has proven exact), or
  `unproven_min_saving_fraction` (5 %) where the forecast has not yet been checked against
  measured values (a running interruptible job pauses there only for that much, too).
  An interruptible job's wait for its first start is charged
  `interruptible_wait_cost_fraction` of a slot per slot, so the earlier of nearly equal
  plans wins, and it starts no later than the first of its k cleanest slots (k: its work in
  slots), the wait of a plan that simply takes those slots
  (`interruptible_start_by_cleanest`). A running
  interruptible job is suspended only if the best plan that pauses beats the best plan that
  runs on. A started non-interruptible job is never touched.
- **Forecast noise**: each forecast row is checked for the signature of independent errors,
  capped by the error the forecast has really shown (`RegionSignal.forecast_error_g_per_kwh`,
  measured by the signal hub or the simulator); a noisy row is replaced by its posterior
  mean under a prior with a smooth and a daily part, anchored on the value measured now.
  A forecast that has been exact is used as it is.
- **Fail open**: a region whose signal is not fresh is never chosen while a fresh one is
  allowed; a job with no fresh region starts now (never held past its latest start).

Energy for the estimates: `JobSpec.expected_power_w`, else 300 W per GPU (100 W without a
GPU), as in `window.expected_power_w`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..errors import ValidationError
from ..models import Action, Decision, Job, JobState, Snapshot
from .window import expected_power_w

BIG = 1e15
_ROUNDS = 8
_CHUNK = 256  # interruptible plans solved together in the first pass
_EPS = 1e-9
_EXACT_FORECAST_FRACTION = 0.01  # measured error (of the mean) below which a forecast is exact
# For independent Gaussian errors of variance v, the median of the products of successive
# second differences is -1.486 v (their mean is -4 v).
_MEDIAN_LAG1_PER_VAR = 1.486
# the least gain (of a job's emissions) waited for on an exact forecast: any real gain, but
# not a hold of hours for less than a hundredth of a per cent
_EXACT_MIN_GAIN = 1e-4
# Largest joint exact plan: (region, start) options times the slots each covers. About
# 100,000 are built and solved in about a second; larger ones are left to the greedy plan.
_EXACT_MAX_TERMS = 100_000


class CarbonPlannerConfig(BaseModel):
    """Tuning of `CarbonPlanner`."""

    model_config = ConfigDict(extra="forbid")

    slot_s: float = Field(default=1800.0, gt=0, description="planning resolution")
    horizon_s: float = Field(default=8 * 86400.0, gt=0, description="furthest slot planned")
    min_saving_fraction: float = Field(
        default=0.001,
        ge=0,
        lt=1,
        description="hold a job only if waiting saves this much (at most 0.01 % on a "
        "forecast that has proven exact)",
    )
    unproven_min_saving_fraction: float = Field(
        default=0.05,
        ge=0,
        lt=1,
        description="where a region's forecast has not yet been checked against measured "
        "values, a job waits or pauses there only for this much gain by the forecast",
    )
    hysteresis_fraction: float = Field(
        default=0.15, ge=0, lt=1, description="change an existing plan only for this much gain"
    )
    suspend_margin_fraction: float = Field(
        default=0.01, ge=0, description="suspend only for this share of a slot's emissions"
    )
    default_min_run_s: float = Field(
        default=3600.0, ge=0, description="shortest run of an interruptible job, if unset"
    )
    denoise: bool = Field(default=True, description="smooth forecasts that look noisy")
    denoise_floor_fraction: float = Field(
        default=0.04, gt=0, description="roughness (fraction of the mean) treated as signal"
    )
    denoise_length_s: float = Field(
        default=3 * 3600.0, gt=0, description="time scale of the grid signal when smoothing"
    )
    noisy_postpone_fraction: float = Field(
        default=0.03,
        ge=0,
        description="where a forecast is read through its measured noise, postpone a held "
        "plan only for this much gain",
    )
    wait_tiebreak_fraction: float = Field(
        default=1e-5, ge=0, description="per-slot penalty that prefers earlier equal starts"
    )
    interruptible_wait_cost_fraction: float = Field(
        default=0.0075,
        ge=0,
        description="share of a slot's emissions an interruptible job's plan is charged per "
        "slot it waits to start: the earlier of nearly equal plans wins",
    )
    interruptible_start_by_cleanest: bool = Field(
        default=True,
        description="an interruptible job not started starts no later than the first of "
        "its k cleanest slots before its deadline (k: its work in slots)",
    )
    exact_max_jobs: int = Field(
        default=60,
        ge=0,
        description="where GPUs run short, plan up to this many non-interruptible jobs not "
        "yet started together, exactly (0: never)",
    )
    exact_time_limit_s: float = Field(
        default=2.0, gt=0, description="time allowed for that exact plan per tick"
    )
    repair_max_jobs: int = Field(
        default=500,
        ge=0,
        description="where jobs not started find no GPUs before their deadline, plan again "
        "with them placed first, while at most this many jobs are not started (0: never)",
    )
    straight_relocatable: bool = Field(
        default=True,
        description="where GPUs run short, plan an interruptible job that may run in several "
        "regions as one run, as long as such runs fit before their latest starts",
    )


# --------------------------------------------------------------------------------------------
# Grid helpers (shared with the baselines)


@dataclass
class Grid:
    """Intensity per region on the slot grid that starts at `now`."""

    now: datetime
    slot_s: float
    regions: list[str]
    index: dict[str, int]
    intensity: np.ndarray  # (R, T) g/kWh; unknown slots hold the row's mean
    known: np.ndarray  # (R, T) bool: covered by the current value or the forecast
    fresh: np.ndarray  # (R,) bool
    capacity: np.ndarray  # (R,) float, inf = unlimited
    errors: dict[str, str] = field(default_factory=dict)
    # (R,) bool: the forecast has not yet been checked against measured values (set by the
    # planner from `RegionSignal.forecast_error_g_per_kwh`)
    unchecked: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    @property
    def slots(self) -> int:
        return int(self.intensity.shape[1])

    def at(self, slot: int) -> datetime:
        return self.now + timedelta(seconds=slot * self.slot_s)


def job_regions(job: Job, default_region: str) -> list[str]:
    if job.spec.allowed_regions:
        return list(job.spec.allowed_regions)
    return [job.region or default_region]


def build_grid(snapshot: Snapshot, slot_s: float, horizon_slots: int) -> Grid:
    """Turn every region's current value and forecast into numpy rows (once per plan)."""
    names: list[str] = list(snapshot.regions)
    for job in snapshot.jobs:
        for r in job_regions(job, snapshot.default_region):
            if r not in snapshot.regions and r not in names:
                names.append(r)
    if snapshot.default_region not in names:
        names.append(snapshot.default_region)
    t0 = snapshot.now.timestamp()
    n_r, n_t = len(names), max(1, horizon_slots)
    values = np.full((n_r, n_t), np.nan)
    fresh = np.zeros(n_r, dtype=bool)
    errors: dict[str, str] = {}
    edges = t0 + slot_s * np.arange(n_t)
    mids = edges + slot_s / 2
    for i, name in enumerate(names):
        sig = snapshot.regions.get(name)
        if sig is None:
            errors[name] = "no signal configured"
            continue
        fresh[i] = bool(sig.fresh)
        if not sig.fresh:
            errors[name] = sig.error or "signal is stale"
        row = values[i]
        if sig.forecast is not None and sig.forecast.points:
            pts = sig.forecast.points
            starts = np.fromiter((p.start.timestamp() for p in pts), float, len(pts))
            ends = np.fromiter((p.end.timestamp() for p in pts), float, len(pts))
            vals = np.fromiter((p.intensity_g_per_kwh for p in pts), float, len(pts))
            k = np.searchsorted(starts, mids, side="right") - 1
            ok = (k >= 0) & (mids < ends[np.clip(k, 0, None)])
            row[ok] = vals[k[ok]]
        cur = sig.current
        if cur is not None:
            c0, c1 = cur.start.timestamp(), cur.end.timestamp()
            covered = (mids >= c0) & (mids < c1)
            covered[0] = True  # the value measured now stands for slot 0
            row[covered] = cur.intensity_g_per_kwh
    known = ~np.isnan(values)
    for i in range(n_r):
        if known[i].any():
            values[i, ~known[i]] = float(np.mean(values[i, known[i]]))
        else:
            values[i, :] = 0.0
            fresh[i] = False
            errors.setdefault(names[i], "no intensity values")
    cap = np.full(n_r, np.inf)
    for i, name in enumerate(names):
        c = snapshot.capacity_gpus.get(name)
        if c is not None:
            cap[i] = float(c)
    return Grid(
        now=snapshot.now,
        slot_s=slot_s,
        regions=names,
        index={n: i for i, n in enumerate(names)},
        intensity=values,
        known=known,
        fresh=fresh,
        capacity=cap,
        errors=errors,
    )


def denoise_rows(
    values: np.ndarray,
    floor_fraction: float,
    length_slots: float,
    day_slots: float,
    measured_sd: np.ndarray | None = None,
    known: np.ndarray | None = None,
) -> np.ndarray:
    """Replace each noisy row by its best estimate of the true signal.

    Independent forecast errors of variance v make successive second differences strongly
    negatively correlated (their lag-1 covariance is -4v), while a real grid signal, which
    moves in ramps and bends rarely, leaves them nearly uncorrelated. So v is estimated from
    the negative part of that covariance. Where the forecast's error has been measured
    against what happened (`measured_sd`, NaN where not), v is capped by it: a forecast
    that has been exact is not touched whatever its shape. Where it has not, v comes from
    the median of those products instead of their mean, so that one sharp dip or spike (a
    real one, in an exact forecast) does not read as noise; noise that runs through the
    row does. A row whose v is below
    (`floor_fraction` x mean)^2 / 4 is left as it is.

    A noisy row becomes the posterior mean of a Gaussian process observed with noise v in
    every forecast slot (`known`, default all; the others are not observed) and exactly in
    slot 0, measured now. Its covariance is half a smooth part (time scale
    `length_slots`) and half a daily part (period `day_slots`, fading over three days), so
    each hour's estimate also draws on the same hour of the other forecast days.
    """
    out = values.copy()
    n_r, n = values.shape
    if measured_sd is None:
        measured_sd = np.full(n_r, np.nan)
    for i in range(n_r):
        row = values[i]
        mean = float(np.mean(row))
        if n < 8 or mean <= 0:
            continue
        d2 = np.diff(row[1:], n=2)  # slot 0 is a measurement, not a forecast
        lag1 = d2[1:] * d2[:-1]
        if math.isfinite(measured_sd[i]):
            noise = min(max(0.0, -float(np.mean(lag1))) / 4.0, float(measured_sd[i]) ** 2)
        else:  # shape alone: noise only if it runs through the row, not for one sharp dip
            noise = max(0.0, -float(np.median(lag1))) / _MEDIAN_LAG1_PER_VAR
        if noise <= (floor_fraction * mean) ** 2 / 4.0:
            continue
        seen = np.ones(n, dtype=bool) if known is None else known[i]
        out[i] = gp_posterior_mean(row, seen, noise, length_slots, day_slots)
    return out


@lru_cache(maxsize=16)
def _covariance_by_lag(n: int, length_slots: float, day_slots: float) -> np.ndarray:
    """Prior correlation for lags -(n-1) .. n-1 (index lag + n - 1): half a smooth part,
    half a daily part fading over three days."""
    lag = np.arange(-(n - 1), n, dtype=float)
    smooth = np.exp(-0.5 * (lag / length_slots) ** 2)
    daily = np.exp(
        -2.0 * np.sin(np.pi * lag / day_slots) ** 2 - 0.5 * (lag / (3.0 * day_slots)) ** 2
    )
    out = 0.5 * smooth + 0.5 * daily
    out.flags.writeable = False
    return out


def gp_posterior_mean(
    row: np.ndarray, seen: np.ndarray, noise_var: float, length_slots: float, day_slots: float
) -> np.ndarray:
    """Posterior mean over `row`'s slots (see `denoise_rows`)."""
    n = row.size
    observed = seen.copy()
    observed[0] = True
    idx = np.nonzero(observed)[0]
    level = float(np.mean(row[idx]))
    signal_var = max(float(np.var(row[idx])) - noise_var, 0.05 * noise_var)
    by_lag = _covariance_by_lag(n, length_slots, day_slots)
    k_all = signal_var * by_lag[np.arange(n)[:, None] - idx[None, :] + n - 1]  # (n, obs)
    a = k_all[idx]
    a[np.diag_indices_from(a)] += noise_var
    a[0, 0] += 1e-6 * noise_var - noise_var  # slot 0 is measured, not forecast
    try:
        alpha = np.linalg.solve(a, row[idx] - level)
    except np.linalg.LinAlgError:
        return row.copy()
    out = level + k_all @ alpha
    out[0] = row[0]
    return np.maximum(out, 0.0)


def window_sums(row_cum: np.ndarray, row: np.ndarray, n_starts: int, d_slots: float) -> np.ndarray:
    """Sum of intensity over [s, s + d) for every start s < n_starts (rows on axis 0)."""
    full = math.floor(d_slots + _EPS)
    frac = d_slots - full
    s = np.arange(n_starts)
    out = row_cum[:, s + full] - row_cum[:, s]
    if frac > _EPS:
        out = out + frac * row[:, s + full]
    return out


def _fail_open(grid: Grid, region: str) -> str:
    return f"{grid.errors.get(region, 'no fresh signal')} for {region}: running now (fail open)"


_DECISION_FIELDS = frozenset(Decision.model_fields)


def _decision(**values: Any) -> Decision:
    """A Decision built without validation: the planner sets every field itself, and builds
    one per job and tick. This is what `Decision.model_construct` does when every field is
    given, at a quarter of its cost (a plan of 10,000 jobs spent 90 ms there)."""
    d = Decision.__new__(Decision)
    object.__setattr__(d, "__dict__", values)
    object.__setattr__(d, "__pydantic_fields_set__", set(_DECISION_FIELDS))
    object.__setattr__(d, "__pydantic_extra__", None)
    object.__setattr__(d, "__pydantic_private__", None)
    return d


def _too_small(share_pct: float, min_gain: float, unchecked: bool) -> str:
    """Why a wait for a gain of `share_pct` % is not worth it."""
    of = " of a forecast not yet checked against measured values" if unchecked else ""
    return (
        f"would save {share_pct:.1f} % by the forecast, less than the {100 * min_gain:.1f} % "
        f"asked{of}"
    )


@lru_cache(maxsize=4096)
def fmt_t(t: datetime) -> str:
    """'06-01 14:30Z' (UTC), cheaply: called for every decision, mostly on the plan's slots."""
    return f"{t.month:02d}-{t.day:02d} {t.hour:02d}:{t.minute:02d}Z"


# --------------------------------------------------------------------------------------------
# Interruptible jobs: exact dynamic programme


@dataclass
class _IntJob:
    pos: int  # index in the plan's job list
    job: Job
    state: int  # 0 fresh, 1 suspended, 2 running
    k: int  # work left, slots
    m: int  # minimum run, slots
    deadline_slot: int  # first slot that may not be used
    overhead_frac: float  # checkpoint cost as a fraction of a slot's energy
    work_slots: float  # exact work left (with a pending resume), slots
    energy_kwh: float  # per slot
    region_i: int
    deadline_full: int = 0  # deadline slot before any reserve for checkpoints
    held_back: bool = False  # a slot before the deadline is held back (GPUs are shared)
    why_now: str = ""  # why it runs now, where no plan chose it
    # regions it may be placed in (None once started: a started job stays where it is)
    regions: np.ndarray | None = None


def solve_interruptible(
    cost: np.ndarray,
    jobs: list[_IntJob],
    n_t: int,
    wait_cost_fraction: float = 0.0,
    start_by_cleanest: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Exact plans for a batch of interruptible jobs.

    cost: (B, n_t) grams per slot of running (BIG where the slot may not be used); each
    slot a job waits for its first start adds `wait_cost_fraction` of its mean slot cost.
    Returns (value (B,) grams of the best plan from the job's state, run mask (B, n_t),
    first run slot (B,) or -1, value (B,) of the best plan that runs in slot 0).
    """
    b = len(jobs)
    kmax = max(j.k for j in jobs)
    ks = np.arange(kmax + 1)
    m = np.array([j.m for j in jobs])[:, None]
    ov = np.array([j.overhead_frac for j in jobs])
    pref = np.zeros((b, n_t + 1))
    pref[:, 1:] = np.cumsum(cost, axis=1)
    # the job's last slot is used only for the part of its work left over (a resume's
    # checkpoint adds minutes, not a whole slot)
    spare = np.array([1.0 - min(1.0, max(0.0, j.work_slots - (j.k - 1))) for j in jobs])
    # refund[b, s]: what the unused part of slot s saves when job b finishes in it; a block
    # started with k <= m work left finishes the job in slot t + k - 1
    k_end = np.arange(1, min(int(m.max()), kmax) + 1)
    # waiting to start costs `wait_cost_fraction` of a usable slot's mean cost per slot
    usable = cost < BIG / 2
    mean_cost = np.where(usable, cost, 0.0).sum(axis=1) / np.maximum(usable.sum(axis=1), 1)
    wait_pen = np.zeros((b, kmax + 1))
    wait_pen[:, 1:] = wait_cost_fraction * mean_cost[:, None]
    # A job not started starts no later than the first of its k cleanest usable slots (k:
    # its work): the wait of a plan that would simply take those slots.
    start_by = np.full(b, n_t)
    k_job = np.array([j.k for j in jobs])
    if start_by_cleanest:
        order = np.argsort(np.where(usable, cost, np.inf), axis=1, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(cost.shape[1])[None, :], axis=1)
        cleanest = usable & (rank < k_job[:, None])
        bound = (np.array([j.state for j in jobs]) == 0) & (usable.sum(axis=1) >= k_job)
        start_by = np.where(bound, cleanest.argmax(axis=1), n_t)
    refund = np.zeros((b, n_t + kmax + 1))
    refund[:, :n_t] = np.where(cost < BIG / 2, spare[:, None] * cost, 0.0)
    refund_k = np.where(k_end[None, :, None] <= m[:, :, None], refund[:, None, :], 0.0)
    k_cols = np.arange(k_end.size)
    p_k = np.minimum(m, ks[None, :])  # progress of a block started with k left
    rows = np.arange(b)[:, None]
    v_on = np.full((n_t + 1, b, kmax + 1), BIG)
    v_on[:, :, 0] = 0.0
    v_off = np.full((b, kmax + 1), BIG)
    v_off[:, 0] = 0.0
    v_fr = v_off.copy()
    start_off = np.zeros((n_t, b, kmax + 1), dtype=bool)
    start_fr = np.zeros((n_t, b, kmax + 1), dtype=bool)
    keep_on = np.zeros((n_t, b, kmax + 1), dtype=bool)
    k_after = ks[None, :] - p_k  # work left after such a block
    k_last = k_end - 1
    ov_cost = ov[:, None] * cost
    cont = np.full((b, kmax + 1), BIG)
    m_max = int(m.max())
    for t in range(n_t - 1, -1, -1):
        end = t + p_k  # (B, K+1)
        inside = t + m_max <= n_t  # every block started now ends within the horizon
        end_c = end if inside else np.minimum(end, n_t)
        block = pref[rows, end_c] - pref[:, t : t + 1]
        # a block started with k <= m work left ends the job in slot t + k - 1
        block[:, 1 : k_end.size + 1] -= refund_k[:, k_cols, t + k_last]
        base = block + v_on[end_c, rows, k_after]
        if not inside:
            base = np.where(end <= n_t, base, BIG)
        base[:, 0] = 0.0
        c_t = cost[:, t : t + 1]
        cand_off = base + ov_cost[:, t : t + 1]
        so = cand_off < v_off
        v_off = np.where(so, cand_off, v_off)
        v_fr += wait_pen
        sf = base < v_fr
        v_fr = np.where(sf, base, v_fr)
        v_fr[t > start_by, 1:] = BIG
        np.add(c_t, v_on[t + 1, :, :-1], out=cont[:, 1:])
        if kmax >= 1:
            cont[:, 1] -= refund[:, t]
        ko = cont <= v_off
        von = np.where(ko, cont, v_off)
        von[:, 0] = 0.0
        v_on[t] = np.minimum(von, BIG)
        start_off[t], start_fr[t], keep_on[t] = so, sf, ko
        if t == 0:
            cont0 = cont.copy()
    # Forward trace from each job's own state.
    state = np.array([j.state for j in jobs])
    k = np.array([j.k for j in jobs])
    ib = np.arange(b)
    cont_now = cont0[ib, np.array([j.k for j in jobs])]
    value = np.where(state == 2, v_on[0, ib, k], np.where(state == 1, v_off[ib, k], v_fr[ib, k]))
    run = np.zeros((b, n_t), dtype=bool)
    first = np.full(b, -1)
    block_left = np.zeros(b, dtype=int)
    idx = np.arange(b)
    m0 = m[:, 0]
    for t in range(n_t):
        active = k > 0
        if not active.any():
            break
        # Decide for jobs not inside a committed block (k never leaves 0..kmax).
        free = active & (block_left == 0)
        is_on = state == 2
        dec = np.where(
            is_on,
            keep_on[t, idx, k],
            np.where(state == 1, start_off[t, idx, k], start_fr[t, idx, k]),
        )
        stays_on = free & is_on & dec
        starts = free & ~is_on & dec
        first = np.where((starts | stays_on) & (first < 0), t, first)
        block_left = np.where(starts, np.minimum(m0, k), block_left)
        running = (block_left > 0) | stays_on
        run[:, t] = running & active
        state = np.where(running, 2, np.where(free & is_on & ~stays_on, 1, state))
        k = k - run[:, t]
        block_left = np.maximum(block_left - 1, 0)
    # the value reported is the plan's emissions: the waiting charge only chose among plans
    fresh = (np.array([j.state for j in jobs]) == 0) & (first > 0) & (value < BIG / 2)
    value = np.where(fresh, value - wait_pen[:, 1] * first, value)
    # where no plan starts by then (GPUs taken in the slots after it), the bound is dropped
    stuck = np.nonzero((start_by < n_t) & (value >= BIG / 2))[0]
    if stuck.size:
        again = solve_interruptible(
            cost[stuck], [jobs[i] for i in stuck], n_t, wait_cost_fraction, False
        )
        for out, new in zip((value, run, first, cont_now), again, strict=True):
            out[stuck] = new
    return value, run, first, cont_now


# --------------------------------------------------------------------------------------------
# The planner


def _runs(run: np.ndarray) -> int:
    """How many separate runs a plan's row of slots (True: running) makes."""
    return int(np.count_nonzero(np.diff(run.astype(np.int8), prepend=0) == 1))


def _placement_order(job: Job, due_s: float) -> tuple[bool, int, float, float]:
    """Sort key of jobs not started: those that must start by `due_s` first, then by
    priority, then the largest (GPUs x time left): big jobs are the hard ones to fit, and
    the ones whose region matters most."""
    left = job.remaining_s
    latest = job.deadline.timestamp() - left
    return (latest > due_s, -job.spec.priority, -job.spec.gpus * left, latest)


def _has_started(job: Job) -> bool:
    """Running, paused, or queued again after a checkpoint."""
    return job.state in (JobState.RUNNING, JobState.SUSPENDED) or job.run_s > 0


def _cleanest_regions(
    regions: np.ndarray,
    dl: int,
    k: int,
    gpus: int,
    ext: np.ndarray,
    used: np.ndarray,
    capacity: np.ndarray | None,
) -> list[int]:
    """`regions` ordered by the cost of their k cheapest slots before slot dl (slot 0 only
    when dl < k), cleanest first, counting only slots with room for `gpus` more GPUs
    (`capacity` None: no limit); a region with fewer than k such slots is left out."""
    if dl < k:
        k, dl = 1, 1
    vals = ext[regions, :dl]
    if capacity is not None and gpus:
        vals = np.where(used[regions, :dl] + gpus <= capacity[regions, None], vals, np.inf)
    costs = np.sort(vals, axis=1)[:, :k].sum(axis=1)
    order = np.argsort(costs, kind="stable")
    return regions[order[np.isfinite(costs[order])]].tolist()


def _wanted(best: tuple[int, int, float], r: int, s: int, cost_g: float) -> tuple[int, int] | None:
    """The job's own best plan where capacity made it take one dirtier by over 0.1 %."""
    if s < 0 or (best[0], best[1]) == (r, s) or cost_g <= best[2] * 1.001 + _EPS:
        return None
    return best[0], best[1]


@dataclass
class _Plan:
    region_i: int
    start: int  # slot; -1 when none
    cost_g: float
    now_cost_g: float
    run: np.ndarray | None = None
    remaining_s: float = 0.0
    planned_at: datetime | None = None  # a kept plan's own planned start
    latest_start: datetime | None = None
    energy_kwh: float = 0.0
    # (region, start) of the job's own best plan, where GPUs taken by others made it take
    # a dirtier one
    wanted: tuple[int, int] | None = None
    late: bool = False  # no GPUs before its latest start, which had not passed
    why_now: str = ""  # why it starts now though a later window is cleaner by the forecast


class CarbonPlanner:
    """gridshift's planner (see the module docstring)."""

    def __init__(self, config: CarbonPlannerConfig | None = None) -> None:
        self.config = config or CarbonPlannerConfig()

    # ---------------------------------------------------------------- entry point
    def plan(self, snapshot: Snapshot) -> list[Decision]:
        cfg = self.config
        slot_s = cfg.slot_s
        now = snapshot.now
        active = [j for j in snapshot.jobs if not j.state.terminal]
        if not active:
            return []
        far = max(
            (j.deadline - now).total_seconds() for j in active
        )  # no job needs slots past its deadline
        n_t = int(max(1, min(math.ceil(max(far, slot_s) / slot_s), cfg.horizon_s / slot_s)))
        # A noisy forecast is read over several days (its daily pattern repeats), then cut
        # back to the slots the jobs need.
        n_ctx = max(n_t, int(min(cfg.horizon_s, 4 * 86400.0) / slot_s)) if cfg.denoise else n_t
        grid = build_grid(snapshot, slot_s, n_ctx)
        inten = grid.intensity
        noise_measured = np.zeros(len(grid.regions), dtype=bool)
        measured = np.array(
            [
                np.nan
                if (sig := snapshot.regions.get(name)) is None
                or sig.forecast_error_g_per_kwh is None
                else float(sig.forecast_error_g_per_kwh)
                for name in grid.regions
            ]
        )
        # forecasts that have proven exact: a later plan on them chases no error
        exact_forecast = measured <= _EXACT_FORECAST_FRACTION * np.abs(inten).mean(axis=1)
        # a forecast not yet checked against measured values may be wrong by any amount: a
        # job waits for it only for a clear gain (`unproven_min_saving_fraction`)
        grid.unchecked = ~np.isfinite(measured)
        if cfg.denoise:
            inten = denoise_rows(
                inten,
                cfg.denoise_floor_fraction,
                cfg.denoise_length_s / slot_s,
                86400.0 / slot_s,
                measured,
                grid.known,
            )
            # held plans are made afresh only where the noise is measured, not just inferred
            # from the row's shape (so an agent that has yet to score its forecasts keeps
            # the plans it made)
            noise_measured = np.any(inten != grid.intensity, axis=1) & np.isfinite(measured)
            if n_ctx > n_t:
                inten = inten[:, :n_t]
                grid.intensity = grid.intensity[:, :n_t]
                grid.known = grid.known[:, :n_t]
        n_r = len(grid.regions)
        # Pad so windows that run past the horizon can be summed (unknown = the row mean).
        longest = max(math.ceil(j.remaining_s / slot_s) for j in active) + 2
        pad = np.repeat(inten.mean(axis=1, keepdims=True), longest, axis=1)
        ext = np.concatenate([inten, pad], axis=1)
        cum = np.zeros((n_r, ext.shape[1] + 1))
        cum[:, 1:] = np.cumsum(ext, axis=1)
        limited = bool(np.isfinite(grid.capacity).any())
        args = (snapshot, active, grid, ext, cum, n_t, noise_measured, exact_forecast, limited)
        as_run = (
            frozenset(j.id for j in active if self._straight(j, snapshot))
            if limited
            else frozenset()
        )

        def attempt(first: frozenset[str]) -> tuple[list[Decision], set[str]]:
            starved: set[str] = set()
            if as_run:
                decisions = self._decide(*args, as_run=as_run, first=first, starved=starved)
                if decisions is not None:
                    return decisions, starved
                starved.clear()
            out = self._decide(*args, as_run=frozenset(), first=first, starved=starved)
            assert out is not None
            return out, starved

        decisions, starved = attempt(frozenset())
        if starved and sum(1 for j in active if not _has_started(j)) <= cfg.repair_max_jobs:
            # Jobs that no GPUs are left for before their deadline are placed again ahead
            # of the others (a job that may run in several regions, or later, then takes
            # its next option); kept if fewer jobs are left without room.
            again, still = attempt(frozenset(starved))
            if len(still) < len(starved):
                decisions = again
        return decisions

    def _straight(self, job: Job, snapshot: Snapshot) -> bool:
        """Where GPUs are limited, an interruptible job that may run in several regions is
        first planned as one run that is never paused (see `_decide`)."""
        return (
            self.config.straight_relocatable
            and job.spec.interruptible
            # not one that is paused or queued again after a checkpoint: it resumes where
            # its checkpoint is, by its own plan
            and (job.state == JobState.RUNNING or not _has_started(job))
            and len(job_regions(job, snapshot.default_region)) > 1
        )

    def _decide(
        self,
        snapshot: Snapshot,
        active: list[Job],
        grid: Grid,
        ext: np.ndarray,
        cum: np.ndarray,
        n_t: int,
        noise_measured: np.ndarray,
        exact_forecast: np.ndarray,
        limited: bool,
        as_run: frozenset[str],
        first: frozenset[str],
        starved: set[str],
    ) -> list[Decision] | None:
        """Decisions on the slot grid. The interruptible jobs in `as_run` (ids, picked by
        `_straight`) are planned as jobs that run to the end once started; None if that
        leaves one of them no start by its latest start (the plan is then made with every
        interruptible job paused and resumed as its own plan says). Jobs not started whose
        ids are in `first` are placed before the others not started (of those that must
        start now, and of the rest); the ids of jobs not started that find no GPUs before
        their deadline are added to `starved`."""
        slot_s = self.config.slot_s
        now = snapshot.now
        used = np.zeros((len(grid.regions), ext.shape[1]))

        decisions: list[Decision] = []
        # Running jobs hold their GPUs (an interruptible one, those its plan runs in).
        for job in active:
            if job.spec.interruptible and job.id not in as_run:
                continue
            if job.state == JobState.RUNNING and job.spec.gpus and job.region in grid.index:
                n = math.ceil(job.remaining_s / slot_s - _EPS)
                used[grid.index[job.region], : max(1, n)] += job.spec.gpus

        fixed: list[Job] = []
        flexible: list[Job] = []
        for job in active:
            if job.spec.interruptible and job.id not in as_run:
                flexible.append(job)
            elif job.state in (JobState.PENDING, JobState.HELD):
                fixed.append(job)
            # running/suspended non-interruptible jobs are never touched
        due_s = now.timestamp() + slot_s

        def order(j: Job) -> tuple[bool, bool, int, float, float]:
            later, priority, size, latest = _placement_order(j, due_s)
            return (later, j.id not in first, priority, size, latest)

        fixed.sort(key=order if first else lambda j: _placement_order(j, due_s))
        # Interruptible jobs that have started (running or paused) are planned first, so
        # the capacity a paused job will resume on is not given to jobs not yet started;
        # then those not started that `first` puts ahead.
        started = [j for j in flexible if _has_started(j)]
        if started:
            decisions.extend(self._plan_flexible(started, grid, ext, used, limited, n_t, snapshot))
        ahead = [j for j in flexible if j.id in first and not _has_started(j)]
        if ahead:
            decisions.extend(
                self._plan_flexible(ahead, grid, ext, used, limited, n_t, snapshot, starved=starved)
            )
        before = used.copy() if limited else used
        plans = self._plan_fixed(
            fixed, grid, ext, cum, used, limited, n_t, snapshot, noise_measured, exact_forecast
        )
        # those that must start now come first in `fixed`
        n_due = next((i for i, j in enumerate(fixed) if _placement_order(j, due_s)[0]), len(fixed))
        if limited and any(
            p.start < 0 or (p.latest_start and grid.at(p.start) > p.latest_start)
            for p in plans[:n_due]
        ):
            # GPUs are short: a job that must start now cannot. Those that must start now
            # are then placed smallest first, so as many as fit meet their deadline.
            fixed[:n_due] = sorted(
                fixed[:n_due], key=lambda j: (-j.spec.priority, j.spec.gpus * j.remaining_s)
            )
            used[:] = before
            plans = self._plan_fixed(
                fixed, grid, ext, cum, used, limited, n_t, snapshot, noise_measured, exact_forecast
            )
        if as_run and any(
            p.start < 0 or (p.latest_start and grid.at(p.start) > p.latest_start)
            for j, p in zip(fixed, plans, strict=True)
            if j.id in as_run
        ):
            return None  # GPUs too short for whole runs: pausing may fit the jobs in
        for job, plan in zip(fixed, plans, strict=True):
            if plan.late:
                starved.add(job.id)
            decisions.extend(self._fixed_decisions(job, plan, grid, ext))
        fresh = [j for j in flexible if j.id not in first and not _has_started(j)]
        if fresh:
            decisions.extend(
                self._plan_flexible(
                    fresh,
                    grid,
                    ext,
                    used,
                    limited,
                    n_t,
                    snapshot,
                    largest_first=True,
                    starved=starved,
                )
            )
        if limited:
            decisions = self._fit_now(decisions, active, grid)
        # Pauses first: the GPUs they free are those that jobs started in this plan use.
        decisions.sort(key=lambda d: d.action != Action.SUSPEND)
        return decisions

    @staticmethod
    def _fit_now(decisions: list[Decision], jobs: list[Job], grid: Grid) -> list[Decision]:
        """The last check: the GPUs in use now, after this plan's pauses and starts, fit
        every region. Where they would not (a running job that no plan fits runs on), starts
        are kept least slack first while they fit; the others wait for the next tick."""
        by_id = {j.id: j for j in jobs}
        busy = np.zeros(len(grid.regions))
        for j in jobs:
            if j.state == JobState.RUNNING and j.region in grid.index:
                busy[grid.index[j.region]] += j.spec.gpus
        starts = []
        for d in decisions:
            dj = by_id.get(d.job_id or "")
            if dj is None:
                continue
            if d.action == Action.SUSPEND and dj.region in grid.index:
                busy[grid.index[dj.region]] -= dj.spec.gpus
            elif d.action in (Action.START, Action.RESUME) and dj.spec.gpus:
                starts.append((d, dj))
        total = busy.copy()
        for d, j in starts:
            total[grid.index.get(d.region or j.region or "", 0)] += j.spec.gpus
        if not (total > grid.capacity).any():
            return decisions
        # the least slack first, each where it still fits (a small start may fit where a
        # larger one with less slack did not)
        dropped: set[int] = set()
        for d, j in sorted(starts, key=lambda dj: dj[1].latest_start):
            ri = grid.index.get(d.region or j.region or "", 0)
            if busy[ri] + j.spec.gpus > grid.capacity[ri]:
                dropped.add(id(d))
            else:
                busy[ri] += j.spec.gpus
        out = []
        for d in decisions:
            if id(d) not in dropped:
                out.append(d)
            elif d.action == Action.START:
                j = by_id[d.job_id or ""]
                out.append(
                    _decision(
                        action=Action.HOLD,
                        reason=f"no GPUs free in {d.region} now; re-checking at the next tick "
                        f"(latest start {fmt_t(j.latest_start)})",
                        at=grid.now,
                        job_id=j.id,
                        region=d.region,
                        planned_start=grid.at(1),
                        expected_saving_g=0.0,
                        saving_is_estimate=True,
                        device_index=None,
                        power_limit_w=None,
                    )
                )
        return out

    # ---------------------------------------------------------------- fixed (non-interruptible)
    def _allowed(self, job: Job, grid: Grid, default_region: str) -> tuple[np.ndarray, bool]:
        """Mask of regions the job may use, and whether any of them is fresh."""
        mask = np.zeros(len(grid.regions), dtype=bool)
        for r in job_regions(job, default_region):
            mask[grid.index[r]] = True
        fresh = mask & grid.fresh
        if fresh.any():
            return fresh, True
        return mask, False

    def _plan_fixed(
        self,
        jobs: list[Job],
        grid: Grid,
        ext: np.ndarray,
        cum: np.ndarray,
        used: np.ndarray,
        limited: bool,
        n_t: int,
        snapshot: Snapshot,
        noise_measured: np.ndarray,
        exact_forecast: np.ndarray,
    ) -> list[_Plan]:
        cfg = self.config
        slot_s = cfg.slot_s
        now_s = snapshot.now.timestamp()
        n_j = len(jobs)
        if n_j == 0:
            return []
        n_r = len(grid.regions)
        rem = [j.remaining_s for j in jobs]
        d_slots = np.array(rem) / slot_s
        ls = np.array(
            [
                math.floor((j.deadline.timestamp() - r - now_s) / slot_s + _EPS)
                for j, r in zip(jobs, rem, strict=True)
            ]
        )
        in_time = ls >= 0  # the latest start has not passed
        ls = np.clip(ls, 0, n_t - 1)
        allowed = np.zeros((n_j, n_r), dtype=bool)
        has_fresh = np.zeros(n_j, dtype=bool)
        masks: dict[tuple[str, ...], tuple[np.ndarray, bool]] = {}
        for i, job in enumerate(jobs):
            key_r = tuple(job_regions(job, snapshot.default_region))
            got = masks.get(key_r)
            if got is None:
                got = masks[key_r] = self._allowed(job, grid, snapshot.default_region)
            allowed[i], has_fresh[i] = got
        power_kwh_per_slot = [expected_power_w(j) * slot_s / 3.6e6 for j in jobs]
        tiebreak = cfg.wait_tiebreak_fraction * float(np.mean(ext)) * np.arange(n_t)
        best_r = np.zeros(n_j, dtype=int)
        best_s = np.zeros(n_j, dtype=int)
        best_c = np.zeros(n_j)
        now_c = np.zeros(n_j)
        now_r = np.zeros(n_j, dtype=int)
        sums_by_d: dict[float, np.ndarray] = {}
        costs_by_d: dict[float, np.ndarray] = {}  # with the tie-break towards earlier starts
        keys = np.round(d_slots, 6)
        slots_t = np.arange(n_t)
        for d in np.unique(keys):
            members = np.nonzero(keys == d)[0]
            sums = window_sums(cum, ext, n_t, float(d))  # (R, T)
            sums_by_d[float(d)] = sums
            costs_by_d[float(d)] = cost = sums + tiebreak[None, :]
            ok_m = allowed[members][:, :, None] & (
                slots_t[None, None, :] <= ls[members][:, None, None]
            )
            c = np.where(ok_m, cost[None, :, :], np.inf)
            flat_c = c.reshape(len(members), -1)
            flat = flat_c.argmin(axis=1)
            r, s = np.divmod(flat, n_t)
            best_r[members], best_s[members] = r, s
            best_c[members] = sums[r, s]
            now_all = np.where(allowed[members], sums[:, 0][None, :], np.inf)
            now_r[members] = now_all.argmin(axis=1)
            now_c[members] = now_all.min(axis=1)
        free = np.repeat(grid.capacity[:, None], used.shape[1], axis=1) - used
        best_r_l, best_s_l, best_c_l = best_r.tolist(), best_s.tolist(), best_c.tolist()
        now_r_l, now_c_l, ls_l = now_r.tolist(), now_c.tolist(), ls.tolist()
        hyst = 1 + cfg.hysteresis_fraction
        # the least gain a job waits for: next to none on a forecast that has proven exact
        # (every gain it shows is real), more on one not yet checked
        min_gain = np.select(
            [grid.unchecked, exact_forecast],
            [
                max(cfg.min_saving_fraction, cfg.unproven_min_saving_fraction),
                min(cfg.min_saving_fraction, _EXACT_MIN_GAIN),
            ],
            cfg.min_saving_fraction,
        ).tolist()
        postpone = 1 + cfg.noisy_postpone_fraction
        sums_of = [sums_by_d[k] for k in keys.tolist()]
        costs_of = [costs_by_d[k] for k in keys.tolist()]
        durs = [math.ceil(d - _EPS) or 1 for d in d_slots.tolist()]
        fresh_l = has_fresh.tolist()
        plans: list[_Plan] = []
        displaced = False  # a job took a worse option for want of GPUs
        held_at: list[tuple[int, int] | None] = []
        wanted: list[tuple[int, int, float]] = []  # each job's plan before GPUs were counted
        for i, job in enumerate(jobs):
            r, s = best_r_l[i], best_s_l[i]
            sums = sums_of[i]
            e = power_kwh_per_slot[i]
            prev: tuple[int, int] | None = None
            carried: tuple[int, int] | None = None  # a noisy held plan not postponed
            why_now = ""
            if not fresh_l[i]:
                # fail open: no carbon preference, start now
                r = int(np.nonzero(allowed[i])[0][0])
                s = 0
            else:
                # hysteresis: keep an existing plan unless the new one is clearly better
                kept = False
                # A held plan changes only for a gain above the hysteresis; it is never
                # postponed (a later start chosen on each fresher forecast is how a planner
                # chases its forecast's errors up to the deadline), and once its start has
                # come, it starts. Where the forecast is read through its measured noise, the
                # plan is made afresh at every tick instead: the estimate is the best there
                # is, and the slot waited for, once measured, may prove dirtier than estimated.
                # It is still postponed only for a gain above `noisy_postpone_fraction`: the
                # cleanest of many noisy slots tends to be cleaner by the forecast than in fact.
                held_region = grid.index.get(job.region or "", r)
                if job.state == JobState.HELD:
                    prev = self._previous(job, grid, ls_l[i], allowed[i], snapshot.now)
                if prev is not None and noise_measured[held_region]:
                    if s > prev[1] and sums[prev] <= best_c_l[i] * postpone + _EPS:
                        r, s = carried = prev
                    prev = None  # made afresh: neither the hysteresis nor the exact plan keep it
                elif prev is not None and (
                    prev[1] == 0 or s > prev[1] or sums[prev] <= best_c_l[i] * hyst + _EPS
                ):
                    r, s = prev
                    kept = True
                if s > 0:
                    planned = float(sums[r, s])
                    gain = now_c_l[i] - planned
                    if kept:
                        # starting early is a change of plan too
                        early = now_c_l[i] * hyst <= planned + _EPS
                    else:
                        early = gain <= planned * min_gain[r] + _EPS
                    if early:
                        why_now = self._why_early(grid, r, s, gain, planned, kept, min_gain[r])
                        r, s = now_r_l[i], 0
            dur = durs[i]
            g = job.spec.gpus
            held_at.append(prev)
            wanted.append((r, s, float(sums[r, s]) * e))
            if limited and g:
                if free[r, s : s + dur].min() < g:
                    displaced = True
                    r, s = self._fit(costs_of[i], allowed[i], ls_l[i], free, g, dur, n_t)
                if s >= 0:
                    free[r, s : s + dur] -= g
            cost = float(sums[r, s]) * e if s >= 0 else float("nan")
            keep_at = job.planned_start if s > 0 and (r, s) in (prev, carried) else None
            plans.append(
                _Plan(
                    region_i=r,
                    start=s,
                    planned_at=keep_at,
                    cost_g=cost,
                    now_cost_g=now_c_l[i] * e,
                    remaining_s=rem[i],
                    latest_start=job.deadline - timedelta(seconds=rem[i]),
                    energy_kwh=e * rem[i] / slot_s,
                    wanted=_wanted(wanted[i], r, s, cost),
                    why_now=why_now if s == 0 else "",
                )
            )
        if limited and displaced and 2 <= n_j <= cfg.exact_max_jobs and has_fresh.all():
            cap_left = np.repeat(grid.capacity[:, None], used.shape[1], axis=1) - used
            # a held plan the greedy pass keeps (see hysteresis) is not postponed either,
            # unless every region the job may run in has a forecast that has proven exact
            last = [int(x) for x in ls]
            for i, held in enumerate(held_at):
                if held is not None and not exact_forecast[allowed[i]].all():
                    last[i] = min(last[i], held[1])
            # the programme's size: every (region, start) option times the slots it covers
            terms = int(np.sum(allowed.sum(axis=1) * (np.array(last) + 1) * np.array(durs)))
            if terms <= _EXACT_MAX_TERMS:
                exact = self._exact_fixed(
                    jobs,
                    plans,
                    ext,
                    cap_left,
                    allowed,
                    last,
                    d_slots,
                    held_at,
                    wanted,
                    sums_of,
                    power_kwh_per_slot,
                )
                if exact is not None:
                    plans, free = exact
        if limited:
            finite = np.isfinite(grid.capacity)
            used[finite] = grid.capacity[finite, None] - free[finite]
            for i, p in enumerate(plans):
                p.late = bool(in_time[i]) and (p.start < 0 or p.start > ls[i])
        return plans

    def _exact_fixed(
        self,
        jobs: list[Job],
        greedy: list[_Plan],
        ext: np.ndarray,
        cap_left: np.ndarray,
        allowed: np.ndarray,
        last_start: list[int],
        d_slots: np.ndarray,
        held_at: list[tuple[int, int] | None],
        wanted: list[tuple[int, int, float]],
        sums_of: list[np.ndarray],
        power_kwh_per_slot: list[float],
    ) -> tuple[list[_Plan], np.ndarray] | None:
        """The jobs' joint least-emission plan on the GPUs left (the oracle's programme on
        the forecast), where placing them one by one made some take a worse option. Used
        only when proven optimal within the time limit and cheaper than `greedy`; job i starts
        by `last_start[i]`."""
        # imported here: scipy's solver loads only once GPUs run short, not at start-up
        from . import oracle

        cfg = self.config
        short = any(p.start < 0 for p in greedy)
        greedy_g = math.inf if short else sum(p.cost_g for p in greedy)
        # the same tie-break as the greedy pass: of equal plans, the earlier start
        rows = ext + cfg.wait_tiebreak_fraction * float(np.mean(ext)) * np.arange(ext.shape[1])
        ojs = []
        for i, job in enumerate(jobs):
            d = float(d_slots[i])
            ojs.append(
                oracle.OracleJob(
                    job_id=job.id,
                    release=0,
                    duration=d,
                    deadline=last_start[i] + d,
                    gpus=job.spec.gpus,
                    energy_kwh_per_slot=power_kwh_per_slot[i],
                    regions=np.nonzero(allowed[i])[0].tolist(),
                )
            )
        try:
            res = oracle.solve(ojs, rows, cap_left, time_limit_s=cfg.exact_time_limit_s)
        except ValidationError:  # no schedule meets every deadline: keep the greedy plan
            return None
        if not res.exact:
            return None
        plans: list[_Plan] = []
        free = cap_left.copy()
        for i, job in enumerate(jobs):
            r, s, d = res.schedule[job.id][0]
            free[r, s : s + (math.ceil(d - _EPS) or 1)] -= job.spec.gpus
            e = power_kwh_per_slot[i]
            g = greedy[i]
            cost = float(sums_of[i][r, s]) * e
            plans.append(
                _Plan(
                    region_i=int(r),
                    start=int(s),
                    planned_at=job.planned_start if held_at[i] == (r, s) and s > 0 else None,
                    cost_g=cost,
                    wanted=_wanted(wanted[i], r, s, cost),
                    now_cost_g=g.now_cost_g,
                    remaining_s=g.remaining_s,
                    latest_start=g.latest_start,
                    energy_kwh=g.energy_kwh,
                )
            )
        if sum(p.cost_g for p in plans) >= greedy_g * (1 - 1e-9):
            return None
        return plans, free

    def _previous(
        self, job: Job, grid: Grid, ls: int, allowed: np.ndarray, now: datetime
    ) -> tuple[int, int] | None:
        if job.state != JobState.HELD or job.planned_start is None or job.region is None:
            return None
        ri = grid.index.get(job.region)
        if ri is None or not allowed[ri]:
            return None
        # the slot the planned start falls in, or the current one once it is due; between
        # ticks shorter than a slot the planned time itself is carried over unchanged
        ahead = (job.planned_start - now).total_seconds() / self.config.slot_s
        s = max(0, math.ceil(ahead - _EPS))
        if s > ls:
            return None
        return ri, s

    @staticmethod
    def _fit(
        cost: np.ndarray,
        allowed: np.ndarray,
        ls: int,
        free: np.ndarray,
        g: int,
        dur: int,
        n_t: int,
    ) -> tuple[int, int]:
        """The cheapest start by `cost` (R, T) that fits the capacity left; past the latest
        start only if it must."""
        rows = allowed.nonzero()[0]
        n_s = min(n_t, free.shape[1] - dur)
        # blocked slots counted cumulatively: a window is free where the count does not grow
        cnt = np.zeros((rows.size, n_s + dur + 1), dtype=np.int32)
        np.cumsum(free[rows, : n_s + dur] < g, axis=1, dtype=np.int32, out=cnt[:, 1:])
        feasible = cnt[:, dur : dur + n_s] == cnt[:, :n_s]
        lim = min(ls + 1, n_s)
        c = np.where(feasible[:, :lim], cost[rows, :lim], np.inf)
        flat = int(c.argmin())
        if np.isfinite(c.flat[flat]):
            r, st = divmod(flat, lim)
            return int(rows[r]), int(st)
        late = np.nonzero(feasible.any(axis=0))[0]
        if late.size:
            st = int(late[0])
            return int(rows[int(np.nonzero(feasible[:, st])[0][0])]), st
        return int(rows[0]), -1

    def _fixed_decisions(
        self, job: Job, plan: _Plan, grid: Grid, ext: np.ndarray
    ) -> list[Decision]:
        now = grid.now
        region = grid.regions[plan.region_i]
        out: list[Decision] = []
        mk = _decision
        latest = plan.latest_start or job.latest_start
        if plan.start < 0:
            return [
                mk(
                    action=Action.HOLD,
                    reason=f"no capacity left in any allowed region within the horizon; "
                    f"re-checking at the next tick (latest start {fmt_t(job.latest_start)})",
                    at=now,
                    job_id=job.id,
                    region=region,
                    planned_start=grid.at(1),
                    expected_saving_g=0.0,
                    saving_is_estimate=True,
                    device_index=None,
                    power_limit_w=None,
                )
            ]
        saving = plan.now_cost_g - plan.cost_g
        dur_s = plan.remaining_s
        start_t = plan.planned_at or grid.at(plan.start)
        mean = plan.cost_g / max(plan.energy_kwh, _EPS)
        now_mean = plan.now_cost_g / max(plan.energy_kwh, _EPS)
        if plan.start == 0:
            ri = grid.index.get(job.region or "", -1)
            if job.region is not None and ri != plan.region_i:
                out.append(
                    mk(
                        action=Action.RELOCATE,
                        reason=f"{region} is the cleanest allowed region "
                        f"{'with free GPUs ' if plan.wanted else ''}now "
                        f"({mean:.0f} g/kWh over the run)",
                        at=now,
                        job_id=job.id,
                        region=region,
                        planned_start=None,
                        expected_saving_g=None,
                        saving_is_estimate=True,
                        device_index=None,
                        power_limit_w=None,
                    )
                )
            if not grid.fresh[plan.region_i]:
                why = _fail_open(grid, region)
            elif (latest - now).total_seconds() < self.config.slot_s:
                when = "has passed" if latest <= now else "is less than a slot away"
                why = f"latest start {fmt_t(latest)} {when}: starting to meet the deadline"
            elif plan.why_now:
                why = f"{plan.why_now}; {mean:.0f} g/kWh over the run in {region} now"
            else:
                room = "" if plan.wanted is None else " with free GPUs"
                why = (
                    f"now is the cleanest start{room} before the latest start "
                    f"{fmt_t(latest)}: {mean:.0f} g/kWh over the run in {region}"
                )
            if plan.wanted is not None:
                why += f"; {self._short_of(plan, grid, dur_s)}"
            out.append(
                mk(
                    action=Action.START,
                    reason=why,
                    at=now,
                    job_id=job.id,
                    region=region,
                    planned_start=None,
                    expected_saving_g=max(0.0, saving),
                    saving_is_estimate=True,
                    device_index=None,
                    power_limit_w=None,
                )
            )
            return out
        end_t = start_t + timedelta(seconds=dur_s)
        out.append(
            mk(
                action=Action.HOLD,
                reason=f"window {fmt_t(start_t)}-{fmt_t(end_t)[6:]} in {region} averages "
                f"{mean:.0f} g/kWh vs {now_mean:.0f} now; latest start {fmt_t(latest)}"
                + ("" if plan.wanted is None else f"; {self._short_of(plan, grid, dur_s)}"),
                at=now,
                job_id=job.id,
                region=region,
                planned_start=start_t,
                expected_saving_g=saving,
                saving_is_estimate=True,
                device_index=None,
                power_limit_w=None,
            )
        )
        return out

    @staticmethod
    def _why_early(
        grid: Grid, r: int, s: int, gain: float, planned: float, kept: bool, min_gain: float
    ) -> str:
        """Why a job starts now though the window at (r, s) is cleaner by the forecast, or
        was when it was planned (sums of g/kWh over the run; gain = now - planned)."""
        then = f"{fmt_t(grid.at(s))} in {grid.regions[r]}"
        share = 100 * gain / planned if planned > 0 else 0.0
        if kept:
            return (
                f"starting early: now is cleaner than the window planned at {then} by the "
                f"latest forecast ({-share:.0f} % less carbon)"
            )
        return f"waiting until {then} {_too_small(share, min_gain, bool(grid.unchecked[r]))}"

    @staticmethod
    def _short_of(plan: _Plan, grid: Grid, dur_s: float) -> str:
        """Why a job does not get its own best window: other jobs have its GPUs."""
        assert plan.wanted is not None
        r, s = plan.wanted
        start = grid.at(s)
        end = start + timedelta(seconds=dur_s)
        return (
            f"the cleaner window {fmt_t(start)}-{fmt_t(end)[6:]} in {grid.regions[r]} "
            "is left to other jobs: not enough GPUs for all"
        )

    # ---------------------------------------------------------------- interruptible
    def _plan_flexible(
        self,
        jobs: list[Job],
        grid: Grid,
        ext: np.ndarray,
        used: np.ndarray,
        limited: bool,
        n_t: int,
        snapshot: Snapshot,
        largest_first: bool = False,
        starved: set[str] | None = None,
    ) -> list[Decision]:
        """Plans for interruptible jobs (see `solve_interruptible`), each taking the GPUs it
        uses; the ids of jobs not started that find no GPUs before their deadline are added
        to `starved`."""
        cfg = self.config
        slot_s = cfg.slot_s
        now = snapshot.now
        out: list[Decision] = []
        specs: list[_IntJob] = []
        failopen: list[tuple[Job, int, int]] = []
        cap = grid.capacity if limited else None

        def region_for(regions: np.ndarray, dl: int, k: int, gpus: int) -> int:
            """Cleanest with room; where none has room, cleanest regardless of capacity."""
            with_room = _cleanest_regions(regions, dl, k, gpus, ext, used, cap)
            return (with_room or _cleanest_regions(regions, dl, k, 0, ext, used, None))[0]

        if largest_first:  # as for non-interruptible jobs
            due_s = now.timestamp() + slot_s
            jobs = sorted(jobs, key=lambda j: _placement_order(j, due_s))
        else:  # least slack first
            jobs = sorted(jobs, key=lambda j: (j.latest_start, -j.spec.priority))
        for job in jobs:
            allowed, has_fresh = self._allowed(job, grid, snapshot.default_region)
            state = {JobState.RUNNING: 2, JobState.SUSPENDED: 1}.get(job.state, 0)
            if state == 0 and job.run_s > 0:
                state = 1  # requeued after a checkpoint
            ov_s = job.spec.checkpoint_cost_s
            left_s = (job.deadline - now).total_seconds()
            # A suspended job pays one checkpoint to resume (in k); checkpoints the plan adds
            # are checked after solving (see _deadline_safe).
            work_s = job.remaining_s + (ov_s if state == 1 else 0.0)
            k = max(1, math.ceil(work_s / slot_s - _EPS))
            dl = min(math.floor(left_s / slot_s + _EPS), n_t)
            if state in (1, 2) and job.region in grid.index:
                ri = grid.index[job.region]  # a started job stays where it is
                has_fresh = bool(grid.fresh[ri])
            else:
                cand = np.nonzero(allowed)[0]
                ri = region_for(cand, dl, k, job.spec.gpus)
            if not has_fresh or dl < k:
                failopen.append((job, ri, k))
                continue
            dl_given = dl
            if limited and job.spec.gpus and dl > k and np.isfinite(grid.capacity[ri]):
                # Where GPUs are shared, a plan ends a slot before the deadline: a paused job
                # that must wait for GPUs another job holds still finishes in time.
                dl -= 1
            m = max(1, math.ceil((job.spec.min_run_s or cfg.default_min_run_s) / slot_s - _EPS))
            specs.append(
                _IntJob(
                    pos=len(specs),
                    job=job,
                    state=state,
                    k=k,
                    m=min(m, k),
                    deadline_slot=dl,
                    overhead_frac=ov_s / slot_s,
                    work_slots=work_s / slot_s,
                    deadline_full=dl,
                    held_back=dl < dl_given,
                    energy_kwh=expected_power_w(job) * slot_s / 3.6e6,
                    region_i=ri,
                    regions=None if state in (1, 2) else cand,
                )
            )
        for job, ri, k in failopen:
            g = job.spec.gpus
            if limited and g and job.state != JobState.RUNNING:
                # a paused job resumes while its GPUs are free now, even if they are not
                # free to the end: waiting can only make it later
                short = used[ri, :1] if job.state == JobState.SUSPENDED else used[ri, :k]
                if np.any(short + g > grid.capacity[ri]):
                    if job.state != JobState.SUSPENDED:
                        out.append(self._no_capacity(job, grid, ri))
                        if starved is not None and not _has_started(job):
                            starved.add(job.id)
                    continue
                used[ri, :k] += g
            out.extend(self._run_now(job, grid, ri))
        if not specs:
            return out
        horizon = max(s.deadline_slot + s.held_back for s in specs)
        wait_frac = cfg.interruptible_wait_cost_fraction

        def costs(batch: list[_IntJob], width: int = horizon) -> np.ndarray:
            cost = np.full((len(batch), width), BIG)
            for b, s in enumerate(batch):
                row = ext[s.region_i, : s.deadline_slot] * s.energy_kwh
                if limited and s.job.spec.gpus:
                    blocked = (
                        used[s.region_i, : s.deadline_slot] + s.job.spec.gpus
                        > grid.capacity[s.region_i]
                    )
                    row = np.where(blocked, BIG, row)
                cost[b, : s.deadline_slot] = row
            return cost

        def solve(batch: list[_IntJob]) -> tuple[np.ndarray, ...]:
            """A later batch, on the horizon its own deadlines need, widened back."""
            width = max(s.deadline_slot for s in batch)
            v, r, f, c = solve_interruptible(
                costs(batch, width), batch, width, wait_frac, cfg.interruptible_start_by_cleanest
            )
            wide = np.zeros((len(batch), horizon), dtype=bool)
            wide[:, :width] = r
            return v, wide, f, c

        def solve_checked(batch: list[_IntJob]) -> tuple[np.ndarray, ...]:
            """`solve`, then a plan whose extra checkpoints would push its job past the
            deadline is solved again with that much time held back; if no pause fits, the
            job runs straight through."""
            v, r, f, c = solve(batch)
            short = self._deadline_short(batch, r)
            redo = [i for i in range(len(batch)) if short[i] > 0]
            if redo:
                sub = []
                for i in redo:
                    s = batch[i]
                    s.deadline_slot = max(s.k, s.deadline_slot - short[i])
                    sub.append(s)
                v2, r2, f2, c2 = solve(sub)
                again = self._deadline_short(sub, r2)
                for n, i in enumerate(redo):
                    v[i], r[i], f[i], c[i] = v2[n], r2[n], f2[n], c2[n]
                    if again[n] > 0:
                        r[i] = False
                        r[i, : batch[i].k] = True
                        f[i] = 0
                        v[i] = c[i]
            return v, r, f, c

        n_s = len(specs)
        value, cont = np.full(n_s, BIG), np.full(n_s, BIG)
        run, first = np.zeros((n_s, horizon), dtype=bool), np.zeros(n_s, dtype=int)

        def solve_into(idx: list[int]) -> None:
            v, r, f, c = solve_checked([specs[b] for b in idx])
            value[idx], run[idx], first[idx], cont[idx] = v, r, f, c
            for b in idx:
                straight_now(b)
            # A job not yet started that no plan fits with the slot held back may still
            # take a plan that uses that slot but never pauses (it holds its GPUs once
            # started, so it has no resume to wait for).
            late = [
                b for b in idx if value[b] >= BIG / 2 and specs[b].state == 0 and specs[b].held_back
            ]
            if late:
                for b in late:
                    specs[b].deadline_slot += 1
                    specs[b].deadline_full += 1
                v, r, f, c = solve_checked([specs[b] for b in late])
                for n, b in enumerate(late):
                    specs[b].deadline_slot -= 1
                    specs[b].deadline_full -= 1
                    if v[n] < BIG / 2 and _runs(r[n]) == 1:
                        value[b], run[b], first[b], cont[b] = v[n], r[n], f[n], c[n]

        def straight_now(b: int) -> None:
            """A job not started whose plan waits, on a forecast not yet checked against
            measured values, for less than `unproven_min_saving_fraction` of its emissions
            runs straight through from now instead, where that fits."""
            s = specs[b]
            ri, k = s.region_i, s.k
            if (
                not grid.unchecked[ri]
                or s.state != 0
                or first[b] == 0
                or k > s.deadline_slot
                or value[b] >= BIG / 2
            ):
                return
            if (
                limited
                and s.job.spec.gpus
                and np.any(used[ri, :k] + s.job.spec.gpus > grid.capacity[ri])
            ):
                return
            naive = float(ext[ri, :k].sum()) * s.energy_kwh
            gain = max(0.0, naive - float(value[b])) / naive if naive > 0 else 0.0
            if gain >= cfg.unproven_min_saving_fraction:
                return
            run[b] = False
            run[b, :k] = True
            value[b] = cont[b] = naive
            first[b] = 0
            s.why_now = f"waiting {_too_small(100 * gain, cfg.unproven_min_saving_fraction, True)}"

        def no_plan(b: int) -> None:
            """No plan fits the GPUs left before job b's deadline. A running job runs on,
            holding its GPUs; a paused one resumes if its GPUs are free now (waiting for a
            plan can only make it later); a job not started is not planned."""
            s = specs[b]
            g, ri, k = s.job.spec.gpus, s.region_i, s.k
            resume = s.state == 1 and used[ri, 0] + g <= grid.capacity[ri]
            run[b], value[b] = False, BIG
            if starved is not None and s.state == 0:
                starved.add(s.job.id)
            if s.state == 2 or resume:
                used[ri, :k] += g
            if resume:
                run[b, : min(k, horizon)] = True
                value[b] = cont[b] = float(ext[ri, :k].sum()) * s.energy_kwh
                first[b] = 0
                s.why_now = (
                    "no plan fits the GPUs left before the deadline: resuming while GPUs are free"
                )

        def commit(b: int, round_i: int) -> bool:
            """Take the GPUs job b's plan uses; False if it does not fit (yet)."""
            s = specs[b]
            g, ri = s.job.spec.gpus, s.region_i
            slots = run[b].nonzero()[0]
            movable = s.regions is not None and s.regions.size > 1
            if round_i == _ROUNDS:
                # last round: one by one against what is left, in each region it may use
                # (cleanest first) until one has room
                tries = [s.region_i]
                if movable:
                    assert s.regions is not None
                    room = _cleanest_regions(s.regions, s.deadline_slot, s.k, g, ext, used, cap)
                    tries = room or tries
                for ri in tries:
                    s.region_i = ri
                    solve_into([b])
                    if value[b] < BIG / 2:
                        break
                ri = s.region_i
                slots = run[b].nonzero()[0]
            if value[b] >= BIG / 2:
                if movable and round_i < _ROUNDS:
                    return False  # no room here: another region, next round
                no_plan(b)
                return True
            if s.state == 2 and not run[b, 0] and not self._pauses(s, value[b], cont[b], ext, grid):
                slots = np.arange(min(s.k, used.shape[1]))  # runs on, GPUs held
            if np.any(used[ri, slots] + g > grid.capacity[ri]):
                return False
            used[ri, slots] += g
            return True

        if not limited:
            solve_into(list(range(n_s)))
        else:
            # Plans are committed in priority order, each taking the GPUs it uses. The first
            # pass goes in chunks, each solved against the capacity the chunks before it
            # took (solved all at once, most plans would want the same slots); plans that
            # no longer fit are solved again, in batches, against the capacity left (a few
            # rounds, then one by one).
            no_gpus = [b for b, s in enumerate(specs) if not s.job.spec.gpus]
            if no_gpus:
                solve_into(no_gpus)
            pending: list[int] = []
            with_gpus = [b for b, s in enumerate(specs) if s.job.spec.gpus]
            for lo in range(0, len(with_gpus), _CHUNK):
                chunk = with_gpus[lo : lo + _CHUNK]
                solve_into(chunk)
                pending += [b for b in chunk if not commit(b, 0)]
            for round_i in range(1, _ROUNDS + 1):
                if not pending:
                    break
                for b in pending:  # a job not yet started may go where capacity is left
                    s = specs[b]
                    if s.regions is not None and s.regions.size > 1:
                        s.region_i = region_for(s.regions, s.deadline_slot, s.k, s.job.spec.gpus)
                if round_i < _ROUNDS:
                    solve_into(pending)
                pending = [b for b in pending if not commit(b, round_i)]
            for b in pending:  # still no room after every round
                no_plan(b)
        for b, s in enumerate(specs):
            out.extend(
                self._flex_decisions(
                    s, float(value[b]), float(cont[b]), run[b], int(first[b]), grid, ext
                )
            )
        return out

    def _pauses(self, s: _IntJob, value: float, cont: float, ext: np.ndarray, grid: Grid) -> bool:
        """Whether a running job whose best plan pauses now is paused: only if that plan
        beats the best plan that runs on (checkpoint counted) by more than the hysteresis
        share of a slot's emissions (and, on a forecast not yet checked against measured
        values, by `unproven_min_saving_fraction` of the plan's emissions). A job no plan
        fits runs on."""
        if value >= BIG / 2:
            return False
        cfg = self.config
        margin = cfg.suspend_margin_fraction * float(ext[s.region_i, 0]) * s.energy_kwh
        if grid.unchecked[s.region_i]:
            margin = max(margin, cfg.unproven_min_saving_fraction * cont)
        return bool(value < cont - margin)

    @staticmethod
    def _deadline_short(specs: list[_IntJob], run: np.ndarray) -> list[int]:
        """Slots by which each plan overruns its deadline once its checkpoints are paid."""
        if not specs:
            return []
        run = run.astype(bool, copy=False)
        starts = run[:, 0] + np.count_nonzero(run[:, 1:] & ~run[:, :-1], axis=1)
        state = np.array([s.state for s in specs])
        # the first run costs no checkpoint unless the job is running and pauses first
        free = (state != 2) | run[:, 0]
        work = np.array([s.work_slots for s in specs])
        overhead = np.array([s.overhead_frac for s in specs])
        k = np.array([s.k for s in specs])
        deadline = np.array([s.deadline_full for s in specs])
        over = work + overhead * np.maximum(0, starts - free) - k
        last = np.where(run.any(axis=1), run.shape[1] - np.argmax(run[:, ::-1], axis=1), 0)
        late = np.where(over > _EPS, last + np.ceil(over - _EPS) - deadline, 0)
        return np.maximum(0, late).astype(int).tolist()

    @staticmethod
    def _no_capacity(job: Job, grid: Grid, ri: int) -> Decision:
        return _decision(
            action=Action.HOLD,
            reason=f"no capacity left in {grid.regions[ri]} now although the deadline "
            f"{fmt_t(job.deadline)} needs it; re-checking at the next tick",
            at=grid.now,
            job_id=job.id,
            region=grid.regions[ri],
            planned_start=grid.at(1),
            expected_saving_g=0.0,
            saving_is_estimate=True,
            device_index=None,
            power_limit_w=None,
        )

    def _run_now(self, job: Job, grid: Grid, ri: int) -> list[Decision]:
        region = grid.regions[ri]
        if not grid.fresh[ri]:
            reason = _fail_open(grid, region)
        else:
            reason = f"deadline {fmt_t(job.deadline)} needs every slot from now: running"
        if job.state == JobState.RUNNING:
            return []
        action = Action.RESUME if job.state == JobState.SUSPENDED else Action.START
        return [
            _decision(
                action=action,
                reason=reason,
                at=grid.now,
                job_id=job.id,
                region=region,
                planned_start=None,
                expected_saving_g=0.0,
                saving_is_estimate=True,
                device_index=None,
                power_limit_w=None,
            )
        ]

    def _flex_decisions(
        self,
        s: _IntJob,
        value: float,
        cont: float,
        run: np.ndarray,
        first: int,
        grid: Grid,
        ext: np.ndarray,
    ) -> list[Decision]:
        job = s.job
        now = grid.now
        region = grid.regions[s.region_i]
        row = ext[s.region_i] * s.energy_kwh
        # Reference: run continuously from now (no checkpoint).
        naive = float(row[: s.k].sum())
        saving = naive - value if value < BIG / 2 else 0.0
        runs_now = bool(run[0]) if run.size else True
        mk = _decision
        planned = np.nonzero(run)[0]
        n_seg = _runs(run)
        mean = float(ext[s.region_i, planned].mean()) if planned.size else float(ext[s.region_i, 0])
        now_i = float(ext[s.region_i, 0])
        desc = (
            f"{len(planned)} slots in {n_seg} run(s) before {fmt_t(job.deadline)} at "
            f"{mean:.0f} g/kWh vs {now_i:.0f} now"
        )
        base: dict[str, Any] = dict(
            at=now,
            job_id=job.id,
            region=region,
            saving_is_estimate=True,
            device_index=None,
            power_limit_w=None,
        )
        if value >= BIG / 2 and s.state != 2:
            if job.state == JobState.SUSPENDED:
                return []
            return [
                mk(
                    action=Action.HOLD,
                    reason=f"no capacity left in {region} before the deadline "
                    f"{fmt_t(job.deadline)}; re-checking at the next tick",
                    planned_start=grid.at(1),
                    expected_saving_g=0.0,
                    **base,
                )
            ]
        if s.state == 2:
            if runs_now:
                return []
            if not self._pauses(s, value, cont, ext, grid):
                return []
            nxt = planned[0] if planned.size else 0
            return [
                mk(
                    action=Action.SUSPEND,
                    reason=f"pausing until {fmt_t(grid.at(int(nxt)))}: {desc}; "
                    f"the checkpoint is worth it",
                    planned_start=grid.at(int(nxt)),
                    expected_saving_g=saving,
                    **base,
                )
            ]
        if runs_now:
            action = Action.RESUME if job.state == JobState.SUSPENDED else Action.START
            return [
                mk(
                    action=action,
                    reason=f"{s.why_now or 'running now'}: {desc}",
                    planned_start=None,
                    expected_saving_g=max(0.0, saving),
                    **base,
                )
            ]
        if job.state == JobState.SUSPENDED:
            return []  # stays suspended; the reason was given when it was paused
        start = first if first > 0 else (int(planned[0]) if planned.size else 1)
        return [
            mk(
                action=Action.HOLD,
                reason=f"waiting until {fmt_t(grid.at(start))}: {desc}",
                planned_start=grid.at(start),
                expected_saving_g=saving,
                **base,
            )
        ]
