"""WattTime v3 client against its replica (login, token renewal, access, units) and the
documented examples."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gridshift.scheduler.config import WattTimeConfig
from gridshift.scheduler.errors import ProviderAuthError, ProviderDataError
from gridshift.scheduler.models import SignalKind
from gridshift.scheduler.signals.watttime import LBS_PER_MWH_TO_G_PER_KWH, WattTimeProvider

from .conftest import SleepRecorder


def make(replica, clock, **cfg):
    settings = {
        "base_url": replica.base_url,
        "username": replica.username,
        "password": replica.password,
        "ttl_s": 0.0,
        "retries": 1,
        "timeout_s": 2.0,
    }
    settings.update(cfg)
    provider = WattTimeProvider("wt", WattTimeConfig(**settings), clock)
    provider.http.sleep = SleepRecorder()
    return provider


def test_conversion_factor():
    # 1 lb = 453.59237 g; 1 MWh = 1000 kWh
    assert pytest.approx(1000 * 0.45359237) == 1000 * LBS_PER_MWH_TO_G_PER_KWH
    assert pytest.approx(453.59237 / 1000) == LBS_PER_MWH_TO_G_PER_KWH


def test_current_is_the_nowcast_converted_and_marginal(wt_replica, clock):
    provider = make(wt_replica, clock)
    sample = provider.current("CAISO_NORTH")
    now = clock.now()
    assert sample.intensity_g_per_kwh == pytest.approx(wt_replica.value_at(now) * 0.45359237)
    assert sample.kind is SignalKind.MARGINAL
    assert (sample.start, sample.end) == (now, now + timedelta(minutes=5))
    assert sample.issued_at == now
    login = wt_replica.calls("/login")[0]
    assert login.headers["authorization"].startswith("Basic ")
    data = wt_replica.calls("/v3/forecast")[0]
    assert data.headers["authorization"].startswith("Bearer ")
    assert data.query == {
        "region": ["CAISO_NORTH"],
        "signal_type": ["co2_moer"],
        "horizon_hours": ["0"],
    }


def test_token_is_reused_then_renewed_before_it_expires(wt_replica, clock):
    provider = make(wt_replica, clock)
    provider.current("CAISO_NORTH")
    clock.advance(timedelta(minutes=20))
    provider.current("CAISO_NORTH")
    assert wt_replica.logins == 1
    clock.advance(timedelta(minutes=6))  # 26 minutes: renewed ahead of the 30-minute expiry
    provider.current("CAISO_NORTH")
    assert wt_replica.logins == 2


def test_a_401_logs_in_again_once(wt_replica, clock):
    provider = make(wt_replica, clock)
    provider.current("CAISO_NORTH")
    wt_replica.revoke_tokens()
    assert provider.current("CAISO_NORTH").intensity_g_per_kwh > 0
    assert wt_replica.logins == 2
    wt_replica.fail("401")  # every data call refused: one re-login, then the error
    with pytest.raises(ProviderAuthError) as err:
        provider.current("CAISO_NORTH")
    assert err.value.reason == "auth"
    assert wt_replica.logins == 3


def test_a_403_html_page_logs_in_again_then_fails(wt_replica, clock):
    provider = make(wt_replica, clock)
    wt_replica.fail("403")
    with pytest.raises(ProviderAuthError) as err:
        provider.current("CAISO_NORTH")
    assert "403 Forbidden" in str(err.value)
    assert wt_replica.logins == 2


def test_wrong_password_is_an_auth_error(wt_replica, clock):
    provider = make(wt_replica, clock, password="nope")
    with pytest.raises(ProviderAuthError) as err:
        provider.current("CAISO_NORTH")
    assert err.value.reason == "auth"
    assert "Invalid username or password" in str(err.value)
    assert "nope" not in str(err.value)


def test_region_outside_the_plan_is_no_access_and_remembered(wt_replica, clock):
    provider = make(wt_replica, clock)
    with pytest.raises(ProviderAuthError) as err:
        provider.current("PJM_ROANOKE")
    assert err.value.reason == "no_access"
    assert "Invalid scope" in str(err.value)
    calls = len(wt_replica.calls("/v3/forecast"))
    now = clock.now()
    with pytest.raises(ProviderAuthError):
        provider.forecast("PJM_ROANOKE", now, now + timedelta(hours=1))
    assert len(wt_replica.calls("/v3/forecast")) == calls


def test_lat_lon_resolves_the_region_once(wt_replica, clock):
    provider = make(wt_replica, clock)
    wt_replica.allowed_regions.add("SPP_WESTNE")
    provider.current("41.5,-104")
    provider.current("41.5,-104")
    assert len(wt_replica.calls("/v3/region-from-loc")) == 1
    assert wt_replica.calls("/v3/forecast")[-1].query["region"] == ["SPP_WESTNE"]
    with pytest.raises(ProviderDataError) as err:
        provider.current("0,0")
    assert err.value.reason == "not_found"
    assert "No coverage" in str(err.value)


def test_forecast_five_minute_points_converted(wt_replica, clock):
    provider = make(wt_replica, clock)
    now = clock.now()
    forecast = provider.forecast("CAISO_NORTH", now, now + timedelta(hours=48))
    assert len(forecast.points) == 48 * 12
    assert wt_replica.calls("/v3/forecast")[-1].query["horizon_hours"] == ["48"]
    p = forecast.points[7]
    assert p.end - p.start == timedelta(minutes=5)
    assert p.intensity_g_per_kwh == pytest.approx(wt_replica.value_at(p.start) * 0.45359237)
    assert forecast.kind is SignalKind.MARGINAL


def test_empty_partial_and_malformed_forecasts(wt_replica, clock):
    provider = make(wt_replica, clock)
    now = clock.now()
    for mode, reason in (
        ("empty", "empty"),
        ("partial", "bad_payload"),
        ("malformed", "bad_payload"),
    ):
        wt_replica.fail(mode)
        with pytest.raises(ProviderDataError) as err:
            provider.forecast("CAISO_NORTH", now, now + timedelta(hours=2))
        assert err.value.reason == reason, mode


def test_history_and_percentile(wt_replica, clock):
    provider = make(wt_replica, clock)
    now = clock.now()
    history = provider.history("CAISO_NORTH", now - timedelta(hours=5), now)
    assert len(history) == 60
    assert history[0].intensity_g_per_kwh == pytest.approx(
        wt_replica.value_at(history[0].start) * 0.45359237
    )
    assert provider.percentile("CAISO_NORTH") == 42.0


def test_health_damage_is_not_a_carbon_intensity(wt_replica, clock):
    provider = make(wt_replica, clock, signal_type="health_damage")
    with pytest.raises(ProviderDataError) as err:
        provider.current("CAISO_NORTH")
    assert "co2_moer" in str(err.value)


# -- the documented examples (carbon-apis.md B.3), served verbatim ----------------------------

FORECAST = """{
    "data": [
       {"point_time": "2022-07-15T00:00:00+00:00", "value": 1048.4131919701972},
       {"point_time": "2022-07-15T00:05:00+00:00", "value": 1051.0880801214637}
    ],
 "meta": {
   "data_point_period_seconds": 300,
    "region": "CAISO_NORTH",
    "warnings": [{"type": "EXAMPLE_WARNING", "message": "This is just an example"}],
     "signal_type": "co2_moer",
     "model": {"date": "2023-03-01"},
     "units": "lbs_co2_per_mwh",
     "generated_at_period_seconds": 300,
     "generated_at": "2022-07-15T00:00:00+00:00"
 }
}"""

HISTORICAL = """{
  "data": [
        {"point_time": "2022-07-15T00:00:00+00:00", "value": 870},
        {"point_time": "2022-07-15T00:05:00+00:00", "value": 860}
  ],
  "meta": {
        "data_point_period_seconds": 300,
        "region": "CAISO_NORTH",
        "warnings": [{"type": "EXAMPLE_WARNING", "message": "This is just an example"}],
        "signal_type": "co2_moer",
        "model": {"type": "binned_regression", "date": "2023-03-01"},
        "units": "lbs_co2_per_mwh"
  }
}"""

SIGNAL_INDEX = """{
  "data": [{"point_time": "2024-06-18T18:40:00+00:00", "value": 96.0}],
  "meta": {
    "data_point_period_seconds": 300,
    "region": "PSCO",
    "signal_type": "co2_moer",
    "units": "percentile",
    "warnings": [],
    "model": {"date": "2022-10-01"}
  }
}"""

REGION_FROM_LOC = '{"region":"SPP_WESTNE","region_full_name":"SPP Western Nebraska"}'


def test_documented_examples(wt_replica, clock):
    provider = make(wt_replica, clock)
    t0 = datetime(2022, 7, 15, tzinfo=UTC)
    clock.set(t0)
    wt_replica.override("/v3/forecast", FORECAST)
    forecast = provider.forecast("CAISO_NORTH", t0, t0 + timedelta(hours=1))
    assert [p.intensity_g_per_kwh for p in forecast.points] == pytest.approx(
        [1048.4131919701972 * 0.45359237, 1051.0880801214637 * 0.45359237]
    )
    assert forecast.points[0].intensity_g_per_kwh == pytest.approx(475.55, abs=0.01)
    assert forecast.issued_at == t0
    current = provider.current("CAISO_NORTH")
    assert current.intensity_g_per_kwh == pytest.approx(475.55, abs=0.01)
    wt_replica.override("/v3/historical", HISTORICAL)
    history = provider.history("CAISO_NORTH", t0, t0 + timedelta(minutes=10))
    assert [round(s.intensity_g_per_kwh, 2) for s in history] == [394.63, 390.09]
    wt_replica.override("/v3/signal-index", SIGNAL_INDEX)
    assert provider.percentile("PSCO") == 96.0
    wt_replica.override("/v3/region-from-loc", REGION_FROM_LOC)
    assert provider.region_for("41.5,-104") == "SPP_WESTNE"
