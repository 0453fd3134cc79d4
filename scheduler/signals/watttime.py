"""WattTime API v3 (marginal operating emissions rate, MOER).

Location syntax: a WattTime region code (``CAISO_NORTH``, ``PJM_ROANOKE``, ``SPP_WESTNE``)
or a coordinate pair ``"lat,lon"`` (``"41.5,-104"``), resolved once through
``/v3/region-from-loc`` and remembered.

Authentication: ``GET /login`` with HTTP basic auth (``username``/``password`` from the
config or ``GRIDSHIFT_PROVIDERS__<NAME>__USERNAME`` / ``__PASSWORD``) returns a token that
is valid for 30 minutes; it is sent as ``Authorization: Bearer <token>``, renewed 5 minutes
before it expires and again whenever an endpoint answers 401.

Endpoints used: ``/v3/forecast`` (``horizon_hours=0`` is the nowcast used by `current`; up
to 72 h for `forecast`), ``/v3/historical`` (`history`, in 30-day chunks) and
``/v3/signal-index`` (`percentile`, the current value as a 0-100 percentile).

Values are MOER in lbs CO2/MWh, converted to g/kWh (x 0.45359237) and labelled
``marginal``. Basic (free) accounts see ``CAISO_NORTH`` only: other regions answer 403
"Invalid scope", which raises ``ProviderAuthError`` with reason ``no_access``.
"""

from __future__ import annotations

import math
import threading
from datetime import datetime, timedelta
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from ..clock import Clock
from ..config import WattTimeConfig
from ..errors import ProviderAuthError, ProviderDataError
from ..models import EmissionBasis, Forecast, ForecastPoint, IntensitySample, SignalKind
from .http import HttpProvider, iso_z, parse_json, parse_latlon, validate

LBS_PER_MWH_TO_G_PER_KWH = 0.45359237
"""1 lb = 453.59237 g and 1 MWh = 1000 kWh."""
TOKEN_LIFETIME_S = 30 * 60.0
TOKEN_RENEW_MARGIN_S = 5 * 60.0
HISTORICAL_MAX = timedelta(days=30)
MAX_HORIZON_H = 72
CO2_UNITS = "lbs_co2_per_mwh"


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Login(_Lenient):
    token: str = Field(min_length=1)


class _Region(_Lenient):
    region: str = Field(min_length=1)
    region_full_name: str | None = None


class _Point(_Lenient):
    point_time: AwareDatetime
    value: float


class _Meta(_Lenient):
    data_point_period_seconds: int = Field(gt=0)
    region: str
    signal_type: str
    units: str
    generated_at: AwareDatetime | None = None


class _Series(_Lenient):
    data: list[_Point]
    meta: _Meta


