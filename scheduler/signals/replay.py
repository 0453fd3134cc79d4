"""Replay a recorded carbon-intensity trace as if it were a live signal.

`load_trace` reads every layout of the traces gridshift knows:

- Electricity Maps exports (both header variants, and spreadsheet-resaved files with
  DD/MM/YYYY times): `Datetime (UTC)` and the `(direct)` column, or the life-cycle column;
- ENTSO-E derived files (`Time,Carbon Intensity`), 15/30 minute steps, with gaps;
- EIA-930 derived files (`timestamp,...,avg_CI`), whose empty rows are skipped;
- two-column files such as WattTime MOER exports (`time,<region>`), BOM or not;
- any of these gzip-compressed (`.gz`).

`ReplayProvider` maps the trace onto the present by shifting it a whole number of weeks, so
the hour of day and the day of week are kept, and serves the value for "now" and a perfect
(optionally noisy) forecast. It does no network I/O.
"""

from __future__ import annotations

import bisect
import csv
import gzip
import io
import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

from ..clock import Clock
from ..config import ReplayProviderConfig
from ..errors import ConfigError, ProviderDataError
from ..models import EmissionBasis, Forecast, ForecastPoint, IntensitySample, SignalKind

BUNDLED_TRACE = "us-ciso_2022_eia930-hpe_hourly.csv.gz"
_TIME_COLUMNS = ("datetime (utc)", "time", "timestamp", "datetime", "date")
_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S%z", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S%z",
                 "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%d/%m/%Y %H:%M", "%d/%m/%Y %H:%M:%S",
                 "%Y-%m-%dT%H:%MZ")  # fmt: skip
_WEEK_S = 7 * 86400


@dataclass(frozen=True)
class Trace:
    """A trace as parallel arrays: interval starts (Unix s, ascending) and values."""

    name: str
    starts_s: list[float]
    ends_s: list[float]
    values: list[float]
    estimated: list[bool]
    kind: SignalKind
    basis: EmissionBasis

    def __len__(self) -> int:
        return len(self.starts_s)

    def samples(self, region: str = "", provider: str = "replay") -> list[IntensitySample]:
        return [
            IntensitySample(
                region=region or self.name,
                start=datetime.fromtimestamp(s, UTC),
                end=datetime.fromtimestamp(e, UTC),
                intensity_g_per_kwh=v,
                provider=provider,
                kind=self.kind,
                basis=self.basis,
                estimated=est,
            )
            for s, e, v, est in zip(
                self.starts_s, self.ends_s, self.values, self.estimated, strict=True
            )
        ]


def _parse_time(text: str) -> datetime:
    text = text.strip()
    for fmt in _TIME_FORMATS:
        try:
            value = datetime.strptime(text, fmt)
        except ValueError:
            continue
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    raise ValueError(f"unrecognised timestamp {text!r}")


def _pick_columns(header: list[str], column: str | None) -> tuple[int, int, int | None, bool]:
    """Return (time index, value index, estimated-flag index, is_lifecycle)."""
    lowered = [h.strip().lstrip("\ufeff").lower() for h in header]
    time_idx = next((lowered.index(c) for c in _TIME_COLUMNS if c in lowered), None)
    if time_idx is None:
        time_idx = 0
    if column is not None:
        if column.lower() not in lowered:
            raise ConfigError(f"trace has no column {column!r}; columns are: {', '.join(header)}")
        value_idx = lowered.index(column.lower())
    else:
        candidates = [
            i for i, h in enumerate(lowered) if "carbon intensity" in h and "(direct)" in h
        ]
        candidates += [i for i, h in enumerate(lowered) if h in ("carbon intensity", "avg_ci")]
        if not candidates and len(lowered) == 2:
            candidates = [1 - time_idx]
        if not candidates:
            raise ConfigError(
                "cannot tell which column holds the intensity; set `column` to one of: "
                + ", ".join(header)
            )
        value_idx = candidates[0]
    est_idx = next((i for i, h in enumerate(lowered) if h == "data estimated"), None)
    name = lowered[value_idx]
    lifecycle = "lca" in name or "life cycle" in name
    return time_idx, value_idx, est_idx, lifecycle


def _open_text(path: Path) -> io.TextIOBase:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return io.StringIO(raw.decode("utf-8-sig"))


