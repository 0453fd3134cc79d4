"""Carbon Aware SDK WebAPI client against its replica, and the documented/captured examples."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gridshift.scheduler.config import CarbonAwareSdkConfig
from gridshift.scheduler.errors import ProviderDataError, ProviderUnavailable
from gridshift.scheduler.models import SignalKind
from gridshift.scheduler.signals.carbonaware import CarbonAwareSdkProvider, parse_timespan

from .conftest import SleepRecorder

FIVE = timedelta(minutes=5)


def make(replica, clock, **cfg):
    settings = {"base_url": replica.base_url, "ttl_s": 0.0, "retries": 1, "timeout_s": 2.0}
    settings.update(cfg)
    provider = CarbonAwareSdkProvider("sdk", CarbonAwareSdkConfig(**settings), clock)
    provider.http.sleep = SleepRecorder()
    return provider


def test_timespans():
    assert parse_timespan("00:05:00") == FIVE
    assert parse_timespan("01:00") == timedelta(hours=1)
    assert parse_timespan("1.02:03:04.5") == timedelta(days=1, hours=2, minutes=3, seconds=4)
    with pytest.raises(ValueError):
        parse_timespan("5 minutes")


def test_current_is_the_latest_emissions_value(sdk_replica, clock):
    provider = make(sdk_replica, clock)
    sample = provider.current("eastus")
    latest = datetime(2024, 5, 1, 12, 5, tzinfo=UTC)
    assert (sample.start, sample.end) == (latest, latest + FIVE)
    assert sample.intensity_g_per_kwh == sdk_replica.value_at(latest)
    assert sample.kind is SignalKind.MARGINAL
    seen = sdk_replica.calls("/emissions/bylocation")[0]
    assert seen.query == {
        "location": ["eastus"],
        "time": ["2024-05-01T10:10:00Z"],
        "toTime": ["2024-05-01T12:10:00Z"],
    }
    average = make(sdk_replica, clock, signal_kind="average").current("eastus")
    assert average.kind is SignalKind.AVERAGE


def test_forecast_points_and_issue_time(sdk_replica, clock):
    provider = make(sdk_replica, clock)
    now = clock.now()
    forecast = provider.forecast("westus", now, now + timedelta(hours=6))
    assert forecast.points[0].start == datetime(2024, 5, 1, 12, 15, tzinfo=UTC)
    assert all(p.end - p.start == FIVE for p in forecast.points)
    assert forecast.points[-1].end == now + timedelta(hours=6)
    assert forecast.issued_at == datetime(2024, 5, 1, 12, 10, tzinfo=UTC)
    assert forecast.points[3].intensity_g_per_kwh == sdk_replica.value_at(forecast.points[3].start)


def test_no_forecasting_data_source_is_no_access_and_remembered(sdk_replica, clock):
    sdk_replica.forecast_supported = False
    provider = make(sdk_replica, clock, retries=3)
    now = clock.now()
    with pytest.raises(ProviderUnavailable) as err:
        provider.forecast("eastus", now, now + timedelta(hours=6))
    assert err.value.reason == "no_access"
    assert "does not support forecasting" in str(err.value)
    assert len(sdk_replica.calls("/emissions/forecasts")) == 1  # 501 is not retried
    with pytest.raises(ProviderUnavailable):
        provider.forecast("eastus", now, now + timedelta(hours=6))
    assert len(sdk_replica.calls("/emissions/forecasts")) == 1
    assert provider.current("eastus").intensity_g_per_kwh > 0


def test_unknown_location_is_not_found(sdk_replica, clock):
    provider = make(sdk_replica, clock)
    with pytest.raises(ProviderDataError) as err:
        provider.current("mars")
    assert err.value.reason == "not_found"
    assert "Unknown location" in str(err.value)


def test_errors_empty_partial(sdk_replica, clock):
    provider = make(sdk_replica, clock, retries=0)
    now = clock.now()
    sdk_replica.fail("500")
    with pytest.raises(ProviderUnavailable) as uerr:
        provider.current("eastus")
    assert "Internal Server Error" in str(uerr.value)
    sdk_replica.fail("empty")
    with pytest.raises(ProviderDataError) as err:
        provider.current("eastus")  # 204 No Content
    assert err.value.reason == "empty"
    with pytest.raises(ProviderDataError) as err:
        provider.forecast("eastus", now, now + timedelta(hours=1))
    assert err.value.reason == "empty"
    sdk_replica.fail("partial")
    with pytest.raises(ProviderDataError) as err:
        provider.forecast("eastus", now, now + timedelta(hours=1))
    assert err.value.reason == "bad_payload"


def test_history(sdk_replica, clock):
    provider = make(sdk_replica, clock)
    now = clock.now()
    history = provider.history("eastus", now - timedelta(hours=1), now)
    assert len(history) == 12
    assert history[0].start == now - timedelta(hours=1)


# -- documented and captured examples (carbon-apis.md B.4), served verbatim -------------------

BYLOCATION_DOC = """[
  {
    "location": "eastus",
    "time": "2022-05-17T20:45:11.5092741+00:00",
    "rating": 70
  }
]"""

BYLOCATION_CAPTURED = (
    '[{"location": "PJM_ROANOKE","time": "2022-11-02T10:20:00+00:00",'
    '"rating": 545.67162111,"duration": "00:05:00"}]'
)

FORECAST_CAPTURED = """[{
    "generatedAt": "2022-11-02T10:25:00+00:00",
    "requestedAt": "2022-11-02T10:28:46.8644078+00:00",
    "location": "eastus",
    "dataStartAt": "2022-11-02T10:30:00+00:00",
    "dataEndAt": "2022-11-03T10:30:00+00:00",
    "windowSize": 5,
    "optimalDataPoints": [
      {
        "location": "PJM_ROANOKE",
        "timestamp": "2022-11-03T10:15:00+00:00",
        "duration": 5,
        "value": 544.8099506434546
      }
    ],
    "forecastData": [
      {
        "location": "PJM_ROANOKE",
        "timestamp": "2022-11-02T10:30:00+00:00",
        "duration": 5,
        "value": 547.3183851085558
      },
      {
        "location": "PJM_ROANOKE",
        "timestamp": "2022-11-02T10:35:00+00:00",
        "duration": 5,
        "value": 547.66173548531
      }]
    }]"""


def test_documented_emissions_examples(sdk_replica, clock):
    provider = make(sdk_replica, clock)
    clock.set(datetime(2022, 5, 17, 21, tzinfo=UTC))
    sdk_replica.override("/emissions/bylocation", BYLOCATION_DOC)
    sample = provider.current("eastus")
    assert sample.intensity_g_per_kwh == 70
    assert sample.start == datetime(2022, 5, 17, 20, 45, 11, 509274, tzinfo=UTC)
    assert sample.end - sample.start == FIVE  # no duration given: the SDK's 5-minute step
    clock.set(datetime(2022, 11, 2, 10, 22, tzinfo=UTC))
    sdk_replica.override("/emissions/bylocation", BYLOCATION_CAPTURED)
    sample = provider.current("eastus")
    assert sample.intensity_g_per_kwh == pytest.approx(545.67162111)
    assert sample.end == datetime(2022, 11, 2, 10, 25, tzinfo=UTC)


def test_captured_forecast_example(sdk_replica, clock):
    provider = make(sdk_replica, clock)
    t0 = datetime(2022, 11, 2, 10, 30, tzinfo=UTC)
    clock.set(t0 - FIVE)
    sdk_replica.override("/emissions/forecasts/current", FORECAST_CAPTURED)
    forecast = provider.forecast("eastus", t0, t0 + timedelta(hours=24))
    assert [p.intensity_g_per_kwh for p in forecast.points] == pytest.approx(
        [547.3183851085558, 547.66173548531]
    )
    assert forecast.points[1].start == t0 + FIVE
    assert forecast.issued_at == datetime(2022, 11, 2, 10, 25, tzinfo=UTC)


def test_forecast_is_fetched_once_per_ttl_for_any_window(sdk_replica, clock):
    provider = make(sdk_replica, clock, ttl_s=300.0)
    now = clock.now()
    first = provider.forecast("eastus", now, now + timedelta(hours=2))
    later = provider.forecast("eastus", now + timedelta(hours=1), now + timedelta(hours=6))
    assert len(sdk_replica.calls("/emissions/forecasts/current")) == 1
    assert first.points[-1].end == now + timedelta(hours=2)
    assert later.points[0].start == now + timedelta(hours=1)
    clock.advance(301)
    provider.forecast("eastus", clock.now(), clock.now() + timedelta(hours=1))
    assert len(sdk_replica.calls("/emissions/forecasts/current")) == 2
