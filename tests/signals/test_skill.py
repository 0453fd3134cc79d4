"""Forecast skill: forecasts are scored against the values that follow, in the signal hub
(and so in the planner's snapshot and on /metrics) and in the simulator."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from gridshift.scheduler.clock import FakeClock
from gridshift.scheduler.errors import NoSignal
from gridshift.scheduler.metrics import AgentMetrics
from gridshift.scheduler.models import Forecast, ForecastPoint, IntensitySample
from gridshift.scheduler.signals.hub import SignalHub
from gridshift.scheduler.signals.skill import ForecastSkill

HOUR = 3600.0
T0 = datetime(2024, 5, 1, tzinfo=UTC)


def truth(t_s: float) -> float:
    return 200.0 + 80.0 * math.sin(t_s / 20000.0)


def feed(skill: ForecastSkill, hours: int, bias: float = 0.0, noise: float = 0.0) -> None:
    rng = np.random.default_rng(0)
    t0 = T0.timestamp()
    for h in range(hours):
        now = t0 + h * HOUR
        skill.record_actual(now, now + HOUR, truth(now))
        skill.record_forecast(
            now,
            [
                (now + k * HOUR, now + (k + 1) * HOUR, truth(now + k * HOUR) + bias + noise * e)
                for k, e in zip(range(48), rng.normal(size=48), strict=True)
            ],
        )


def test_nothing_is_claimed_before_enough_targets_were_scored():
    skill = ForecastSkill(min_targets=12)
    feed(skill, 12)  # the first hour has no forecast to score
    assert skill.targets == 11 and skill.error_sd() is None
    feed_more = ForecastSkill(min_targets=12)
    feed(feed_more, 13)
    assert feed_more.error_sd() == 0.0


def test_a_biased_forecast_scores_its_bias_and_a_noisy_one_its_noise():
    biased = ForecastSkill()
    feed(biased, 72, bias=30.0)
    assert biased.error_sd() == pytest.approx(30.0)
    noisy = ForecastSkill()
    feed(noisy, 400, noise=20.0)
    assert noisy.error_sd() == pytest.approx(20.0, rel=0.15)


def test_only_leads_of_one_to_24_hours_count_and_memory_stays_bounded():
    skill = ForecastSkill(min_targets=1)
    t0 = T0.timestamp()
    # 30 min ahead and 30 h ahead: both outside the scored leads, so never scored
    skill.record_forecast(t0, [(t0 + 1800, t0 + 5400, 999.0), (t0 + 30 * HOUR, t0 + 31 * HOUR, 1)])
    skill.record_actual(t0 + 1800, t0 + 5400, 100.0)
    skill.record_actual(t0 + 30 * HOUR, t0 + 31 * HOUR, 100.0)
    assert skill.targets == 0
    feed(skill, 24 * 30)
    assert len(skill._pending) <= 48  # targets ahead, not a month of history


def test_the_latest_forecast_in_each_lead_hour_counts_once():
    skill = ForecastSkill(min_targets=1)
    t0 = T0.timestamp()
    target = (t0 + 5 * HOUR, t0 + 6 * HOUR)
    # fetched every 5 min during the same lead hour: only the last one is kept
    for k in range(12):
        skill.record_forecast(t0 + 300 * (k + 1), [(*target, 100.0 + k)])
    skill.record_forecast(t0 + 3 * HOUR, [(*target, 120.0)])  # 2 h ahead: its own lead hour
    skill.record_actual(*target, 111.0)
    assert skill.error_sd() == pytest.approx(math.sqrt((0.0 + 81.0) / 2))


def test_state_round_trips_through_json_and_scoring_goes_on_the_same():
    import json

    kept = ForecastSkill()
    feed(kept, 30, noise=20.0)
    restored = ForecastSkill()
    restored.restore(json.loads(json.dumps(kept.state())))
    assert restored.error_sd() == kept.error_sd() and restored.targets == kept.targets
    # forecasts remembered before the restart are still scored after it
    t = T0.timestamp() + 30 * HOUR
    for skill in (kept, restored):
        skill.record_actual(t, t + HOUR, truth(t) + 50.0)
    assert restored.targets == kept.targets == 30
    assert restored.error_sd() == pytest.approx(kept.error_sd())


@pytest.mark.parametrize(
    "bad",
    [
        {"version": 2, "mse": 1.0, "targets": 1, "pending": []},
        {"version": 1, "mse": -1.0, "targets": 1, "pending": []},
        {"version": 1, "mse": float("nan"), "targets": 1, "pending": []},
        {"version": 1, "mse": 1.0, "targets": 1},
        {"version": 1, "mse": 1.0, "targets": 1, "pending": [[0.0, 1.0, [1, 2]]]},
        {"version": 1, "mse": "x", "targets": 1, "pending": []},
    ],
)
def test_a_malformed_state_is_refused_and_changes_nothing(bad):
    skill = ForecastSkill(min_targets=1)
    feed(skill, 5, bias=10.0)
    before = skill.state()
    with pytest.raises(ValueError):
        skill.restore(bad)
    assert skill.state() == before


class BiasedProvider:
    """A provider whose forecasts are always `bias_g` g/kWh too high (25 by default); with
    `down`, it answers nothing."""

    def __init__(self, clock: FakeClock, name: str = "biased", bias_g: float = 25.0) -> None:
        self.clock = clock
        self.name = name
        self.bias_g = bias_g
        self.down = False

    def _hour(self, when: datetime) -> datetime:
        return when.replace(minute=0, second=0, microsecond=0)

    def current(self, location: str) -> IntensitySample:
        if self.down:
            raise NoSignal(f"{self.name} is down", provider=self.name, reason="http")
        start = self._hour(self.clock.now())
        return IntensitySample(
            region=location,
            start=start,
            end=start + timedelta(hours=1),
            intensity_g_per_kwh=truth(start.timestamp()),
            provider=self.name,
        )

    def forecast(self, location: str, start: datetime, end: datetime) -> Forecast:
        if self.down:
            raise NoSignal(f"{self.name} is down", provider=self.name, reason="http")
        first = self._hour(start)
        pts = [
            ForecastPoint(
                start=first + timedelta(hours=k),
                end=first + timedelta(hours=k + 1),
                intensity_g_per_kwh=truth((first + timedelta(hours=k)).timestamp()) + self.bias_g,
            )
            for k in range(int((end - first).total_seconds() // HOUR))
        ]
        return Forecast(region=location, provider=self.name, issued_at=start, points=pts)


def test_the_hub_scores_its_forecasts_and_shows_the_error_to_the_planner_and_on_metrics():
    clock = FakeClock(T0)
    registry = CollectorRegistry()
    hub = SignalHub(
        {"biased": BiasedProvider(clock)},
        {"r": [("biased", "r")]},
        clock,
        staleness_s=2 * HOUR,
        metrics=AgentMetrics(registry),
    )
    hub.refresh()
    assert hub.region_signal("r").forecast_error_g_per_kwh is None
    for _ in range(24 * 4):  # a day of refreshes every 15 min
        clock.advance(timedelta(minutes=15))
        hub.refresh()
    assert hub.region_signal("r").forecast_error_g_per_kwh == pytest.approx(25.0)
    metric = "gridshift_grid_carbon_intensity_forecast_error_grams_per_kwh"
    assert registry.get_sample_value(metric, {"region": "r"}) == pytest.approx(25.0)


def _day(hub: SignalHub, clock: FakeClock) -> None:
    for _ in range(24 * 4):  # refreshes every 15 min
        clock.advance(timedelta(minutes=15))
        hub.refresh()


def test_a_provider_taken_over_after_a_failure_is_trusted_on_its_own_record(caplog):
    clock = FakeClock(T0)
    biased, exact = BiasedProvider(clock), BiasedProvider(clock, "exact", bias_g=0.0)
    providers = {"biased": biased, "exact": exact}
    chain = {"r": [("biased", "r"), ("exact", "r")]}
    hub = SignalHub(providers, chain, clock, staleness_s=2 * HOUR)
    hub.refresh()
    _day(hub, clock)
    assert hub.region_signal("r").forecast_error_g_per_kwh == pytest.approx(25.0)
    biased.down = True  # the exact provider takes over: its forecasts are not scored yet
    clock.advance(timedelta(minutes=15))
    hub.refresh()
    sig = hub.region_signal("r")
    assert sig.forecast.provider == "exact" and sig.forecast_error_g_per_kwh is None
    _day(hub, clock)
    assert hub.region_signal("r").forecast_error_g_per_kwh == pytest.approx(0.0, abs=1e-9)
    biased.down = False  # back: its own record, scored meanwhile against the measured values
    clock.advance(timedelta(minutes=15))
    hub.refresh()
    assert hub.region_signal("r").forecast_error_g_per_kwh == pytest.approx(25.0)

    # kept across a restart, per provider
    again = SignalHub(providers, chain, clock, staleness_s=2 * HOUR)
    again.restore_skill(json.loads(json.dumps(hub.skill_state())))
    again.refresh()
    assert again.region_signal("r").forecast_error_g_per_kwh == pytest.approx(25.0)
    # a region's skill kept before skills were per provider is learnt again, and says so
    older = SignalHub(providers, chain, clock, staleness_s=2 * HOUR)
    older.restore_skill({"r": hub.skill_state()["r"]["providers"]["biased"]})
    older.refresh()
    assert older.region_signal("r").forecast_error_g_per_kwh is None
    assert "learnt again" in caplog.text