def load_trace(path: str | Path, column: str | None = None) -> Trace:
    """Read a trace file (any known layout). Rows without a value are skipped."""
    path = Path(path)
    try:
        handle = _open_text(path)
    except FileNotFoundError:
        raise ConfigError(f"trace file {path} does not exist") from None
    reader = csv.reader(handle)
    try:
        header = next(reader)
    except StopIteration:
        raise ProviderDataError(f"trace file {path} is empty", provider="replay") from None
    lowered = [h.strip().lower() for h in header]
    if "forecast_time" in lowered:
        raise ConfigError(
            f"{path.name} is a forecast archive (request_time, forecast_time, value); "
            "replay the matching actual-values file instead"
        )
    time_idx, value_idx, est_idx, lifecycle = _pick_columns(header, column)
    rows: list[tuple[float, float, bool]] = []
    for line_no, row in enumerate(reader, start=2):
        if len(row) <= max(time_idx, value_idx) or not row[value_idx].strip():
            continue
        try:
            start = _parse_time(row[time_idx]).timestamp()
            value = float(row[value_idx])
        except ValueError as exc:
            raise ProviderDataError(
                f"{path.name} line {line_no}: {exc}", provider="replay"
            ) from None
        if not math.isfinite(value) or value < 0:
            continue
        estimated = est_idx is not None and row[est_idx].strip().lower() == "true"
        rows.append((start, value, estimated))
    if len(rows) < 2:
        raise ProviderDataError(f"trace file {path} holds fewer than two values", provider="replay")
    rows.sort()
    starts = [r[0] for r in rows]
    steps = sorted(b - a for a, b in itertools.pairwise(starts) if b > a)
    typical_step = steps[len(steps) // 2]
    # An interval ends at the next start, unless the gap is long (missing rows): then it
    # lasts one typical step.
    ends = [min(b, a + typical_step) if b > a else a + typical_step
            for a, b in itertools.pairwise(starts)]  # fmt: skip
    ends.append(starts[-1] + typical_step)
    lowered_name = path.name.lower()
    kind = SignalKind.MARGINAL if "moer" in lowered_name else SignalKind.AVERAGE
    basis = (
        EmissionBasis.LIFECYCLE if lifecycle or "entsoe" in lowered_name else EmissionBasis.DIRECT
    )
    return Trace(
        name=path.name.split(".")[0],
        starts_s=starts,
        ends_s=ends,
        values=[r[1] for r in rows],
        estimated=[r[2] for r in rows],
        kind=kind,
        basis=basis,
    )


def bundled_trace_path() -> Path:
    """The licence-clean trace shipped inside the package (see data/ATTRIBUTION.md)."""
    return Path(str(resources.files("gridshift.scheduler") / "data" / BUNDLED_TRACE))


class ReplayProvider:
    """Serves a trace, shifted by whole weeks so that it covers the present."""

    def __init__(self, name: str, config: ReplayProviderConfig, clock: Clock) -> None:
        self.name = name
        self.config = config
        self.clock = clock
        self._traces: dict[str, Trace] = {}

    def _trace(self, location: str) -> Trace:
        key = location or self.config.path or ""
        trace = self._traces.get(key)
        if trace is None:
            path = Path(key) if key else bundled_trace_path()
            trace = load_trace(path, self.config.column)
            self._traces[key] = trace
        return trace

    @staticmethod
    def _cycle_s(trace: Trace) -> float:
        span = trace.ends_s[-1] - trace.starts_s[0]
        weeks = max(1, int(span // _WEEK_S))
        return float(weeks * _WEEK_S) if span >= _WEEK_S else span

    def _iter_from(self, trace: Trace, at_s: float) -> Iterator[tuple[float, float, float, bool]]:
        """Intervals (start, end, value, estimated) in real time, from the one holding at_s."""
        cycle = self._cycle_s(trace)
        t0 = trace.starts_s[0]
        k = math.floor((at_s - t0) / cycle)
        pos = at_s - k * cycle
        i = max(0, bisect.bisect_right(trace.starts_s, pos) - 1)
        while True:
            shift = k * cycle
            while i < len(trace) and trace.starts_s[i] < t0 + cycle:
                start = trace.starts_s[i] + shift
                end = min(trace.ends_s[i], t0 + cycle) + shift
                yield start, end, trace.values[i], trace.estimated[i]
                i += 1
            k += 1
            i = 0

    def current(self, location: str) -> IntensitySample:
        trace = self._trace(location)
        now = self.clock.now()
        start, end, value, estimated = next(self._iter_from(trace, now.timestamp()))
        return IntensitySample(
            region=location or trace.name,
            start=datetime.fromtimestamp(start, UTC),
            end=datetime.fromtimestamp(end, UTC),
            intensity_g_per_kwh=value,
            provider=self.name,
            kind=trace.kind,
            basis=trace.basis,
            estimated=estimated,
            fetched_at=now,
        )

    def forecast(self, location: str, start: datetime, end: datetime) -> Forecast:
        trace = self._trace(location)
        now = self.clock.now()
        horizon_end = min(end, now + timedelta(seconds=self.config.forecast_horizon_s))
        noise = self.config.noise_pct / 100.0
        # Noise is repeatable for one forecast issue (the hour it was issued in).
        rng = random.Random(int(now.timestamp() // 3600))
        mean = sum(trace.values) / len(trace)
        points: list[ForecastPoint] = []
        for s, e, value, _ in self._iter_from(trace, start.timestamp()):
            if s >= horizon_end.timestamp():
                break
            if noise:
                value = max(0.0, value + rng.gauss(0.0, noise * mean))
            points.append(
                ForecastPoint(
                    start=datetime.fromtimestamp(s, UTC),
                    end=datetime.fromtimestamp(e, UTC),
                    intensity_g_per_kwh=value,
                )
            )
        return Forecast(
            region=location or trace.name,
            provider=self.name,
            issued_at=now,
            kind=trace.kind,
            basis=trace.basis,
            points=points,
        )
