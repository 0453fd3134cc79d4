"""Green Software Foundation Carbon Aware SDK WebAPI (self-hosted, no authentication).

Location syntax: a location name the SDK instance is configured for, such as an Azure
region (``eastus``, ``northeurope``) or a key of its ``/locations`` map.

Endpoints used:

* ``GET /emissions/bylocation?location=..&time=..&toTime=..`` -> `current` (the most recent
  value of the last two hours) and `history`; items are ``{location, time, rating,
  duration}`` with ``duration`` a .NET TimeSpan (``"00:05:00"``);
* ``GET /emissions/forecasts/current?location=..`` -> `forecast` (the whole forecast the
  data source has, cut to the window asked for); ``forecastData`` items are ``{location,
  timestamp, duration (minutes), value}``. A data source without forecasts answers 501,
  which raises ``ProviderUnavailable`` with reason ``no_access`` and is remembered for a
  few hours.

Values are already in gCO2eq/kWh (the SDK converts WattTime's lbs/MWh). Whether they are
marginal or average depends on the SDK's data source; ``signal_kind`` in the config says
which (WattTime: marginal, the default; Electricity Maps: average).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from ..clock import Clock
from ..config import CarbonAwareSdkConfig
from ..errors import ProviderDataError, ProviderUnavailable
from ..models import EmissionBasis, Forecast, ForecastPoint, IntensitySample, SignalKind
from .http import HttpProvider, iso_z, parse_json, validate

DEFAULT_STEP = timedelta(minutes=5)
CURRENT_LOOKBACK = timedelta(hours=2)
_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?$")


def parse_timespan(text: str) -> timedelta:
    """A .NET TimeSpan as JSON writes it: '00:05:00', '01:00', '1.00:00:00'."""
    match = _TIMESPAN.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a TimeSpan (expected hh:mm:ss)")
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _EmissionsData(_Lenient):
    location: str
    time: AwareDatetime
    rating: float = Field(ge=0)
    duration: timedelta | None = None

    @field_validator("duration", mode="before")
    @classmethod
    def _timespan(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_timespan(value)
        return value


class _DataPoint(_Lenient):
    location: str | None = None
    timestamp: AwareDatetime
    duration: float | None = Field(default=None, ge=0)  # minutes
    value: float = Field(ge=0)


class _ForecastDto(_Lenient):
    generatedAt: AwareDatetime | None = None
    requestedAt: AwareDatetime | None = None
    location: str
    forecastData: list[_DataPoint]


class CarbonAwareSdkProvider(HttpProvider):
    """A Carbon Aware SDK WebAPI instance: emissions by location and current forecasts."""

    default_base_url = "http://localhost:8080"

    def __init__(self, name: str, config: CarbonAwareSdkConfig, clock: Clock) -> None:
        super().__init__(name, config, clock)
        self.kind = SignalKind(config.signal_kind)

    def _get(self, path: str, params: dict[str, Any]) -> Any:
        try:
            response = self.http.request("GET", path, params=params)
        except ProviderDataError as exc:
            if self.http.last_status == 400 and "location" in self.http.last_error_body.lower():
                raise ProviderDataError(
                    f"{exc}; check the location (the SDK lists its own under /locations)",
                    provider=self.name,
                    reason="not_found",
                ) from None
            raise
        if response.status_code == 204 or not response.content.strip():
            return []
        return parse_json(self.name, response, path)

    def _location(self, location: str) -> str:
        if not location.strip():
            raise ProviderDataError(
                f"{self.name}: no location given; set the region's location to one the SDK "
                "knows (e.g. eastus; see its /locations)",
                provider=self.name,
                reason="not_found",
            )
        return location.strip()

    def _emissions(self, location: str, start: datetime, end: datetime) -> list[_EmissionsData]:
        path = "emissions/bylocation"
        data = self._get(
            path, {"location": self._location(location), "time": iso_z(start), "toTime": iso_z(end)}
        )
        items = validate(self.name, _EmissionsList, {"items": data}, path).items
        return sorted(items, key=lambda e: e.time)

    def _sample(self, location: str, item: _EmissionsData, step: timedelta) -> IntensitySample:
        return IntensitySample(
            region=location,
            start=item.time,
            end=item.time + (item.duration or step),
            intensity_g_per_kwh=item.rating,
            provider=self.name,
            kind=self.kind,
            basis=EmissionBasis.DIRECT,
            fetched_at=self.clock.now(),
        )

    # -- SignalProvider --------------------------------------------------------------------

    def current(self, location: str) -> IntensitySample:
        return self.cache.get_or_fetch(("current", location), lambda: self._fetch_current(location))

    def _fetch_current(self, location: str) -> IntensitySample:
        now = self.clock.now()
        items = self._emissions(location, now - CURRENT_LOOKBACK, now)
        if not items:
            raise self._empty("emissions/bylocation", location)
        past = [e for e in items if e.time <= now]
        return self._sample(location, (past or items)[-1], DEFAULT_STEP)

    def forecast(self, location: str, start: datetime, end: datetime) -> Forecast:
        return self._cached_forecast(
            ("forecast", location), lambda: self._fetch_forecast(location), location, start, end
        )

    def _fetch_forecast(self, location: str) -> Forecast:
        """The whole forecast the data source has (no dataStartAt/dataEndAt), cached for
        ttl_s and cut to each caller's window."""
        key = ("forecast", location)
        self._check_denied(key)
        path = "emissions/forecasts/current"
        params = {"location": self._location(location)}
        try:
            data = self._get(path, params)
        except ProviderUnavailable as exc:
            if exc.reason == "no_access":
                self._remember_denied(key, exc)
            raise
        dtos = validate(self.name, _ForecastList, {"items": data}, path).items
        raw = [p for dto in dtos for p in dto.forecastData]
        if not raw:
            raise self._empty(path, location)
        by_time = {p.timestamp: p for p in raw}
        times = sorted(by_time)
        points = []
        for i, t in enumerate(times):
            p = by_time[t]
            step = timedelta(minutes=p.duration) if p.duration else DEFAULT_STEP
            point_end = t + step
            if i + 1 < len(times):
                point_end = min(point_end, times[i + 1])
            points.append(ForecastPoint(start=t, end=point_end, intensity_g_per_kwh=p.value))
        issued = [d.generatedAt for d in dtos if d.generatedAt is not None]
        return Forecast(
            region=location,
            provider=self.name,
            issued_at=max(issued) if issued else self.clock.now(),
            kind=self.kind,
            basis=EmissionBasis.DIRECT,
            points=points,
        )

    def history(self, location: str, start: datetime, end: datetime) -> list[IntensitySample]:
        """Values between start and end from ``/emissions/bylocation``."""
        items = [e for e in self._emissions(location, start, end) if start <= e.time < end]
        if not items:
            raise self._empty(f"emissions between {iso_z(start)} and {iso_z(end)}", location)
        by_time = {e.time: self._sample(location, e, DEFAULT_STEP) for e in items}
        return [by_time[t] for t in sorted(by_time)]


class _EmissionsList(_Lenient):
    items: list[_EmissionsData]


class _ForecastList(_Lenient):
    items: list[_ForecastDto]
