"""Every provider client against its replica under each generic failure: 429 with
Retry-After, 5xx (JSON and proxy HTML), a dropped connection, a slow answer, malformed JSON
and an empty forecast. Each must raise its SignalError with the bounded reason, and recover
once the replica heals."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gridshift.scheduler.config import (
    CarbonAwareSdkConfig,
    ElectricityMapsConfig,
    UkCarbonIntensityConfig,
    WattTimeConfig,
)
from gridshift.scheduler.errors import ProviderRateLimited, SignalError
from gridshift.scheduler.signals.carbonaware import CarbonAwareSdkProvider
from gridshift.scheduler.signals.electricitymaps import ElectricityMapsProvider
from gridshift.scheduler.signals.ukci import UkCarbonIntensityProvider
from gridshift.scheduler.signals.watttime import WattTimeProvider

from .conftest import SleepRecorder
from .replicas import (
    CarbonAwareSdkReplica,
    ElectricityMapsReplica,
    UkCarbonIntensityReplica,
    WattTimeReplica,
)

COMMON = {"timeout_s": 0.3, "retries": 0, "ttl_s": 0.0}


def em(clock):
    replica = ElectricityMapsReplica(clock)
    cfg = ElectricityMapsConfig(base_url=replica.base_url, api_key=replica.api_key, **COMMON)
    return replica, ElectricityMapsProvider("em", cfg, clock), "DE"


def wt(clock):
    replica = WattTimeReplica(clock)
    cfg = WattTimeConfig(
        base_url=replica.base_url, username=replica.username, password=replica.password, **COMMON
    )
    return replica, WattTimeProvider("wt", cfg, clock), "CAISO_NORTH"


def uk(clock):
    replica = UkCarbonIntensityReplica(clock)
    cfg = UkCarbonIntensityConfig(base_url=replica.base_url, **COMMON)
    return replica, UkCarbonIntensityProvider("uk", cfg, clock), "13"


def sdk(clock):
    replica = CarbonAwareSdkReplica(clock)
    cfg = CarbonAwareSdkConfig(base_url=replica.base_url, **COMMON)
    return replica, CarbonAwareSdkProvider("sdk", cfg, clock), "eastus"


FACTORIES = {"electricitymaps": em, "watttime": wt, "ukci": uk, "carbonaware": sdk}

MODES = [
    ("500", "server_error"),
    ("502", "server_error"),
    ("reset", "unavailable"),
    ("slow", "timeout"),
    ("malformed", "bad_payload"),
    ("partial", "bad_payload"),
    ("empty", "empty"),
]


@pytest.fixture(params=sorted(FACTORIES))
def setup(request, clock):
    replica, provider, location = FACTORIES[request.param](clock)
    provider.http.sleep = SleepRecorder()
    replica.delay_s = 1.0
    replica.start()
    yield replica, provider, location
    replica.stop()


@pytest.mark.parametrize(("mode", "reason"), MODES)
def test_forecast_failure_then_recovery(setup, clock, mode, reason):
    replica, provider, location = setup
    now = clock.now()
    replica.fail(mode)
    with pytest.raises(SignalError) as err:
        provider.forecast(location, now, now + timedelta(hours=6))
    assert err.value.reason == reason, str(err.value)
    assert err.value.provider == provider.name
    replica.heal()
    forecast = provider.forecast(location, now, now + timedelta(hours=6))
    assert forecast.points and forecast.provider == provider.name


def test_429_with_retry_after(setup, clock):
    replica, provider, location = setup
    replica.retry_after = "90"
    replica.fail("429")
    with pytest.raises(ProviderRateLimited) as err:
        provider.current(location)
    assert err.value.retry_after_s == pytest.approx(90)
    replica.heal()
    data_calls = len([r for r in replica.requests if r.path != "/login"])
    with pytest.raises(ProviderRateLimited):
        provider.current(location)
    assert len([r for r in replica.requests if r.path != "/login"]) == data_calls
    clock.advance(91)
    assert provider.current(location).intensity_g_per_kwh >= 0
