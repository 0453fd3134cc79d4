"""The shared HTTP machinery, exercised through real provider clients against the replicas:
retries and backoff, Retry-After, the per-minute cap, timeouts, bad payloads and the cache,
secrets kept out of messages and logs."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from gridshift.scheduler.clock import FakeClock
from gridshift.scheduler.config import (
    ElectricityMapsConfig,
    UkCarbonIntensityConfig,
    WattTimeConfig,
)
from gridshift.scheduler.errors import (
    ProviderAuthError,
    ProviderDataError,
    ProviderRateLimited,
    ProviderUnavailable,
    SignalError,
)
from gridshift.scheduler.signals.electricitymaps import ElectricityMapsProvider
from gridshift.scheduler.signals.http import REASONS, TtlCache, parse_retry_after
from gridshift.scheduler.signals.ukci import UkCarbonIntensityProvider
from gridshift.scheduler.signals.watttime import WattTimeProvider

from ..conftest import free_port
from .conftest import SleepRecorder
from .replicas import ElectricityMapsReplica, UkCarbonIntensityReplica, WattTimeReplica


def uk(replica: UkCarbonIntensityReplica, clock: FakeClock, **cfg: object):
    settings = {"base_url": replica.base_url, "timeout_s": 2.0, "ttl_s": 0.0, "retries": 2}
    settings.update(cfg)
    provider = UkCarbonIntensityProvider("ukci", UkCarbonIntensityConfig(**settings), clock)
    sleeps = SleepRecorder()
    provider.http.sleep = sleeps
    return provider, sleeps


def test_server_errors_are_retried_with_exponential_backoff(uk_replica, clock):
    provider, sleeps = uk(uk_replica, clock, retries=3)
    uk_replica.fail("500", times=2)
    sample = provider.current("national")
    assert sample.intensity_g_per_kwh == round(uk_replica.value_at(sample.start))
    assert len(uk_replica.calls("/intensity")) == 3
    assert sleeps.delays == [0.5, 1.0]


def test_server_errors_past_the_retries_raise_with_the_providers_words(uk_replica, clock):
    provider, sleeps = uk(uk_replica, clock, retries=2)
    uk_replica.fail("500")
    with pytest.raises(ProviderUnavailable) as err:
        provider.current("national")
    assert err.value.reason == "server_error"
    assert err.value.provider == "ukci"
    assert "500" in str(err.value) and "Something went wrong" in str(err.value)
    assert len(uk_replica.calls("/intensity")) == 3
    assert sleeps.delays == [0.5, 1.0]


def test_a_proxy_html_error_page_is_a_server_error(uk_replica, clock):
    provider, _ = uk(uk_replica, clock, retries=0)
    uk_replica.fail("502")
    with pytest.raises(ProviderUnavailable) as err:
        provider.current("national")
    assert err.value.reason == "server_error"
    assert "502 Bad Gateway" in str(err.value)


def test_a_dropped_connection_is_retried_then_succeeds(uk_replica, clock):
    provider, sleeps = uk(uk_replica, clock, retries=2)
    uk_replica.fail("reset", times=1)
    assert provider.current("13").intensity_g_per_kwh > 0
    assert sleeps.delays == [0.5]


def test_a_provider_that_is_down_raises_unavailable_and_recovers(uk_replica, clock):
    provider, _ = uk(uk_replica, clock, retries=1)
    uk_replica.stop()
    with pytest.raises(ProviderUnavailable) as err:
        provider.current("national")
    assert err.value.reason == "unavailable"
    assert "base_url" in str(err.value)
    uk_replica.start()
    assert provider.current("national").provider == "ukci"


def test_a_slow_answer_times_out(uk_replica, clock):
    provider, _ = uk(uk_replica, clock, retries=0, timeout_s=0.2)
    uk_replica.delay_s = 1.5
    uk_replica.fail("slow")
    with pytest.raises(ProviderUnavailable) as err:
        provider.current("national")
    assert err.value.reason == "timeout"
    assert "0.2 s" in str(err.value)


def test_429_honours_retry_after_without_calling_again_before_it(uk_replica, clock):
    provider, sleeps = uk(uk_replica, clock, retries=3)
    uk_replica.retry_after = "120"
    uk_replica.fail("429")
    with pytest.raises(ProviderRateLimited) as err:
        provider.current("national")
    assert err.value.reason == "rate_limited"
    assert err.value.retry_after_s == pytest.approx(120)
    assert len(uk_replica.requests) == 1  # a 429 is not retried at once
    assert sleeps.delays == []
    uk_replica.heal()
    clock.advance(60)
    with pytest.raises(ProviderRateLimited) as again:
        provider.current("national")
    assert again.value.retry_after_s == pytest.approx(60)
    assert len(uk_replica.requests) == 1  # refused locally, the provider was not called
    clock.advance(61)
    assert provider.current("national").provider == "ukci"
    assert len(uk_replica.requests) == 2


def test_retry_after_as_an_http_date():
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("Wed, 01 May 2024 12:01:30 GMT", now) == pytest.approx(90)
    assert parse_retry_after("7", now) == 7
    assert parse_retry_after(None, now) == 60
    assert parse_retry_after("soon", now) == 60


def test_the_per_minute_cap_refuses_locally(uk_replica, clock):
    provider, _ = uk(uk_replica, clock, max_calls_per_min=3)
    for _ in range(3):
        provider.current("national")
    with pytest.raises(ProviderRateLimited) as err:
        provider.current("national")
    assert "3 calls per minute" in str(err.value)
    assert len(uk_replica.requests) == 3
    clock.advance(61)
    provider.current("national")
    assert len(uk_replica.requests) == 4


def test_malformed_json_raises_a_clear_error_and_never_poisons_the_cache(uk_replica, clock):
    provider, _ = uk(uk_replica, clock, ttl_s=300.0)
    uk_replica.fail("malformed", times=1)
    with pytest.raises(ProviderDataError) as err:
        provider.current("national")
    assert err.value.reason == "bad_payload"
    assert "not JSON" in str(err.value)
    good = provider.current("national")  # fetched again: the bad answer was not kept
    assert len(uk_replica.requests) == 2
    uk_replica.fail("malformed")
    assert provider.current("national") == good  # within the TTL: the cached good value
    assert len(uk_replica.requests) == 2
    clock.advance(301)
    with pytest.raises(ProviderDataError):
        provider.current("national")
    uk_replica.heal()
    assert provider.current("national").intensity_g_per_kwh == good.intensity_g_per_kwh


def test_a_partial_payload_names_the_missing_field(uk_replica, clock):
    provider, _ = uk(uk_replica, clock)
    uk_replica.fail("partial")
    with pytest.raises(ProviderDataError) as err:
        provider.current("national")
    assert err.value.reason == "bad_payload"
    assert "intensity.forecast" in str(err.value)


def test_ttl_cache_expires_on_the_injected_clock(clock):
    cache = TtlCache(10, clock)
    calls = []
    assert cache.get_or_fetch("k", lambda: calls.append(1) or "v") == "v"
    assert cache.get_or_fetch("k", lambda: calls.append(1) or "w") == "v"
    clock.advance(10)
    assert cache.get_or_fetch("k", lambda: calls.append(1) or "w") == "w"
    assert len(calls) == 2


def test_constructors_make_no_network_call(clock):
    dead = f"http://127.0.0.1:{free_port()}"
    providers = [
        UkCarbonIntensityProvider("a", UkCarbonIntensityConfig(base_url=dead), clock),
        ElectricityMapsProvider("b", ElectricityMapsConfig(base_url=dead, api_key="k"), clock),
        WattTimeProvider("c", WattTimeConfig(base_url=dead, username="u", password="p"), clock),
    ]
    for provider in providers:
        assert provider.http._session is None
        assert provider.http.calls_made == 0


def test_secrets_never_reach_messages_or_logs(clock, caplog):
    caplog.set_level(logging.DEBUG)
    secret_key = "em-SECRET-key-4711"
    secret_password = "wt-SECRET-pass-0815"
    with ElectricityMapsReplica(clock) as em, WattTimeReplica(clock) as wt:
        em_cfg = ElectricityMapsConfig(base_url=em.base_url, api_key=secret_key, retries=1)
        wt_cfg = WattTimeConfig(
            base_url=wt.base_url, username="wt-user", password=secret_password, retries=1
        )
        em_provider = ElectricityMapsProvider("em", em_cfg, clock)
        wt_provider = WattTimeProvider("wt", wt_cfg, clock)
        for provider in (em_provider, wt_provider):
            provider.http.sleep = SleepRecorder()
        messages = []
        for call in (lambda: em_provider.current("DE"), lambda: wt_provider.current("CAISO_NORTH")):
            with pytest.raises(ProviderAuthError) as err:
                call()
            messages.append(str(err.value))
            assert err.value.reason == "auth"
        em.fail("500")
        em.api_key = secret_key
        with pytest.raises(SignalError) as err5:
            em_provider.current("DE")
        messages.append(str(err5.value))
        # the key was sent, in the header
        assert em.requests[0].headers["auth-token"] == secret_key
    text = "\n".join(messages + [r.getMessage() for r in caplog.records])
    text += repr(em_cfg) + repr(wt_cfg) + repr(em_provider) + repr(wt_provider)
    assert secret_key not in text
    assert secret_password not in text


def test_every_reason_is_in_the_bounded_set(uk_replica, clock):
    provider, _ = uk(uk_replica, clock, retries=0)
    seen = set()
    for mode in ("500", "502", "malformed", "partial", "empty", "429"):
        uk_replica.fail(mode)
        clock.advance(timedelta(hours=1))  # past any Retry-After
        with pytest.raises(SignalError) as err:
            provider.forecast("national", clock.now(), clock.now() + timedelta(hours=4))
        seen.add(err.value.reason)
    assert seen <= REASONS
    assert seen == {"server_error", "bad_payload", "empty", "rate_limited"}
