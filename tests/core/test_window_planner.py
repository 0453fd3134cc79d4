from datetime import UTC, datetime, timedelta

from gridshift.scheduler.models import (
    Action,
    Forecast,
    ForecastPoint,
    Job,
    JobSpec,
    JobState,
    RegionSignal,
    Snapshot,
)
from gridshift.scheduler.policy.window import StepSeries, WindowPlanner

NOW = datetime(2024, 5, 1, 12, tzinfo=UTC)


def forecast(values, step_h=1.0, start=NOW):
    step = timedelta(hours=step_h)
    return Forecast(
        region="r",
        provider="test",
        issued_at=start,
        points=[
            ForecastPoint(start=start + i * step, end=start + (i + 1) * step, intensity_g_per_kwh=v)
            for i, v in enumerate(values)
        ],
    )


def job(duration_h=2.0, deadline_h=10.0, state=JobState.PENDING, **spec):
    s = JobSpec(command=["x"], expected_duration_s=duration_h * 3600, **spec)
    return Job(
        id="j1",
        spec=s,
        state=state,
        submitted_at=NOW,
        deadline=NOW + timedelta(hours=deadline_h),
        updated_at=NOW,
    )


def snap(jobs, values=None, fresh=True, now=NOW):
    sig = RegionSignal(region="r", fresh=fresh, forecast=forecast(values) if values else None)
    return Snapshot(now=now, jobs=jobs, regions={"r": sig}, default_region="r")


def test_step_series_means():
    s = StepSeries(forecast([100, 200, 300]))
    t = NOW.timestamp()
    assert s.mean(t, t + 3600) == 100
    assert s.mean(t + 1800, t + 5400) == 150
    assert s.mean(t, t + 3 * 3600) == 200
    assert s.mean(t, t + 4 * 3600) is None  # beyond the horizon


def test_holds_for_the_cleanest_window():
    values = [300, 300, 300, 100, 100, 300, 300, 300, 300, 300, 300, 300]
    [d] = WindowPlanner().plan(snap([job()], values))
    assert d.action == Action.HOLD
    assert d.planned_start == NOW + timedelta(hours=3)
    # 2 h at 100 W-default host power: (300 - 100) g/kWh x 0.2 kWh = 40 g
    assert d.expected_saving_g == 40.0 * 1.0
    assert "100 g/kWh" in d.reason


def test_never_plans_past_the_latest_start():
    # the clean window is after the deadline allows
    values = [300] * 8 + [10] * 8
    [d] = WindowPlanner().plan(snap([job(duration_h=2, deadline_h=9)], values))
    assert d.action in (Action.HOLD, Action.START)
    if d.action == Action.HOLD:
        assert d.planned_start <= NOW + timedelta(hours=7)


def test_starts_at_latest_start_and_when_now_is_best():
    values = [100] + [300] * 11
    [d] = WindowPlanner().plan(snap([job(duration_h=1)], values))
    assert d.action == Action.START and "cleanest" in d.reason
    # latest start within the lookahead: start whatever the forecast says
    late = job(duration_h=2, deadline_h=2.01)
    [d] = WindowPlanner(lookahead_s=60).plan(snap([late], [500, 500, 10, 10]))
    assert d.action == Action.START and "latest start" in d.reason


def test_fails_open_without_a_fresh_signal():
    [d] = WindowPlanner().plan(snap([job()], [300] * 12, fresh=False))
    assert d.action == Action.START and "fail open" in d.reason
    [d] = WindowPlanner().plan(snap([job()], None))
    assert d.action == Action.START


def test_leaves_running_jobs_alone():
    assert WindowPlanner().plan(snap([job(state=JobState.RUNNING)], [300] * 12)) == []
