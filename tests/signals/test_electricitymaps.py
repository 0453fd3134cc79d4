"""Electricity Maps v3 client against its replica, and the documented examples."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gridshift.scheduler.config import ElectricityMapsConfig
from gridshift.scheduler.errors import (
    ProviderAuthError,
    ProviderDataError,
    ProviderRateLimited,
    ProviderUnavailable,
)
from gridshift.scheduler.models import EmissionBasis, SignalKind
from gridshift.scheduler.signals.electricitymaps import ElectricityMapsProvider

from .conftest import SleepRecorder


def make(replica, clock, **cfg):
    settings = {
        "base_url": replica.base_url,
        "api_key": replica.api_key,
        "ttl_s": 0.0,
        "retries": 1,
        "timeout_s": 2.0,
    }
    settings.update(cfg)
    provider = ElectricityMapsProvider("em", ElectricityMapsConfig(**settings), clock)
    provider.http.sleep = SleepRecorder()
    return provider


def test_current_value_zone_header_and_labels(em_replica, clock):
    provider = make(em_replica, clock)
    sample = provider.current("DE")
    hour = datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert sample.intensity_g_per_kwh == em_replica.value_at(hour)
    assert (sample.start, sample.end) == (hour, hour + timedelta(hours=1))
    assert sample.kind is SignalKind.AVERAGE
    assert sample.basis is EmissionBasis.DIRECT
    assert sample.provider == "em" and sample.region == "DE"
    assert sample.estimated is True
    assert sample.issued_at == clock.now() - timedelta(minutes=7)
    assert sample.fetched_at == clock.now()
    seen = em_replica.calls("/v3/carbon-intensity/latest")[0]
    assert seen.query == {"zone": ["DE"], "emissionFactorType": ["direct"]}
    assert seen.headers["auth-token"] == em_replica.api_key


def test_lat_lon_and_lifecycle(em_replica, clock):
    provider = make(em_replica, clock, emission_factor_type="lifecycle")
    sample = provider.current("52.52,13.40")
    assert sample.basis is EmissionBasis.LIFECYCLE
    seen = em_replica.calls("/v3/carbon-intensity/latest")[0]
    assert seen.query == {"lat": ["52.52"], "lon": ["13.4"], "emissionFactorType": ["lifecycle"]}


def test_forecast_hourly_points_within_the_window(em_replica, clock):
    provider = make(em_replica, clock)
    now = clock.now()
    forecast = provider.forecast("DE", now, now + timedelta(hours=6))
    hour = datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert [p.start for p in forecast.points] == [hour + timedelta(hours=i) for i in range(7)]
    assert all(p.end - p.start == timedelta(hours=1) for p in forecast.points)
    assert [p.intensity_g_per_kwh for p in forecast.points] == [
        em_replica.value_at(p.start) for p in forecast.points
    ]
    assert forecast.issued_at == now - timedelta(minutes=20)
    assert forecast.kind is SignalKind.AVERAGE


def test_free_tier_key_current_works_forecast_is_no_access_and_remembered(em_replica, clock):
    em_replica.forecast_access = False
    provider = make(em_replica, clock)
    assert provider.current("DE").intensity_g_per_kwh > 0
    now = clock.now()
    with pytest.raises(ProviderAuthError) as err:
        provider.forecast("DE", now, now + timedelta(hours=24))
    assert err.value.reason == "no_access"
    assert "requestType=forecast" in str(err.value)
    calls = len(em_replica.calls("/v3/carbon-intensity/forecast"))
    with pytest.raises(ProviderAuthError):
        provider.forecast("DE", now, now + timedelta(hours=24))
    assert len(em_replica.calls("/v3/carbon-intensity/forecast")) == calls
    clock.advance(timedelta(hours=7))  # the denial is re-checked after a while
    em_replica.forecast_access = True
    assert provider.forecast("DE", clock.now(), clock.now() + timedelta(hours=2)).points


def test_bad_key_is_an_auth_error_with_the_providers_words(em_replica, clock):
    provider = make(em_replica, clock, api_key="wrong")
    with pytest.raises(ProviderAuthError) as err:
        provider.current("DE")
    assert err.value.reason == "auth"
    assert "401" in str(err.value) and "valid auth-token" in str(err.value)


def test_missing_key_fails_without_a_call(em_replica, clock):
    provider = make(em_replica, clock, api_key=None)
    with pytest.raises(ProviderAuthError) as err:
        provider.current("DE")
    assert "GRIDSHIFT_PROVIDERS__EM__API_KEY" in str(err.value)
    assert em_replica.requests == []


def test_403_zone_outside_the_plan(em_replica, clock):
    provider = make(em_replica, clock)
    em_replica.fail("403")
    with pytest.raises(ProviderAuthError) as err:
        provider.current("DE")
    assert err.value.reason == "no_access"


def test_429_and_5xx_and_timeouts(em_replica, clock):
    provider = make(em_replica, clock, retries=0, timeout_s=0.2)
    em_replica.fail("500")
    with pytest.raises(ProviderUnavailable) as err:
        provider.current("DE")
    assert err.value.reason == "server_error"
    em_replica.delay_s = 1.0
    em_replica.fail("slow")
    with pytest.raises(ProviderUnavailable) as err:
        provider.current("DE")
    assert err.value.reason == "timeout"
    em_replica.retry_after = "5"
    em_replica.fail("429")
    with pytest.raises(ProviderRateLimited) as limited:
        provider.current("DE")
    assert limited.value.retry_after_s == 5


def test_empty_and_partial_forecast(em_replica, clock):
    provider = make(em_replica, clock)
    now = clock.now()
    em_replica.fail("empty")
    with pytest.raises(ProviderDataError) as err:
        provider.forecast("DE", now, now + timedelta(hours=6))
    assert err.value.reason == "empty"
    em_replica.fail("partial")
    with pytest.raises(ProviderDataError) as err:
        provider.forecast("DE", now, now + timedelta(hours=6))
    assert err.value.reason == "bad_payload"
    assert "forecast.3.carbonIntensity" in str(err.value)


def test_history_uses_history_then_past_range_in_ten_day_chunks(em_replica, clock):
    provider = make(em_replica, clock)
    now = clock.now()
    recent = provider.history("DE", now - timedelta(hours=5), now)
    assert [s.start.hour for s in recent] == [8, 9, 10, 11]
    assert len(em_replica.calls("/v3/carbon-intensity/history")) == 1
    older = provider.history("DE", now - timedelta(days=12), now - timedelta(days=1))
    assert len(older) == 11 * 24
    assert len(em_replica.calls("/v3/carbon-intensity/past-range")) == 2
    assert all(s.intensity_g_per_kwh == em_replica.value_at(s.start) for s in older)


# -- the documented examples (carbon-apis.md B.2), served verbatim ----------------------------

LATEST_DE = """{
  "zone": "DE",
  "carbonIntensity": 302,
  "datetime": "2018-04-25T18:07:00.350Z",
  "updatedAt": "2018-04-25T18:07:01.000Z",
  "createdAt": "2018-04-25T18:07:01.000Z",
  "emissionFactorType": "lifecycle",
  "isEstimated": true,
  "estimationMethod": "TIME_SLICER_AVERAGE"
}"""

LATEST_FR_FLOAT = (
    '{"zone": "FR", "carbonIntensity": 58.765447504659946, '
    '"datetime": "2025-11-21T19:00:00.000Z", "updatedAt": "2025-11-21T19:09:54.950Z"}'
)

FORECAST_DK2 = """{
  "zone": "DK-DK2",
  "forecast": [
    {"carbonIntensity": 326, "datetime": "2018-11-26T17:00:00.000Z"},
    {"carbonIntensity": 297, "datetime": "2018-11-26T18:00:00.000Z"},
    {"carbonIntensity": 194, "datetime": "2018-11-28T17:00:00.000Z"}
  ],
  "updatedAt": "2018-11-26T17:25:24.685Z"
}"""

HISTORY_DE = """{
  "zone": "DE",
  "history": [
    {"zone": "DE", "carbonIntensity": 413, "datetime": "2021-08-18T13:00:00.000Z",
     "updatedAt": "2021-08-19T08:40:20.886Z", "createdAt": "2021-08-15T13:40:15.544Z",
     "emissionFactorType": "lifecycle", "isEstimated": false, "estimationMethod": null},
    {"zone": "DE", "carbonIntensity": 338, "datetime": "2021-08-19T12:00:00.000Z",
     "updatedAt": "2021-08-19T12:39:55.666Z", "createdAt": "2021-08-16T12:39:45.450Z",
     "emissionFactorType": "lifecycle", "isEstimated": false, "estimationMethod": null}
  ]
}"""

PAST_RANGE_DE = """{
  "zone": "DE",
  "data": [
    {"zone": "DE", "carbonIntensity": 339, "datetime": "2019-05-21T21:00:00.000Z",
     "updatedAt": "2022-04-07T15:32:36.348Z", "createdAt": "2022-02-08T06:20:31.772Z",
     "emissionFactorType": "lifecycle", "isEstimated": false, "estimationMethod": null},
    {"zone": "DE", "carbonIntensity": 317, "datetime": "2019-05-21T22:00:00.000Z",
     "updatedAt": "2022-04-07T15:32:36.348Z", "createdAt": "2022-02-08T06:17:02.676Z",
     "emissionFactorType": "lifecycle", "isEstimated": false, "estimationMethod": null}
  ]
}"""


def test_documented_latest_examples(em_replica, clock):
    provider = make(em_replica, clock)
    em_replica.override("/v3/carbon-intensity/latest", LATEST_DE)
    sample = provider.current("DE")
    assert sample.intensity_g_per_kwh == 302
    assert sample.start == datetime(2018, 4, 25, 18, 7, 0, 350000, tzinfo=UTC)
    assert sample.basis is EmissionBasis.LIFECYCLE  # as the answer says
    assert sample.estimated is True
    assert sample.issued_at == datetime(2018, 4, 25, 18, 7, 1, tzinfo=UTC)
    em_replica.override("/v3/carbon-intensity/latest", LATEST_FR_FLOAT)
    sample = provider.current("FR")
    assert sample.intensity_g_per_kwh == pytest.approx(58.765447504659946)
    assert sample.basis is EmissionBasis.DIRECT  # not stated: the configured basis
    assert sample.estimated is False


def test_documented_forecast_example(em_replica, clock):
    provider = make(em_replica, clock)
    em_replica.override("/v3/carbon-intensity/forecast", FORECAST_DK2)
    t0 = datetime(2018, 11, 26, 17, tzinfo=UTC)
    forecast = provider.forecast("DK-DK2", t0, t0 + timedelta(days=3))
    assert [p.intensity_g_per_kwh for p in forecast.points] == [326, 297, 194]
    assert forecast.points[1].start == t0 + timedelta(hours=1)
    assert forecast.points[1].end == t0 + timedelta(hours=2)  # hourly, not up to the gap
    assert forecast.points[2].start == datetime(2018, 11, 28, 17, tzinfo=UTC)
    assert forecast.issued_at == datetime(2018, 11, 26, 17, 25, 24, 685000, tzinfo=UTC)


def test_documented_history_and_past_range_examples(em_replica, clock):
    provider = make(em_replica, clock)
    clock.set(datetime(2021, 8, 19, 13, 30, tzinfo=UTC))
    em_replica.override("/v3/carbon-intensity/history", HISTORY_DE)
    recent = provider.history("DE", clock.now() - timedelta(hours=24), clock.now())
    assert [s.intensity_g_per_kwh for s in recent] == [338]  # 413 is older than 24 h
    start = datetime(2019, 5, 21, 21, tzinfo=UTC)
    em_replica.override("/v3/carbon-intensity/past-range", PAST_RANGE_DE)
    past = provider.history("DE", start, start + timedelta(hours=2))
    assert [(s.start.hour, s.intensity_g_per_kwh) for s in past] == [(21, 339), (22, 317)]
    assert all(s.basis is EmissionBasis.LIFECYCLE for s in past)
