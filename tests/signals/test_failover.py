"""Failover across live providers: the hub over the API replicas, with metrics on a fresh
registry, and the agent in-process on a fake clock (fail open past the staleness limit)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from gridshift.scheduler.agent import Agent
from gridshift.scheduler.clock import FakeClock
from gridshift.scheduler.config import load_settings
from gridshift.scheduler.metrics import AgentMetrics
from gridshift.scheduler.models import JobSpec, JobState, SignalKind
from gridshift.scheduler.signals import build_hub

from .replicas import ReplicaSet

# Midnight UTC: the replicas' curves are cleanest around noon, so a deferrable job waits.
MIDNIGHT = datetime(2024, 5, 1, 0, 10, tzinfo=UTC)


def settings_for(replicas: ReplicaSet, tmp_path, **overrides):
    fast = {"timeout_s": 2.0, "retries": 0, "ttl_s": 0}
    config = {
        "state_dir": tmp_path,
        "staleness_s": 3600,
        "default_region": "gb",
        "providers": {
            "em": {
                "type": "electricitymaps",
                "base_url": replicas.em.base_url,
                "api_key": replicas.em.api_key,
                **fast,
            },
            "ukci": {"type": "ukci", "base_url": replicas.uk.base_url, **fast},
            "watttime": {
                "type": "watttime",
                "base_url": replicas.wt.base_url,
                "username": replicas.wt.username,
                "password": replicas.wt.password,
                **fast,
            },
            "sdk": {"type": "carbonaware", "base_url": replicas.sdk.base_url, **fast},
        },
        "regions": {
            "gb": {
                "sources": [
                    {"provider": "em", "location": "GB"},
                    {"provider": "ukci", "location": "national"},
                ]
            },
            "caiso": {
                "sources": [
                    {"provider": "watttime", "location": "CAISO_NORTH"},
                    {"provider": "sdk", "location": "westus"},
                ]
            },
        },
    }
    config.update(overrides)
    return load_settings(None, **config)


def sample(registry, name, **labels):
    return registry.get_sample_value(name, labels)


def test_hub_switches_provider_shows_age_and_goes_stale(tmp_path):
    clock = FakeClock(MIDNIGHT)
    replicas = ReplicaSet(clock).start()
    try:
        registry = CollectorRegistry()
        hub = build_hub(settings_for(replicas, tmp_path), clock, AgentMetrics(registry))
        hub.refresh()
        gb = hub.region_signal("gb")
        assert gb.provider == "em" and gb.fresh and gb.age_s == 0
        assert gb.current is not None
        assert gb.current.intensity_g_per_kwh == replicas.em.value_at(
            datetime(2024, 5, 1, tzinfo=UTC)
        )
        assert gb.forecast is not None and gb.forecast.provider == "em"
        caiso = hub.region_signal("caiso")
        assert caiso.provider == "watttime"
        assert caiso.current is not None and caiso.current.kind is SignalKind.MARGINAL
        assert sample(registry, "gridshift_signal_provider_in_use", region="gb", provider="em") == 1
        assert sample(
            registry,
            "gridshift_grid_carbon_intensity_grams_per_kwh",
            region="gb",
            provider="em",
            kind="average",
        ) == pytest.approx(gb.current.intensity_g_per_kwh)

        # Electricity Maps goes down mid-run: the UK API takes over.
        replicas.em.stop()
        clock.advance(timedelta(minutes=10))
        hub.refresh()
        gb = hub.region_signal("gb")
        assert gb.provider == "ukci" and gb.fresh and gb.age_s == 0
        assert gb.forecast is not None and gb.forecast.provider == "ukci"
        assert sample(registry, "gridshift_signal_provider_in_use", region="gb", provider="em") == 0
        assert (
            sample(registry, "gridshift_signal_provider_in_use", region="gb", provider="ukci") == 1
        )
        assert sample(registry, "gridshift_signal_provider_switches_total", region="gb") == 1
        assert (
            sample(
                registry, "gridshift_signal_fetch_errors_total", provider="em", reason="unavailable"
            )
            >= 1
        )
        uk_value = gb.current.intensity_g_per_kwh if gb.current else None
        old_series = {"region": "gb", "provider": "em", "kind": "average"}
        assert (
            registry.get_sample_value("gridshift_grid_carbon_intensity_grams_per_kwh", old_series)
            is None
        )  # the previous provider's value is not left behind
        assert (
            sample(
                registry,
                "gridshift_grid_carbon_intensity_grams_per_kwh",
                region="gb",
                provider="ukci",
                kind="average",
            )
            == uk_value
        )

        # Everything down: the last known value stays in use while it is fresh, with its age.
        replicas.uk.stop()
        clock.advance(timedelta(minutes=40))
        hub.refresh()
        gb = hub.region_signal("gb")
        assert gb.provider == "ukci" and gb.fresh
        assert gb.age_s == 40 * 60
        assert gb.error and gb.error.startswith("em: cannot connect to ")
        assert "; ukci: cannot connect to " in gb.error  # each provider named once
        assert sample(registry, "gridshift_signal_age_seconds", region="gb") == 40 * 60
        assert sample(registry, "gridshift_signal_fresh", region="gb") == 1

        # Past the staleness limit the region is unknown: not fresh, no forecast.
        clock.advance(timedelta(minutes=21))
        hub.refresh()
        gb = hub.region_signal("gb")
        assert not gb.fresh and gb.forecast is None
        assert sample(registry, "gridshift_signal_fresh", region="gb") == 0
        assert sample(registry, "gridshift_signal_age_seconds", region="gb") == 61 * 60

        # Recovery: back to the first provider of the chain.
        replicas.em.start()
        hub.refresh()
        gb = hub.region_signal("gb")
        assert gb.provider == "em" and gb.fresh and gb.age_s == 0
        assert sample(registry, "gridshift_signal_provider_switches_total", region="gb") == 2
    finally:
        replicas.stop()


def test_free_tier_key_gives_current_values_and_the_next_source_gives_forecasts(tmp_path):
    clock = FakeClock(MIDNIGHT)
    replicas = ReplicaSet(clock).start()
    try:
        replicas.em.forecast_access = False
        registry = CollectorRegistry()
        hub = build_hub(settings_for(replicas, tmp_path), clock, AgentMetrics(registry))
        hub.refresh("gb")
        gb = hub.region_signal("gb")
        assert gb.provider == "em"
        assert gb.forecast is not None and gb.forecast.provider == "ukci"
        assert (
            sample(
                registry, "gridshift_signal_fetch_errors_total", provider="em", reason="no_access"
            )
            == 1
        )
        # the refusal is remembered: the next refresh does not ask again
        clock.advance(timedelta(minutes=5))
        hub.refresh("gb")
        assert len(replicas.em.calls("/v3/carbon-intensity/forecast")) == 1
    finally:
        replicas.stop()


def test_a_malformed_answer_falls_over_and_never_crashes_the_hub(tmp_path):
    clock = FakeClock(MIDNIGHT)
    replicas = ReplicaSet(clock).start()
    try:
        registry = CollectorRegistry()
        hub = build_hub(settings_for(replicas, tmp_path), clock, AgentMetrics(registry))
        replicas.wt.fail("malformed")
        hub.refresh("caiso")
        caiso = hub.region_signal("caiso")
        assert caiso.provider == "sdk" and caiso.fresh
        assert (
            sample(
                registry,
                "gridshift_signal_fetch_errors_total",
                provider="watttime",
                reason="bad_payload",
            )
            >= 1
        )
        replicas.wt.heal()
        clock.advance(timedelta(minutes=5))
        hub.refresh("caiso")
        assert hub.region_signal("caiso").provider == "watttime"
    finally:
        replicas.stop()


def test_agent_releases_held_jobs_by_their_latest_start_when_every_provider_is_down(tmp_path):
    clock = FakeClock(MIDNIGHT)
    replicas = ReplicaSet(clock).start()
    registry = CollectorRegistry()
    agent = Agent.build(settings_for(replicas, tmp_path), clock=clock, registry=registry)
    try:
        agent.startup()
        job = agent.submit(
            JobSpec(command=["true"], expected_duration_s=3600, allowed_regions=["gb"]),
            deadline_in_s=20 * 3600,
        )
        assert job.state == JobState.HELD, job.reason
        assert job.planned_start is not None and job.planned_start > clock.now()
        assert sample(registry, "gridshift_signal_provider_in_use", region="gb", provider="em") == 1

        # The first provider goes down mid-run: the agent switches and the job stays held.
        replicas.em.stop()
        clock.advance(timedelta(minutes=5))
        agent.refresh_signals()
        agent.tick()
        assert agent.hub.region_signal("gb").provider == "ukci"
        assert sample(registry, "gridshift_signal_provider_switches_total", region="gb") == 1
        assert agent.store.get_job(job.id).state == JobState.HELD

        # Every provider down: the last value serves until it is stale, then the job is
        # released (fail open), well before its latest start.
        replicas.uk.stop()
        for _ in range(13):  # 65 minutes of 5-minute refreshes and ticks
            clock.advance(timedelta(minutes=5))
            agent.refresh_signals()
            agent.tick()
        released = agent.store.get_job(job.id)
        assert released.state in (JobState.RUNNING, JobState.SUCCEEDED)
        assert released.started_at is not None
        assert released.started_at <= released.latest_start
        assert released.started_at <= MIDNIGHT + timedelta(minutes=5 + 60 + 5)
        assert "fail open" in released.reason or released.state == JobState.SUCCEEDED
        assert sample(registry, "gridshift_signal_fresh", region="gb") == 0
    finally:
        agent.stop()
        replicas.stop()


def test_a_cached_value_keeps_its_age(tmp_path):
    clock = FakeClock(MIDNIGHT)
    replicas = ReplicaSet(clock).start()
    try:
        settings = settings_for(replicas, tmp_path)
        settings.providers["em"].ttl_s = 300  # type: ignore[union-attr]
        hub = build_hub(settings, clock)
        hub.refresh("gb")
        clock.advance(120)
        hub.refresh("gb")  # served from the provider's cache: no new call
        assert len(replicas.em.calls("/v3/carbon-intensity/latest")) == 1
        assert hub.region_signal("gb").age_s == 120
        clock.advance(181)
        hub.refresh("gb")
        assert len(replicas.em.calls("/v3/carbon-intensity/latest")) == 2
        assert hub.region_signal("gb").age_s == 0
    finally:
        replicas.stop()


def test_the_key_can_come_from_the_environment(tmp_path, monkeypatch):
    clock = FakeClock(MIDNIGHT)
    replicas = ReplicaSet(clock).start()
    try:
        monkeypatch.setenv("GRIDSHIFT_PROVIDERS__EM__API_KEY", replicas.em.api_key)
        settings = load_settings(
            None,
            state_dir=tmp_path,
            default_region="gb",
            providers={"em": {"type": "electricitymaps", "base_url": replicas.em.base_url}},
            regions={"gb": {"sources": [{"provider": "em", "location": "GB"}]}},
        )
        hub = build_hub(settings, clock)
        hub.refresh("gb")
        assert hub.region_signal("gb").provider == "em"
        assert replicas.em.requests[0].headers["auth-token"] == replicas.em.api_key
        assert replicas.em.api_key not in repr(settings)
    finally:
        replicas.stop()


def test_with_every_provider_down_a_held_job_still_starts_by_its_latest_start(tmp_path):
    """The last known value is still fresh (6 h staleness) when the latest start comes: the
    job is not held past it."""
    clock = FakeClock(MIDNIGHT)
    replicas = ReplicaSet(clock).start()
    registry = CollectorRegistry()
    agent = Agent.build(
        settings_for(replicas, tmp_path, staleness_s=6 * 3600), clock=clock, registry=registry
    )
    try:
        agent.startup()
        # held for the hours 20 % cleaner by 05:00 (a forecast not yet scored must promise
        # 5 % before a job waits for it)
        job = agent.submit(
            JobSpec(command=["true"], expected_duration_s=3600, allowed_regions=["gb"]),
            deadline_in_s=6 * 3600,
        )
        assert job.state == JobState.HELD, job.reason
        replicas.em.stop()
        replicas.uk.stop()
        latest = job.latest_start
        while clock.now() < latest + timedelta(minutes=10):
            if agent.store.get_job(job.id).state != JobState.HELD:
                break
            clock.advance(timedelta(minutes=5))
            agent.refresh_signals()
            agent.tick()
        started = agent.store.get_job(job.id)
        assert started.started_at is not None, started.reason
        assert started.started_at <= latest
        assert agent.hub.region_signal("gb").fresh  # it was not staleness that released it
    finally:
        agent.stop()
        replicas.stop()
