"""The forecast made from measured values where no provider gives one: the model alone, then
the hub over the Electricity Maps replica with a free-tier key (current values, no
forecast)."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry

from gridshift.scheduler.agent import Agent
from gridshift.scheduler.config import load_settings
from gridshift.scheduler.models import JobSpec, JobState
from gridshift.scheduler.signals import build_hub
from gridshift.scheduler.signals.history import MeasuredHistory

HOUR = 3600.0
DAY0 = 1_714_521_600.0  # 2024-05-01 00:00Z


def daily(t_s: float) -> float:
    return 250.0 + 100.0 * math.cos(2 * math.pi * (t_s % 86400.0) / 86400.0)


def measured(history: MeasuredHistory, hours: int, step_s: float = HOUR) -> None:
    t = DAY0
    while t < DAY0 + hours * HOUR:
        history.record(t, t + step_s, daily(t))
        t += step_s


def test_the_forecast_repeats_the_measured_days_and_fades_the_deviation_seen_now():
    history = MeasuredHistory()
    measured(history, 48)
    now = DAY0 + 48 * HOUR + 10 * 60  # 00:10 on the third day
    current = daily(DAY0) + 60.0  # 60 g/kWh above the usual value of this hour
    points = history.forecast(now, 24 * HOUR, current)
    assert points is not None and len(points) == 24
    assert points[0] == (DAY0 + 48 * HOUR, DAY0 + 49 * HOUR, current)
    for i in (1, 6, 12, 23):
        start, end, value = points[i]
        assert (start, end) == (DAY0 + (48 + i) * HOUR, DAY0 + (49 + i) * HOUR)
        assert value == pytest.approx(daily(start) + 60.0 * math.exp(-i / 6))


def test_no_forecast_until_most_hours_of_the_day_were_measured():
    history = MeasuredHistory()
    measured(history, 17)
    assert history.forecast(DAY0 + 17 * HOUR, 24 * HOUR, 300.0) is None
    measured(history, 18)
    assert history.forecast(DAY0 + 18 * HOUR, 24 * HOUR, 300.0) is not None


def test_each_interval_counts_once_at_its_latest_value_and_old_days_are_forgotten():
    history = MeasuredHistory(days=2, min_hours_of_day=1)
    for _ in range(3):  # refreshes see the same 5-minute intervals again
        for m in range(12):
            history.record(DAY0 + m * 300, DAY0 + (m + 1) * 300, 100.0)
    history.record(DAY0 + 11 * 300, DAY0 + 12 * 300, 220.0)  # the estimate, measured
    profile = history.profile(DAY0 + HOUR)
    assert profile is not None and profile[0] == pytest.approx((11 * 100.0 + 220.0) / 12)
    history.record(DAY0 + 5 * 86400.0, DAY0 + 5 * 86400.0 + HOUR, 400.0)
    assert len(history.state()["intervals"]) == 1  # more than days + 1 old: gone


def test_the_history_survives_a_round_trip_and_a_malformed_state_changes_nothing():
    history = MeasuredHistory()
    measured(history, 30, step_s=1800.0)
    again = MeasuredHistory()
    again.restore(history.state())
    now = DAY0 + 30 * HOUR
    assert again.forecast(now, 6 * HOUR, 200.0) == history.forecast(now, 6 * HOUR, 200.0)
    before = again.state()
    for bad in (
        {"version": 2, "intervals": []},
        {"version": 1},
        {"version": 1, "intervals": [[0.0, 1.0]]},
        {"version": 1, "intervals": [[1.0, 1.0, 5.0]]},
        {"version": 1, "intervals": [[0.0, 1.0, "x"]]},
    ):
        with pytest.raises(ValueError):
            again.restore(bad)
        assert again.state() == before


def free_key_settings(em_replica, tmp_path):  # type: ignore[no-untyped-def]
    em_replica.forecast_access = False  # a free-tier key: current values only
    return load_settings(
        None,
        state_dir=tmp_path,
        staleness_s=3600,
        default_region="de",
        providers={
            "em": {
                "type": "electricitymaps",
                "base_url": em_replica.base_url,
                "api_key": em_replica.api_key,
                "retries": 0,
                "ttl_s": 0,
            }
        },
        regions={"de": {"sources": [{"provider": "em", "location": "DE"}]}},
    )


def test_the_hub_forecasts_from_measured_values_where_the_key_has_no_forecast_access(
    em_replica, clock, tmp_path
):
    hub = build_hub(free_key_settings(em_replica, tmp_path), clock)
    em_replica.fail("empty")  # its history endpoint answers nothing: the hub measures itself
    hub.refresh()
    sig = hub.region_signal("de")
    assert sig.fresh and sig.forecast is None  # nothing measured yet to forecast from
    for _ in range(20 * 4):  # 20 hours of refreshes every 15 minutes
        clock.advance(timedelta(minutes=15))
        hub.refresh()
    sig = hub.region_signal("de")
    assert sig.fresh and sig.forecast is not None and sig.forecast.provider == "history"
    # the last day was asked for at start, then every 6 h until 18 hours were measured
    assert len([r for r in em_replica.requests if r.path.endswith("/history")]) == 3
    first = sig.forecast.points[0]
    assert first.start <= clock.now() < first.end
    assert first.intensity_g_per_kwh == sig.current.intensity_g_per_kwh  # type: ignore[union-attr]
    # the replica's curve repeats every day; the hours measured (12:00 to 08:00) come back in
    # the forecast, once today's deviation has faded (the hours not measured take the mean)
    assert len(sig.forecast.points) == 48
    for p in sig.forecast.points[28:48]:
        assert p.intensity_g_per_kwh == pytest.approx(em_replica.value_at(p.start), abs=1.5)
    # its error is scored like any forecast's: here mostly that of the three hours first
    # forecast at the mean (a flat forecast at the mean would be off by 71 g/kWh RMS)
    for _ in range(14 * 4):
        clock.advance(timedelta(minutes=15))
        hub.refresh()
    error = hub.region_signal("de").forecast_error_g_per_kwh
    assert error is not None and 10.0 < error < 60.0
    # a provider's forecast, once there, is used instead (the provider asks again for the
    # forecast it was refused after `no_access_retry_s`, 6 h)
    em_replica.forecast_access = True
    em_replica.heal()
    clock.advance(timedelta(hours=6, minutes=15))
    hub.refresh()
    assert hub.region_signal("de").forecast.provider == "em"  # type: ignore[union-attr]


def test_a_hub_that_has_just_started_asks_the_provider_for_the_last_day(
    em_replica, clock, tmp_path
):
    hub = build_hub(free_key_settings(em_replica, tmp_path), clock)
    hub.refresh()
    sig = hub.region_signal("de")
    assert sig.forecast is not None and sig.forecast.provider == "history"
    for p in sig.forecast.points[30:48]:  # once today's deviation has faded
        assert p.intensity_g_per_kwh == pytest.approx(em_replica.value_at(p.start), abs=1.5)
    asked = [r.path for r in em_replica.requests if r.path.endswith("/history")]
    assert len(asked) == 1
    clock.advance(timedelta(minutes=15))
    hub.refresh()  # enough measured now: not asked again
    assert len([r for r in em_replica.requests if r.path.endswith("/history")]) == 1


def test_an_agent_on_a_free_key_holds_a_job_for_the_clean_hours_of_the_last_day(
    em_replica, clock, tmp_path
):
    clock.advance(timedelta(hours=8))  # 20:10; the replica's curve is lowest at 12:00
    agent = Agent.build(
        free_key_settings(em_replica, tmp_path), clock=clock, registry=CollectorRegistry()
    )
    try:
        agent.startup()
        spec = JobSpec(command=["true"], expected_duration_s=3600, allowed_regions=["de"])
        job = agent.submit(spec, deadline_in_s=20 * 3600)
        assert job.state == JobState.HELD, job.reason
        assert job.planned_start is not None
        assert 13 <= (job.planned_start - clock.now()).total_seconds() / 3600 <= 18
        assert "window" in (job.reason or "")
    finally:
        agent.stop()
