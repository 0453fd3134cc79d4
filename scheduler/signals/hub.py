"""The signal hub: for each region, a fallback chain of (provider, location), the value in
use, where it came from and how old it is.

`refresh()` walks each region's chain in order and keeps the first current value that
arrives, and the first forecast (a provider that has current values but no forecast
access, such as a free-tier key, is followed by the next one for the forecast). Where no
provider gives a forecast, one is made from the values measured over the last days
(signals/history.py, provider "history"). When every provider fails, the last known value
stays in use until it is older than the staleness limit; then the region is not fresh and
the planner fails open.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ..clock import Clock
from ..errors import NoSignal, SignalError
from ..interfaces import SignalProvider
from ..metrics import AgentMetrics
from ..models import Forecast, ForecastPoint, IntensitySample, RegionSignal, SignalKind
from .history import MeasuredHistory
from .skill import ForecastSkill

log = logging.getLogger(__name__)

FORECAST_LEADS_H = (1, 6, 24)
SKILLS_VERSION = 2  # skill_state(): each region's skills by forecast provider
HISTORY_PROVIDER = "history"  # the forecast made from measured values (history.py)
BACKFILL_RETRY_S = 6 * 3600.0  # how often to ask a provider for the last day's values
BACKFILL_SPAN = timedelta(hours=23)  # how far back to ask


@dataclass
class _RegionState:
    current: IntensitySample | None = None
    current_provider: str | None = None
    fetched_at: datetime | None = None
    forecast: Forecast | None = None
    error: str | None = None
    errors: dict[str, str] = field(default_factory=dict)
    # each forecast provider's record in this region (a provider taken over after a failure
    # is trusted on its own record, not on the one it replaced)
    skills: dict[str, ForecastSkill] = field(default_factory=dict)
    history: MeasuredHistory = field(default_factory=MeasuredHistory)
    backfilled_at: datetime | None = None


class SignalHub:
    def __init__(
        self,
        providers: dict[str, SignalProvider],
        chains: dict[str, list[tuple[str, str]]],
        clock: Clock,
        *,
        staleness_s: float,
        forecast_horizon_s: float = 48 * 3600.0,
        metrics: AgentMetrics | None = None,
    ) -> None:
        for region, chain in chains.items():
            for provider, _ in chain:
                if provider not in providers:
                    raise ValueError(f"region {region}: unknown provider {provider!r}")
        self.providers = providers
        self.chains = chains
        self.clock = clock
        self.staleness_s = staleness_s
        self.forecast_horizon_s = forecast_horizon_s
        self.metrics = metrics
        self._state = {region: _RegionState() for region in chains}
        self._lock = threading.Lock()

    @property
    def regions(self) -> list[str]:
        return list(self.chains)

    def refresh(self, region: str | None = None) -> None:
        """Fetch current values and forecasts for one region, or all. Never raises for a
        provider failure: it is recorded, counted and shown."""
        for name in [region] if region else list(self.chains):
            self._refresh_region(name)

    def _call(self, provider_name: str, what: str, fn: Any, *args: Any) -> tuple[Any, str | None]:
        try:
            result = fn(*args)
        except SignalError as exc:
            reason = getattr(exc, "reason", "error") or "error"
            if self.metrics:
                self.metrics.signal_fetches.labels(provider=provider_name, outcome="error").inc()
                self.metrics.signal_errors.labels(provider=provider_name, reason=reason).inc()
            log.warning("%s %s from %s failed: %s", what, *args[:1], provider_name, exc)
            text = str(exc)
            if not text.startswith(f"{provider_name}:"):  # most errors name it already
                text = f"{provider_name}: {text}"
            return None, text
        except Exception as exc:  # a provider bug must not stop the agent
            if self.metrics:
                self.metrics.signal_fetches.labels(provider=provider_name, outcome="error").inc()
                self.metrics.signal_errors.labels(provider=provider_name, reason="bug").inc()
            log.exception("%s from %s raised unexpectedly", what, provider_name)
            return None, f"{provider_name}: unexpected {type(exc).__name__}: {exc}"
        if self.metrics:
            self.metrics.signal_fetches.labels(provider=provider_name, outcome="ok").inc()
        return result, None

    def _refresh_region(self, region: str) -> None:
        now = self.clock.now()
        current: IntensitySample | None = None
        current_provider: str | None = None
        current_location = ""
        forecast: Forecast | None = None
        errors: dict[str, str] = {}
        for provider_name, location in self.chains[region]:
            provider = self.providers[provider_name]
            if current is None:
                current, err = self._call(provider_name, "current", provider.current, location)
                if current is not None:
                    current_provider, current_location = provider_name, location
                elif err:
                    errors[provider_name] = err
            if forecast is None and (current is not None or provider_name in errors):
                end = now + timedelta(seconds=self.forecast_horizon_s)
                fc, err = self._call(
                    provider_name, "forecast", provider.forecast, location, now, end
                )
                if fc is not None and fc.points:
                    forecast = fc
                elif err and provider_name not in errors:
                    errors[provider_name] = err
            if current is not None and forecast is not None:
                break
        past = (
            self._backfill(region, current_provider, current_location, now)
            if current_provider is not None and forecast is None
            else []
        )
        with self._lock:
            state = self._state[region]
            previous_provider = state.current_provider
            state.errors = errors
            for sample in past:
                state.history.record(
                    sample.start.timestamp(), sample.end.timestamp(), sample.intensity_g_per_kwh
                )
            if current is not None:
                state.current = current
                state.current_provider = current_provider
                # A provider may serve a value from its own TTL cache: its age counts
                # from when the provider fetched it, not from this refresh.
                fetched = current.fetched_at or now
                state.fetched_at = min(fetched, now)
                state.error = None
            else:
                state.error = "; ".join(errors.values()) or "no provider answered"
            if current is not None:
                state.history.record(
                    current.start.timestamp(),
                    current.end.timestamp(),
                    current.intensity_g_per_kwh,
                )
                if forecast is None and not self._provider_forecast_fresh(state, now):
                    forecast = self._history_forecast(region, state, current, now)
            if forecast is not None:
                state.forecast = forecast
            # Score the forecasts made for the interval just measured, then remember the new
            # one: the planner trusts each region's forecast as far as it has been right.
            if current is not None:
                for skill in state.skills.values():
                    skill.record_actual(
                        current.start.timestamp(),
                        current.end.timestamp(),
                        current.intensity_g_per_kwh,
                    )
            if forecast is not None:
                state.skills.setdefault(forecast.provider, ForecastSkill()).record_forecast(
                    now.timestamp(),
                    (
                        (p.start.timestamp(), p.end.timestamp(), p.intensity_g_per_kwh)
                        for p in forecast.points
                    ),
                )
        if (
            self.metrics
            and current_provider
            and previous_provider
            and current_provider != previous_provider
        ):
            self.metrics.signal_switches.labels(region=region).inc()
            log.warning(
                "region %s now uses %s (was %s)", region, current_provider, previous_provider
            )
        self._export(region)

    def _backfill(
        self, region: str, provider_name: str, location: str, now: datetime
    ) -> list[IntensitySample]:
        """Where the hub must forecast from measured values and has too few of them (an agent
        that has just started), the last day's values from the provider of the current value,
        if it serves its history; asked at most every `BACKFILL_RETRY_S`."""
        with self._lock:
            state = self._state[region]
            if (
                self._provider_forecast_fresh(state, now)
                or state.history.profile(now.timestamp()) is not None
                or (
                    state.backfilled_at is not None
                    and (now - state.backfilled_at).total_seconds() < BACKFILL_RETRY_S
                )
            ):
                return []
            state.backfilled_at = now
        fetch = getattr(self.providers[provider_name], "history", None)
        if fetch is None:
            return []
        # a little under a day: free tiers serve the last 24 hours only (Electricity Maps'
        # `history`), and a range that starts a moment earlier would ask for more
        past, _ = self._call(provider_name, "history", fetch, location, now - BACKFILL_SPAN, now)
        return past or []

    def _provider_forecast_fresh(self, state: _RegionState, now: datetime) -> bool:
        fc = state.forecast
        return (
            fc is not None
            and fc.provider != HISTORY_PROVIDER
            and (now - fc.issued_at).total_seconds() <= self.staleness_s
        )

    def _history_forecast(
        self, region: str, state: _RegionState, current: IntensitySample, now: datetime
    ) -> Forecast | None:
        points = state.history.forecast(
            now.timestamp(), self.forecast_horizon_s, current.intensity_g_per_kwh
        )
        if points is None:
            return None
        return Forecast(
            region=region,
            provider=HISTORY_PROVIDER,
            issued_at=now,
            kind=current.kind,
            basis=current.basis,
            points=[
                ForecastPoint(
                    start=datetime.fromtimestamp(s0, UTC),
                    end=datetime.fromtimestamp(s1, UTC),
                    intensity_g_per_kwh=v,
                )
                for s0, s1, v in points
            ],
        )

    def region_signal(self, region: str) -> RegionSignal:
        if region not in self._state:
            raise NoSignal(f"region {region!r} is not configured", reason="not_found")
        now = self.clock.now()
        with self._lock:
            state = self._state[region]
            age_s = (now - state.fetched_at).total_seconds() if state.fetched_at else None
            fresh = age_s is not None and age_s <= self.staleness_s
            return RegionSignal(
                region=region,
                current=state.current,
                forecast=state.forecast if fresh else None,
                provider=state.current_provider,
                age_s=age_s,
                fresh=fresh,
                error=state.error,
                forecast_error_g_per_kwh=_forecast_error(state),
            )

    def skill_state(self) -> dict[str, dict[str, Any]]:
        """Each region's forecast skill, per forecast provider, as plain data for the
        store."""
        with self._lock:
            return {
                region: {
                    "version": SKILLS_VERSION,
                    "providers": {name: sk.state() for name, sk in state.skills.items()},
                }
                for region, state in self._state.items()
            }

    def restore_skill(self, states: dict[str, Any]) -> None:
        """Take back what `skill_state` returned; regions no longer configured are ignored,
        and a region whose data is malformed, or kept before skills were per provider,
        starts afresh (logged)."""

        def apply(state: _RegionState, data: Any) -> None:
            state.skills = _restore_skills(data)

        self._restore(states, apply, "forecast skill")

    def history_state(self) -> dict[str, dict[str, Any]]:
        """Each region's measured history as plain data, for the store."""
        with self._lock:
            return {region: state.history.state() for region, state in self._state.items()}

    def restore_history(self, states: dict[str, Any]) -> None:
        """Take back what `history_state` returned (as `restore_skill` does)."""
        self._restore(states, lambda state, data: state.history.restore(data), "measured history")

    def _restore(
        self,
        states: dict[str, Any],
        apply: Callable[[_RegionState, Any], None],
        what: str,
    ) -> None:
        """`apply` each configured region's data; one that raises ValueError is logged and
        left as it was."""
        with self._lock:
            for region, data in states.items():
                state = self._state.get(region)
                if state is None:
                    continue
                try:
                    apply(state, data)
                except ValueError as exc:
                    log.warning("region %s: %s not restored (%s)", region, what, exc)

    def snapshot(self) -> dict[str, RegionSignal]:
        return {region: self.region_signal(region) for region in self.chains}

    def intensity_at(self, region: str, when: datetime) -> float | None:
        """Best known intensity for an instant: the current interval, a forecast point, or
        the last known value (None if nothing is known)."""
        with self._lock:
            state = self._state.get(region)
            if state is None or state.current is None:
                return None
            cur = state.current
            if cur.start <= when < cur.end:
                return cur.intensity_g_per_kwh
            if state.forecast is not None:
                for point in state.forecast.points:
                    if point.start <= when < point.end:
                        return point.intensity_g_per_kwh
            return cur.intensity_g_per_kwh

    def _export(self, region: str) -> None:
        if not self.metrics:
            return
        m = self.metrics
        sig = self.region_signal(region)
        m.signal_fresh.labels(region=region).set(1 if sig.fresh else 0)
        if sig.age_s is not None:
            m.signal_age.labels(region=region).set(sig.age_s)
        for provider_name, _ in self.chains[region]:
            m.signal_provider.labels(region=region, provider=provider_name).set(
                1 if provider_name == sig.provider else 0
            )
        if sig.current is not None:
            # One series per region: after a failover the previous provider's series goes,
            # so a sum or max by region never mixes an old value with the one in use.
            for provider_name, _ in self.chains[region]:
                for kind in SignalKind:
                    if (provider_name, kind) != (sig.provider, sig.current.kind):
                        with contextlib.suppress(KeyError):
                            m.intensity.remove(region, provider_name, kind.value)
            m.intensity.labels(
                region=region, provider=sig.provider or "", kind=sig.current.kind.value
            ).set(sig.current.intensity_g_per_kwh)
        if sig.forecast is not None and sig.forecast.points:
            now = self.clock.now()
            for lead_h in FORECAST_LEADS_H:
                at = now + timedelta(hours=lead_h)
                for point in sig.forecast.points:
                    if point.start <= at < point.end:
                        m.forecast_next.labels(region=region, lead=f"{lead_h}h").set(
                            point.intensity_g_per_kwh
                        )
                        break
            horizon = now + timedelta(hours=24)
            values = [p.intensity_g_per_kwh for p in sig.forecast.points if p.start < horizon]
            if values:
                m.forecast_min.labels(region=region, horizon="24h").set(min(values))
        if sig.forecast_error_g_per_kwh is not None:
            m.forecast_error.labels(region=region).set(sig.forecast_error_g_per_kwh)

    def export_ages(self) -> None:
        """Refresh the age gauges between fetches (ages grow even when nothing is fetched)."""
        for region in self.chains:
            self._export(region)


def _forecast_error(state: _RegionState) -> float | None:
    """The measured error of the provider whose forecast the region has now (None until
    that provider's forecasts have been scored)."""
    fc = state.forecast
    skill = state.skills.get(fc.provider) if fc is not None else None
    return skill.error_sd() if skill is not None else None


def _restore_skills(data: Any) -> dict[str, ForecastSkill]:
    """One region's skills from `SignalHub.skill_state`; ValueError if they cannot be."""
    if isinstance(data, dict) and data.get("version") == 1:
        raise ValueError("kept before forecasts were scored per provider: learnt again")
    if not isinstance(data, dict) or data.get("version") != SKILLS_VERSION:
        raise ValueError(f"unknown forecast skills data {str(data)[:60]!r}")
    providers = data.get("providers")
    if not isinstance(providers, dict):
        raise ValueError("malformed forecast skills: no providers")
    skills = {}
    for name, kept in providers.items():
        skill = ForecastSkill()
        skill.restore(kept)  # ValueError if malformed
        skills[str(name)] = skill
    return skills
