"""The power-cap policy: curve, opt-out, max_slowdown, fail-safe. Pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gridshift.scheduler.config import NvmlConfig, PowerCurvePoint
from gridshift.scheduler.models import (
    Action,
    IntensitySample,
    Job,
    JobSpec,
    JobState,
    PowerSample,
    RegionSignal,
    Snapshot,
)
from gridshift.scheduler.policy.powercap import (
    JobCapPrefs,
    curve_pct,
    plan_caps,
    target_limit_w,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
CURVE = NvmlConfig().curve  # 100 % to 300 g/kWh, 70 % at 500 g/kWh and beyond


def target(intensity, fresh=True, jobs=(), default=700.0, lo=200.0, hi=700.0):
    return target_limit_w(
        CURVE, intensity, signal_fresh=fresh, default_w=default, min_w=lo, max_w=hi, jobs=jobs
    )


@pytest.mark.parametrize(
    ("intensity", "pct"), [(0, 100), (300, 100), (400, 85), (500, 70), (900, 70)]
)
def test_default_curve(intensity: float, pct: float) -> None:
    assert curve_pct(CURVE, intensity) == pytest.approx(pct)


def test_curve_order_does_not_matter_and_empty_means_no_cap() -> None:
    shuffled = [CURVE[2], CURVE[0], CURVE[1]]
    assert curve_pct(shuffled, 400) == pytest.approx(85)
    assert curve_pct([], 900) == 100.0
    step = [
        PowerCurvePoint(intensity_g_per_kwh=200, cap_pct=90),
        PowerCurvePoint(intensity_g_per_kwh=200, cap_pct=60),
    ]
    assert curve_pct(step, 250) == 60


def test_target_follows_the_curve_and_is_clamped() -> None:
    t = target(450)
    assert t.limit_w == pytest.approx(700 * 0.775)
    assert not t.is_default
    assert "450 g/kWh" in t.reason
    # clamp to the device's minimum
    steep = [PowerCurvePoint(intensity_g_per_kwh=0, cap_pct=10)]
    t = target_limit_w(steep, 100, signal_fresh=True, default_w=700, min_w=200, max_w=700)
    assert t.limit_w == 200.0


def test_no_fresh_signal_means_default() -> None:
    for t in (target(None), target(900, fresh=False)):
        assert t.limit_w == 700.0
        assert t.is_default
        assert "no fresh carbon signal" in t.reason


def test_opt_out_keeps_default() -> None:
    t = target(900, jobs=[JobCapPrefs("j1"), JobCapPrefs("j2", opt_out=True)])
    assert t.limit_w == 700.0
    assert t.is_default
    assert "j2" in t.reason


def test_max_slowdown_raises_the_floor() -> None:
    # 10 % slowdown allowed: not below 700 / 1.1 = 636 W (the curve says 490 W)
    t = target(900, jobs=[JobCapPrefs("j1", max_slowdown=0.1), JobCapPrefs("j2", max_slowdown=1)])
    assert t.limit_w == pytest.approx(700 / 1.1)
    assert "j1" in t.reason
    # a generous bound does not loosen the curve
    assert target(900, jobs=[JobCapPrefs("j3", max_slowdown=1.0)]).limit_w == pytest.approx(490)


def _job(job_id: str, gpus: list[int], **spec) -> Job:
    return Job(
        id=job_id,
        spec=JobSpec(command=["true"], expected_duration_s=60, gpus=len(gpus), **spec),
        state=JobState.RUNNING,
        submitted_at=NOW,
        deadline=NOW + timedelta(hours=1),
        gpus_assigned=gpus,
        updated_at=NOW,
    )


def _snapshot(intensity: float | None, fresh: bool, jobs: list[Job], limits: list[float]):
    current = (
        IntensitySample(
            region="r",
            start=NOW,
            end=NOW + timedelta(hours=1),
            intensity_g_per_kwh=intensity,
            provider="test",
        )
        if intensity is not None
        else None
    )
    return Snapshot(
        now=NOW,
        jobs=jobs,
        regions={"r": RegionSignal(region="r", current=current, fresh=fresh)},
        default_region="r",
        gpus=[
            PowerSample(
                index=i,
                uuid=f"GPU-{i}",
                at=NOW,
                power_w=300,
                power_limit_w=lim,
                default_limit_w=700,
                min_limit_w=200,
                max_limit_w=700,
            )
            for i, lim in enumerate(limits)
        ],
    )


def test_plan_caps_decisions() -> None:
    jobs = [_job("a", [0]), _job("b", [1], power_cap_opt_out=True)]
    snap = _snapshot(500, True, jobs, [700, 490, 490])
    decisions = {d.device_index: d for d in plan_caps(snap, CURVE)}
    assert decisions[0].action == Action.CAP
    assert decisions[0].power_limit_w == pytest.approx(490)
    assert decisions[1].action == Action.UNCAP  # its job opted out
    assert decisions[1].power_limit_w == 700
    assert 2 not in decisions  # already at the target: no decision
    assert all(d.reason.startswith("power: ") for d in decisions.values())


def test_plan_caps_restores_when_the_signal_is_lost() -> None:
    snap = _snapshot(None, False, [_job("a", [0])], [490, 700])
    decisions = plan_caps(snap, CURVE)
    assert [(d.device_index, d.action, d.power_limit_w) for d in decisions] == [
        (0, Action.UNCAP, 700)
    ]