class WattTimeProvider(HttpProvider):
    """WattTime v3: nowcast, forecast, historical and signal-index by region or lat,lon."""

    default_base_url = "https://api.watttime.org"

    def __init__(self, name: str, config: WattTimeConfig, clock: Clock) -> None:
        super().__init__(name, config, clock)
        self.wt_config = config
        self._token: str | None = None
        self._token_at: datetime | None = None
        self._regions: dict[str, str] = {}
        self._token_lock = threading.Lock()
        self.logins = 0

    # -- auth ------------------------------------------------------------------------------

    def _credentials(self) -> tuple[str, str]:
        user = self.wt_config.username
        password = self.wt_config.password
        if not user or password is None or not password.get_secret_value():
            raise ProviderAuthError(
                f"{self.name}: WattTime needs a username and password; set "
                f"providers.{self.name}.username/password or "
                f"GRIDSHIFT_PROVIDERS__{self.name.upper()}__USERNAME/__PASSWORD",
                provider=self.name,
                reason="auth",
            )
        return user, password.get_secret_value()

    def _token_valid(self) -> bool:
        if self._token is None or self._token_at is None:
            return False
        age_s = (self.clock.now() - self._token_at).total_seconds()
        return age_s < TOKEN_LIFETIME_S - TOKEN_RENEW_MARGIN_S

    def _login(self) -> str:
        try:
            response = self.http.request("GET", "login", auth=self._credentials())
        except ProviderAuthError as exc:
            raise ProviderAuthError(
                f"{self.name}: WattTime refused the login ({exc}); check username and password",
                provider=self.name,
                reason="auth",
            ) from None
        login = validate(self.name, _Login, parse_json(self.name, response, "login"), "login")
        self._token = login.token
        self._token_at = self.clock.now()
        self.logins += 1
        return login.token

    def _bearer(self) -> str:
        with self._token_lock:
            if not self._token_valid():
                return self._login()
            assert self._token is not None
            return self._token

    def _get(self, path: str, params: dict[str, Any]) -> Any:
        """GET with the bearer token; on 401 log in again and retry once."""
        for attempt in (0, 1):
            headers = {"Authorization": f"Bearer {self._bearer()}"}
            try:
                response = self.http.request("GET", path, params=params, headers=headers)
            except ProviderAuthError:
                body = self.http.last_error_body.lower()
                if self.http.last_status == 403 and ("scope" in body or "access" in body):
                    raise ProviderAuthError(
                        f"{self.name}: {path} answered 403: {self.http.last_error_body}; the "
                        f"account's plan does not cover region {params.get('region')!r} "
                        "(basic accounts: CAISO_NORTH), so the next source in the chain is used",
                        provider=self.name,
                        reason="no_access",
                    ) from None
                if attempt == 0:
                    self._token = None  # expired or revoked: log in again, retry once
                    continue
                raise
            except ProviderDataError as exc:
                if "no coverage" in self.http.last_error_body.lower():
                    raise ProviderDataError(
                        f"{exc}; WattTime has no {self.wt_config.signal_type} data there",
                        provider=self.name,
                        reason="not_found",
                    ) from None
                raise
            return parse_json(self.name, response, path)
        raise AssertionError("unreachable")

    # -- locations -------------------------------------------------------------------------

    def region_for(self, location: str) -> str:
        """The WattTime region for a location (a region code, or 'lat,lon' looked up once)."""
        location = location.strip()
        latlon = parse_latlon(location)
        if latlon is None:
            if not location:
                raise ProviderDataError(
                    f"{self.name}: no region given; set the location to a WattTime region "
                    "(e.g. CAISO_NORTH) or 'lat,lon'",
                    provider=self.name,
                    reason="not_found",
                )
            return location
        if location not in self._regions:
            path = "v3/region-from-loc"
            params = {
                "latitude": latlon[0],
                "longitude": latlon[1],
                "signal_type": self.wt_config.signal_type,
            }
            found = validate(self.name, _Region, self._get(path, params), path)
            self._regions[location] = found.region
        return self._regions[location]

    # -- parsing ---------------------------------------------------------------------------

    def _series(self, path: str, params: dict[str, Any], location: str) -> _Series:
        series = validate(self.name, _Series, self._get(path, params), path)
        if series.meta.units != CO2_UNITS:
            raise ProviderDataError(
                f"{self.name}: {path} answered in {series.meta.units!r}, not {CO2_UNITS}; "
                "use signal_type co2_moer (or co2_aoer for history) for carbon intensity",
                provider=self.name,
                reason="bad_payload",
            )
        if not series.data:
            raise self._empty(path, location)
        return series

    @staticmethod
    def _g_per_kwh(value_lbs_per_mwh: float) -> float:
        return max(0.0, value_lbs_per_mwh * LBS_PER_MWH_TO_G_PER_KWH)

    # -- SignalProvider --------------------------------------------------------------------

    def current(self, location: str) -> IntensitySample:
        return self.cache.get_or_fetch(("current", location), lambda: self._fetch_current(location))

    def _fetch_current(self, location: str) -> IntensitySample:
        region = self.region_for(location)
        key = ("forecast", region)
        self._check_denied(key)
        params = {"region": region, "signal_type": self.wt_config.signal_type, "horizon_hours": 0}
        try:
            series = self._series("v3/forecast", params, location)
        except ProviderAuthError as exc:
            if exc.reason == "no_access":
                self._remember_denied(key, exc)
            raise
        point = min(series.data, key=lambda p: p.point_time)
        step = timedelta(seconds=series.meta.data_point_period_seconds)
        return IntensitySample(
            region=location,
            start=point.point_time,
            end=point.point_time + step,
            intensity_g_per_kwh=self._g_per_kwh(point.value),
            provider=self.name,
            kind=SignalKind.MARGINAL,
            basis=EmissionBasis.DIRECT,
            estimated=True,
            fetched_at=self.clock.now(),
            issued_at=series.meta.generated_at,
        )

    def forecast(self, location: str, start: datetime, end: datetime) -> Forecast:
        horizon_h = math.ceil((end - self.clock.now()).total_seconds() / 3600)
        horizon_h = max(1, min(MAX_HORIZON_H, horizon_h))
        return self._cached_forecast(
            ("forecast", location, horizon_h),
            lambda: self._fetch_forecast(location, horizon_h),
            location,
            start,
            end,
        )

    def _fetch_forecast(self, location: str, horizon_h: int) -> Forecast:
        region = self.region_for(location)
        key = ("forecast", region)
        self._check_denied(key)
        params = {
            "region": region,
            "signal_type": self.wt_config.signal_type,
            "horizon_hours": horizon_h,
        }
        try:
            series = self._series("v3/forecast", params, location)
        except ProviderAuthError as exc:
            if exc.reason == "no_access":
                self._remember_denied(key, exc)
            raise
        step = timedelta(seconds=series.meta.data_point_period_seconds)
        by_time = {p.point_time: p for p in series.data}
        points = [
            ForecastPoint(start=t, end=t + step, intensity_g_per_kwh=self._g_per_kwh(p.value))
            for t, p in sorted(by_time.items())
        ]
        # Points are a fixed period apart; trim any overlap a coarser period would cause.
        trimmed = [
            q.model_copy(update={"end": min(q.end, points[i + 1].start)})
            if i + 1 < len(points)
            else q
            for i, q in enumerate(points)
        ]
        return Forecast(
            region=location,
            provider=self.name,
            issued_at=series.meta.generated_at or self.clock.now(),
            kind=SignalKind.MARGINAL,
            basis=EmissionBasis.DIRECT,
            points=trimmed,
        )

    def history(self, location: str, start: datetime, end: datetime) -> list[IntensitySample]:
        """MOER values between start and end from ``/v3/historical`` (30-day chunks)."""
        region = self.region_for(location)
        out: dict[datetime, IntensitySample] = {}
        chunk_start = start
        while chunk_start < end:
            chunk_end = min(end, chunk_start + HISTORICAL_MAX)
            params = {
                "region": region,
                "start": iso_z(chunk_start),
                "end": iso_z(chunk_end),
                "signal_type": self.wt_config.signal_type,
            }
            series = self._series("v3/historical", params, location)
            step = timedelta(seconds=series.meta.data_point_period_seconds)
            for p in series.data:
                if start <= p.point_time < end:
                    out[p.point_time] = IntensitySample(
                        region=location,
                        start=p.point_time,
                        end=p.point_time + step,
                        intensity_g_per_kwh=self._g_per_kwh(p.value),
                        provider=self.name,
                        kind=SignalKind.MARGINAL,
                        basis=EmissionBasis.DIRECT,
                        fetched_at=self.clock.now(),
                    )
            chunk_start = chunk_end
        if not out:
            raise self._empty(f"history between {iso_z(start)} and {iso_z(end)}", location)
        return [out[t] for t in sorted(out)]

    def percentile(self, location: str) -> float:
        """The current value as a 0-100 percentile of the region's recent range
        (``/v3/signal-index``; available to every account for every region)."""
        region = self.region_for(location)
        path = "v3/signal-index"
        data = self._get(path, {"region": region, "signal_type": self.wt_config.signal_type})
        series = validate(self.name, _Series, data, path)
        if not series.data:
            raise self._empty(path, location)
        return series.data[-1].value
