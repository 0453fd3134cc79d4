"""Electricity Maps API v3 (average carbon intensity, gCO2eq/kWh).

Location syntax: a zone key (``DE``, ``FR``, ``GB``, ``US-CAL-CISO``, ``DK-DK2``) or a
coordinate pair ``"lat,lon"`` (``"52.52,13.40"``), which the API maps to a zone.

Endpoints used (header ``auth-token: <api_key>``):

* ``GET carbon-intensity/latest?zone=..`` -> `current`
* ``GET carbon-intensity/forecast?zone=..`` -> `forecast` (paid plans and trials)
* ``GET carbon-intensity/history?zone=..`` (last 24 h) and ``carbon-intensity/past-range``
  (``start``/``end``, at most 10 days per call) -> `history`

``emissionFactorType`` follows the config (``direct`` or ``lifecycle``) and labels the
values' basis. The signal is an average (consumption-based) intensity. A free-tier key covers
``latest`` and ``history`` for one zone; its forecast call is refused, which raises
``ProviderAuthError`` with reason ``no_access`` and is remembered for a few hours, so the hub
takes forecasts from the next source in the chain while current values still come from here.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from ..clock import Clock
from ..config import ElectricityMapsConfig
from ..errors import ProviderAuthError, ProviderDataError
from ..models import EmissionBasis, Forecast, ForecastPoint, IntensitySample, SignalKind
from .http import HttpProvider, iso_z, parse_json, parse_latlon, step_between, validate

HOURLY = timedelta(hours=1)
PAST_RANGE_MAX = timedelta(days=10)
GRANULARITY = {
    "5_minutes": timedelta(minutes=5),
    "15_minutes": timedelta(minutes=15),
    "hourly": timedelta(hours=1),
    "daily": timedelta(days=1),
}


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Point(_Lenient):
    carbonIntensity: float = Field(ge=0)
    datetime: AwareDatetime
    updatedAt: AwareDatetime | None = None
    emissionFactorType: str | None = None
    isEstimated: bool | None = None


class _Latest(_Point):
    zone: str
    temporalGranularity: str | None = None


class _History(_Lenient):
    zone: str
    history: list[_Point]


class _PastRange(_Lenient):
    zone: str
    data: list[_Point]


class _ForecastPoint(_Lenient):
    carbonIntensity: float = Field(ge=0)
    datetime: AwareDatetime


class _Forecast(_Lenient):
    zone: str
    forecast: list[_ForecastPoint]
    updatedAt: AwareDatetime | None = None
    temporalGranularity: str | None = None


class ElectricityMapsProvider(HttpProvider):
    """Electricity Maps v3: latest, history/past-range and forecast by zone or lat,lon."""

    default_base_url = "https://api.electricitymap.org/v3"

    def __init__(self, name: str, config: ElectricityMapsConfig, clock: Clock) -> None:
        super().__init__(name, config, clock)
        self.em_config = config
        self.basis = EmissionBasis(config.emission_factor_type)

    # -- request helpers -------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        key = self.em_config.api_key
        if key is None or not key.get_secret_value():
            raise ProviderAuthError(
                f"{self.name}: no Electricity Maps API key; set providers.{self.name}.api_key "
                f"or GRIDSHIFT_PROVIDERS__{self.name.upper()}__API_KEY",
                provider=self.name,
                reason="auth",
            )
        return {"auth-token": key.get_secret_value()}

    def _params(self, location: str, **extra: Any) -> dict[str, Any]:
        params: dict[str, Any] = {}
        latlon = parse_latlon(location)
        if latlon is not None:
            params["lat"], params["lon"] = latlon
        elif location.strip():
            params["zone"] = location.strip()
        else:
            raise ProviderDataError(
                f"{self.name}: no zone given; set the region's location to a zone key "
                "(e.g. DE) or 'lat,lon'",
                provider=self.name,
                reason="not_found",
            )
        params["emissionFactorType"] = self.em_config.emission_factor_type
        params.update(extra)
        return params

    def _get(self, path: str, location: str, **extra: Any) -> Any:
        headers = self._headers()
        try:
            response = self.http.request(
                "GET", path, params=self._params(location, **extra), headers=headers
            )
        except ProviderAuthError:
            # "Request unauthorized for zoneKey=..,requestType=..": a valid key whose plan
            # does not cover this endpoint or zone.
            if "unauthorized for zone" in self.http.last_error_body.lower():
                raise ProviderAuthError(
                    f"{self.name}: {path} answered {self.http.last_status}: "
                    f"{self.http.last_error_body}; the key's plan does not cover this for "
                    f"{location!r} (the free tier has latest and history for one zone only), "
                    "so the next source in the chain is used",
                    provider=self.name,
                    reason="no_access",
                ) from None
            raise
        return parse_json(self.name, response, path)

    def _basis(self, reported: str | None) -> EmissionBasis:
        if reported in ("direct", "lifecycle"):
            return EmissionBasis(reported)
        return self.basis

    def _sample(self, location: str, point: _Point, step: timedelta) -> IntensitySample:
        start = point.datetime
        return IntensitySample(
            region=location,
            start=start,
            end=start + step,
            intensity_g_per_kwh=point.carbonIntensity,
            provider=self.name,
            kind=SignalKind.AVERAGE,
            basis=self._basis(point.emissionFactorType),
            estimated=bool(point.isEstimated),
            fetched_at=self.clock.now(),
            issued_at=point.updatedAt,
        )

    # -- SignalProvider --------------------------------------------------------------------

    def current(self, location: str) -> IntensitySample:
        return self.cache.get_or_fetch(("current", location), lambda: self._fetch_current(location))

    def _fetch_current(self, location: str) -> IntensitySample:
        self._check_denied(("current", location))
        path = "carbon-intensity/latest"
        try:
            data = self._get(path, location)
        except ProviderAuthError as exc:
            if exc.reason == "no_access":
                self._remember_denied(("current", location), exc)
            raise
        latest = validate(self.name, _Latest, data, path)
        step = GRANULARITY.get(latest.temporalGranularity or "hourly", HOURLY)
        return self._sample(location, latest, step)

    def forecast(self, location: str, start: datetime, end: datetime) -> Forecast:
        return self._cached_forecast(
            ("forecast", location), lambda: self._fetch_forecast(location), location, start, end
        )

    def _fetch_forecast(self, location: str) -> Forecast:
        self._check_denied(("forecast", location))
        path = "carbon-intensity/forecast"
        try:
            data = self._get(path, location)
        except ProviderAuthError as exc:
            if exc.reason == "no_access":
                self._remember_denied(("forecast", location), exc)
            raise
        parsed = validate(self.name, _Forecast, data, path)
        if not parsed.forecast:
            raise self._empty("forecast", location)
        raw = sorted(parsed.forecast, key=lambda p: p.datetime)
        starts = [p.datetime for p in raw]
        step = GRANULARITY.get(
            parsed.temporalGranularity or "", step_between(starts, default=HOURLY)
        )
        points = []
        for i, p in enumerate(raw):
            end = p.datetime + step
            if i + 1 < len(raw):
                end = min(end, raw[i + 1].datetime)
            if end > p.datetime:
                points.append(
                    ForecastPoint(start=p.datetime, end=end, intensity_g_per_kwh=p.carbonIntensity)
                )
        return Forecast(
            region=location,
            provider=self.name,
            issued_at=parsed.updatedAt or self.clock.now(),
            kind=SignalKind.AVERAGE,
            basis=self.basis,
            points=points,
        )

    def history(self, location: str, start: datetime, end: datetime) -> list[IntensitySample]:
        """Hourly values between start and end: ``history`` when the range lies within the
        last 24 hours, else ``past-range`` in chunks of at most 10 days."""
        now = self.clock.now()
        raw: list[_Point] = []
        if start >= now - timedelta(hours=24):
            path = "carbon-intensity/history"
            raw = validate(self.name, _History, self._get(path, location), path).history
        else:
            path = "carbon-intensity/past-range"
            chunk_start = start
            while chunk_start < end:
                chunk_end = min(end, chunk_start + PAST_RANGE_MAX)
                data = self._get(path, location, start=iso_z(chunk_start), end=iso_z(chunk_end))
                raw.extend(validate(self.name, _PastRange, data, path).data)
                chunk_start = chunk_end
        samples = {
            p.datetime: self._sample(location, p, HOURLY) for p in raw if start <= p.datetime < end
        }
        if not samples:
            raise self._empty(f"history between {iso_z(start)} and {iso_z(end)}", location)
        return [samples[t] for t in sorted(samples)]
