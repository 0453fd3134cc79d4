"""UK Carbon Intensity API (National Grid ESO / NESO), free, no key, CC BY 4.0.

Location syntax:

* ``""``, ``national`` or ``GB``: Great Britain as a whole (``/intensity...``);
* a region id ``1``..``17`` (also written ``region:13``): 1 North Scotland, 2 South Scotland,
  3 North West England, 4 North East England, 5 Yorkshire, 6 North Wales, 7 South Wales,
  8 West Midlands, 9 East Midlands, 10 East England, 11 South West England, 12 South England,
  13 London, 14 South East England, 15 England, 16 Scotland, 17 Wales;
* an outward postcode such as ``RG41`` or ``SW1`` (a full postcode is cut to its outward
  part).

`current` uses ``/intensity`` (national; the estimated ``actual`` when published, else the
``forecast``) or ``/regional/regionid/{id}`` and ``/regional/postcode/{postcode}``.
`forecast` uses ``.../{from}/fw48h`` (half-hour periods, 48 hours ahead; future periods have
``actual: null``) and `history` uses ``.../{from}/{to}`` (at most 14 days per call). The
signal is an average, direct-emissions intensity in gCO2/kWh, in UTC.

The regional ``/regionid/`` and ``/postcode/`` answers wrap their periods in an object
(``{"data": {"regionid": .., "data": [periods]}}``) while the documentation shows a list;
both shapes are accepted. The API publishes no issue time, so forecasts carry the time
they were fetched.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from ..clock import Clock
from ..config import UkCarbonIntensityConfig
from ..errors import ProviderDataError
from ..models import EmissionBasis, Forecast, ForecastPoint, IntensitySample, SignalKind
from .http import HttpProvider, parse_json, validate

HALF_HOUR = timedelta(minutes=30)
RANGE_MAX = timedelta(days=14)
NATIONAL = frozenset({"", "national", "gb", "uk"})
_OUTWARD = re.compile(r"^[A-Z]{1,2}[0-9][A-Z0-9]?$")


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class _Intensity(_Lenient):
    forecast: float = Field(ge=0)
    actual: float | None = Field(default=None, ge=0)
    index: str | None = None


class _Period(_Lenient):
    start: AwareDatetime = Field(alias="from")
    end: AwareDatetime = Field(alias="to")
    intensity: _Intensity


class _RegionEntry(_Lenient):
    regionid: int
    shortname: str | None = None
    intensity: _Intensity


class _AllRegionsPeriod(_Lenient):
    start: AwareDatetime = Field(alias="from")
    end: AwareDatetime = Field(alias="to")
    regions: list[_RegionEntry]


class _RegionBlock(_Lenient):
    regionid: int | None = None
    shortname: str | None = None
    postcode: str | None = None
    data: list[_Period]


class _Envelope(_Lenient):
    data: list[dict[str, Any]] | dict[str, Any]


def ukci_time(when: datetime) -> str:
    """The API's datetime path format: 2017-08-25T12:35Z (UTC, minutes)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


