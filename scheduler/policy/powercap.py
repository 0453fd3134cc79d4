"""Power-cap policy: from grid carbon intensity to a GPU power limit. Pure, no I/O.

The curve (settings `nvml.curve`) maps intensity (gCO2eq/kWh) to a cap in percent of the
device's default limit, linearly between its points and flat beyond the ends. With the
default curve a GPU runs at 100 % up to 300 g/kWh and is capped to 70 % at 500 g/kWh or more.

Jobs on the device can loosen the cap, never tighten it:

- `power_cap_opt_out`: the device keeps its default limit while the job runs on it;
- `max_slowdown` s (0.2 = the job accepts running up to 20 % longer): the cap is not set
  below default / (1 + s). This assumes runtime grows at most in inverse proportion to the
  power limit, the worst case for a power-bound kernel (memory-bound work slows far less),
  so the job's bound holds.

Fail-safe: without a fresh intensity signal the target is the default limit (fail open).
The result is clamped to the device's [min, max] limit range.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..config import PowerCurvePoint
from ..models import Action, Decision, JobState, Snapshot

LIMIT_TOLERANCE_W = 1.0
"""Targets within this of the current limit are no change (NVML rounds to milliwatts)."""


@dataclass(frozen=True)
class JobCapPrefs:
    job_id: str
    opt_out: bool = False
    max_slowdown: float | None = None


@dataclass(frozen=True)
class CapTarget:
    limit_w: float
    reason: str
    is_default: bool


def curve_pct(curve: Sequence[PowerCurvePoint], intensity_g_per_kwh: float) -> float:
    """Cap in percent of the default limit for an intensity (linear, flat beyond the ends)."""
    if not curve:
        return 100.0
    points = sorted(curve, key=lambda p: p.intensity_g_per_kwh)
    if intensity_g_per_kwh <= points[0].intensity_g_per_kwh:
        return points[0].cap_pct
    for a, b in itertools.pairwise(points):
        if intensity_g_per_kwh <= b.intensity_g_per_kwh:
            span = b.intensity_g_per_kwh - a.intensity_g_per_kwh
            if span <= 0:
                return b.cap_pct
            frac = (intensity_g_per_kwh - a.intensity_g_per_kwh) / span
            return a.cap_pct + frac * (b.cap_pct - a.cap_pct)
    return points[-1].cap_pct


def target_limit_w(
    curve: Sequence[PowerCurvePoint],
    intensity_g_per_kwh: float | None,
    *,
    signal_fresh: bool,
    default_w: float,
    min_w: float,
    max_w: float,
    jobs: Iterable[JobCapPrefs] = (),
) -> CapTarget:
    """The limit a device should have now, and why."""

    def clamp(w: float) -> float:
        return min(max(w, min_w), max_w)

    if intensity_g_per_kwh is None or not signal_fresh:
        return CapTarget(clamp(default_w), "no fresh carbon signal: default power limit", True)
    jobs = list(jobs)
    opted_out = [j.job_id for j in jobs if j.opt_out]
    if opted_out:
        return CapTarget(
            clamp(default_w),
            f"job {', '.join(opted_out)} opted out of power capping: default power limit",
            True,
        )
    pct = curve_pct(curve, intensity_g_per_kwh)
    limit_w = default_w * pct / 100
    reason = f"grid at {intensity_g_per_kwh:.0f} g/kWh: cap at {pct:.0f}% of {default_w:.0f} W"
    floors = [
        (default_w / (1 + j.max_slowdown), j.job_id) for j in jobs if j.max_slowdown is not None
    ]
    if floors:
        floor_w, who = max(floors)
        if floor_w > limit_w:
            limit_w = floor_w
            reason += f", raised to {floor_w:.0f} W for job {who}'s max_slowdown"
    limit_w = clamp(limit_w)
    return CapTarget(limit_w, reason, abs(limit_w - clamp(default_w)) < LIMIT_TOLERANCE_W)


def plan_caps(
    snapshot: Snapshot, curve: Sequence[PowerCurvePoint], region: str | None = None
) -> list[Decision]:
    """CAP/UNCAP decisions for every GPU in the snapshot whose limit should change.

    The devices' intensity is that of `region` (default: the snapshot's default region):
    the GPUs of one host share one grid. A device without limit information is left alone.
    """
    region = region or snapshot.default_region
    signal = snapshot.regions.get(region)
    intensity = (
        signal.current.intensity_g_per_kwh if signal is not None and signal.current else None
    )
    fresh = bool(signal is not None and signal.fresh)
    running = [j for j in snapshot.jobs if j.state == JobState.RUNNING]
    out: list[Decision] = []
    for gpu in snapshot.gpus:
        if gpu.default_limit_w is None or gpu.power_limit_w is None:
            continue
        prefs = [
            JobCapPrefs(j.id, j.spec.power_cap_opt_out, j.spec.max_slowdown)
            for j in running
            if gpu.index in j.gpus_assigned
        ]
        target = target_limit_w(
            curve,
            intensity,
            signal_fresh=fresh,
            default_w=gpu.default_limit_w,
            min_w=gpu.min_limit_w if gpu.min_limit_w is not None else 0.0,
            max_w=gpu.max_limit_w if gpu.max_limit_w is not None else gpu.default_limit_w,
            jobs=prefs,
        )
        if abs(target.limit_w - gpu.power_limit_w) < LIMIT_TOLERANCE_W:
            continue
        out.append(
            Decision(
                action=Action.UNCAP if target.is_default else Action.CAP,
                reason=f"power: {target.reason}",
                at=snapshot.now,
                region=region,
                device_index=gpu.index,
                power_limit_w=target.limit_w,
            )
        )
    return out