class UkCarbonIntensityProvider(HttpProvider):
    """api.carbonintensity.org.uk: national, region id or outward postcode."""

    default_base_url = "https://api.carbonintensity.org.uk"

    def __init__(self, name: str, config: UkCarbonIntensityConfig, clock: Clock) -> None:
        super().__init__(name, config, clock)

    # -- locations -------------------------------------------------------------------------

    def _scope(self, location: str) -> tuple[str, str | None]:
        """('national', None) | ('regionid', '13') | ('postcode', 'RG41')."""
        text = location.strip()
        if text.lower() in NATIONAL:
            return "national", None
        lowered = text.lower()
        for prefix in ("region:", "regionid:", "regionid/"):
            if lowered.startswith(prefix):
                text = text[len(prefix) :].strip()
                break
        if text.isdigit():
            if 1 <= int(text) <= 17:
                return "regionid", str(int(text))
            raise self._bad_location(location)
        outward = text.upper().split()[0] if text.split() else ""
        if _OUTWARD.match(outward):
            return "postcode", outward
        raise self._bad_location(location)

    def _bad_location(self, location: str) -> ProviderDataError:
        return ProviderDataError(
            f"{self.name}: {location!r} is not a UK Carbon Intensity location; use 'national', "
            "a region id 1-17, or an outward postcode such as RG41",
            provider=self.name,
            reason="not_found",
        )

    # -- requests --------------------------------------------------------------------------

    def _get(self, path: str, location: str) -> Any:
        try:
            response = self.http.request("GET", path)
        except ProviderDataError as exc:
            if "postcode" in self.http.last_error_body.lower():
                raise ProviderDataError(
                    f"{exc}; check the outward postcode", provider=self.name, reason="not_found"
                ) from None
            raise
        if not response.content.strip():
            # An unknown (well-formed) postcode can come back as an empty 200.
            raise self._empty(path, location)
        return parse_json(self.name, response, path)

    def _periods(self, data: Any, path: str, location: str, regionid: str | None) -> list[_Period]:
        envelope = validate(self.name, _Envelope, data, path)
        items = envelope.data if isinstance(envelope.data, list) else [envelope.data]
        periods: list[_Period] = []
        for item in items:
            if "data" in item:
                periods.extend(validate(self.name, _RegionBlock, item, path).data)
            elif "regions" in item:
                block = validate(self.name, _AllRegionsPeriod, item, path)
                match = [r for r in block.regions if regionid and str(r.regionid) == regionid]
                if match:
                    periods.append(
                        _Period.model_validate(
                            {"from": block.start, "to": block.end, "intensity": match[0].intensity}
                        )
                    )
            else:
                periods.append(validate(self.name, _Period, item, path))
        if not periods:
            raise self._empty(path, location)
        by_start = {p.start: p for p in periods}
        return [by_start[t] for t in sorted(by_start)]

    def _prefix_suffix(self, location: str) -> tuple[str, str, str | None]:
        scope, value = self._scope(location)
        if scope == "national":
            return "intensity", "", None
        return "regional/intensity", f"/{scope}/{value}", value if scope == "regionid" else None

    def _sample(self, location: str, period: _Period) -> IntensitySample:
        actual = period.intensity.actual
        return IntensitySample(
            region=location,
            start=period.start,
            end=period.end,
            intensity_g_per_kwh=actual if actual is not None else period.intensity.forecast,
            provider=self.name,
            kind=SignalKind.AVERAGE,
            basis=EmissionBasis.DIRECT,
            estimated=actual is None,
            fetched_at=self.clock.now(),
        )

    # -- SignalProvider --------------------------------------------------------------------

    def current(self, location: str) -> IntensitySample:
        return self.cache.get_or_fetch(("current", location), lambda: self._fetch_current(location))

    def _fetch_current(self, location: str) -> IntensitySample:
        scope, value = self._scope(location)
        path = "intensity" if scope == "national" else f"regional/{scope}/{value}"
        periods = self._periods(
            self._get(path, location), path, location, value if scope == "regionid" else None
        )
        now = self.clock.now()
        containing = [p for p in periods if p.start <= now < p.end]
        return self._sample(location, containing[0] if containing else periods[-1])

    def forecast(self, location: str, start: datetime, end: datetime) -> Forecast:
        return self._cached_forecast(
            ("forecast", location),
            lambda: self._fetch_forecast(location),
            location,
            start,
            end,
            ukci_time,
        )

    def _fetch_forecast(self, location: str) -> Forecast:
        prefix, suffix, regionid = self._prefix_suffix(location)
        now = self.clock.now()
        path = f"{prefix}/{ukci_time(now)}/fw48h{suffix}"
        periods = self._periods(self._get(path, location), path, location, regionid)
        points = [
            ForecastPoint(start=p.start, end=p.end, intensity_g_per_kwh=p.intensity.forecast)
            for p in periods
            if p.end > p.start
        ]
        return Forecast(
            region=location,
            provider=self.name,
            issued_at=now,
            kind=SignalKind.AVERAGE,
            basis=EmissionBasis.DIRECT,
            points=points,
        )

    def history(self, location: str, start: datetime, end: datetime) -> list[IntensitySample]:
        """Half-hour values between start and end (``{from}/{to}``, 14-day chunks)."""
        prefix, suffix, regionid = self._prefix_suffix(location)
        out: dict[datetime, IntensitySample] = {}
        chunk_start = start
        while chunk_start < end:
            chunk_end = min(end, chunk_start + RANGE_MAX)
            path = f"{prefix}/{ukci_time(chunk_start)}/{ukci_time(chunk_end)}{suffix}"
            for p in self._periods(self._get(path, location), path, location, regionid):
                if p.end > start and p.start < end:
                    out[p.start] = self._sample(location, p)
            chunk_start = chunk_end
        if not out:
            raise self._empty(f"history between {ukci_time(start)} and {ukci_time(end)}", location)
        return [out[t] for t in sorted(out)]
