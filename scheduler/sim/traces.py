"""Carbon traces on a uniform slot grid, and the forecast models the simulator offers."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..signals.replay import load_trace

DAY_S = 86400.0


@dataclass
class RegionTrace:
    """Actual intensity of one region, one value per slot from `origin_s`."""

    name: str
    origin_s: float
    slot_s: float
    values: np.ndarray
    path: Path | None = None

    def __len__(self) -> int:
        return int(self.values.size)

    def slot_of(self, t_s: float) -> int:
        return math.floor((t_s - self.origin_s) / self.slot_s + 1e-9)

    def time_of(self, slot: int) -> datetime:
        return datetime.fromtimestamp(self.origin_s + slot * self.slot_s, UTC)

    def window(self, start_s: float, days: float) -> RegionTrace:
        """The part of the trace from `start_s` for `days` days."""
        a = max(0, self.slot_of(start_s))
        b = min(len(self), a + round(days * DAY_S / self.slot_s))
        return RegionTrace(
            self.name, self.origin_s + a * self.slot_s, self.slot_s, self.values[a:b], self.path
        )


def aligned_windows(
    traces: dict[str, RegionTrace], start_s: float, days: float
) -> dict[str, RegionTrace]:
    """The same `days` from `start_s` of several regions' traces, on one slot clock (for
    runs that relocate jobs between them). Raises ConfigError where a trace does not cover
    the whole window."""
    out = {name: t.window(start_s, days) for name, t in traces.items()}
    want = round(days * DAY_S / next(iter(out.values())).slot_s)
    for name, w in out.items():
        if len(w) < want or abs(w.origin_s - start_s) >= w.slot_s:
            first = datetime.fromtimestamp(traces[name].origin_s, UTC)
            start = datetime.fromtimestamp(start_s, UTC)
            span_d = len(traces[name]) * w.slot_s / DAY_S
            raise ConfigError(
                f"the {name} trace (from {first:%Y-%m-%d}, {span_d:.0f} days) does not cover "
                f"{days:g} days from {start:%Y-%m-%d}; regions run together need traces of "
                "the same period"
            )
    origin = min(w.origin_s for w in out.values())
    return {
        name: RegionTrace(w.name, origin, w.slot_s, w.values[:want], w.path)
        for name, w in out.items()
    }


def region_trace(path: str | Path, slot_s: float, name: str | None = None) -> RegionTrace:
    """Load any trace layout (through the replay loader) and average it onto `slot_s` slots.
    Slots with no value take the previous slot's value (gaps in the source)."""
    trace = load_trace(path)
    starts = np.asarray(trace.starts_s, dtype=float)
    ends = np.asarray(trace.ends_s, dtype=float)
    vals = np.asarray(trace.values, dtype=float)
    origin = math.ceil(starts[0] / slot_s) * slot_s
    n = int((ends[-1] - origin) // slot_s)
    if n < 2:
        raise ConfigError(f"trace {path} is shorter than two slots of {slot_s:.0f} s")
    weight = np.zeros(n)
    total = np.zeros(n)
    # Each source interval contributes to the slots it overlaps, by overlap length.
    for s, e, v in zip(starts, ends, vals, strict=True):
        i0 = max(0, int((s - origin) // slot_s))
        i1 = min(n - 1, int((e - origin - 1e-6) // slot_s))
        for i in range(i0, i1 + 1):
            lo = max(s, origin + i * slot_s)
            hi = min(e, origin + (i + 1) * slot_s)
            if hi > lo:
                weight[i] += hi - lo
                total[i] += (hi - lo) * v
    out = np.full(n, np.nan)
    ok = weight > 0
    out[ok] = total[ok] / weight[ok]
    for i in range(n):  # forward-fill gaps
        if np.isnan(out[i]):
            out[i] = out[i - 1] if i else float(np.nanmean(out))
    return RegionTrace(
        name or Path(path).name.split("_")[0], float(origin), slot_s, out, Path(path)
    )


# --------------------------------------------------------------------------------------------
# Forecast models: values(t, h) -> intensity for slots t .. t+h-1 as known at slot t.
# Index 0 is always the measured value of slot t.


class PerfectForecast:
    name = "perfect"

    def __init__(self, trace: RegionTrace) -> None:
        self.actual = trace.values

    def values(self, t: int, h: int) -> np.ndarray:
        return self.actual[t : t + h].copy()


class NoisyForecast:
    """Actual values plus independent Gaussian errors, sd = error x mean of the trace; one
    error per target slot (as in Let's Wait Awhile), the current slot exact."""

    def __init__(self, trace: RegionTrace, error: float, seed: int = 0) -> None:
        self.name = f"noise{round(error * 100)}%"
        self.actual = trace.values
        rng = np.random.default_rng(seed)
        self.eps = rng.normal(0.0, error * float(np.mean(trace.values)), size=len(trace))

    def values(self, t: int, h: int) -> np.ndarray:
        out = np.maximum(0.0, self.actual[t : t + h] + self.eps[t : t + h])
        out[0] = self.actual[t]
        return out


class PastDataForecast:
    """A forecast built from the past only: the mean of the same time of day over the last
    `days` days, plus today's current deviation from that profile, fading over `decay_s`
    (the "same hour on past days blended with the latest value" model)."""

    name = "realistic"

    def __init__(self, trace: RegionTrace, days: int = 7, decay_s: float = 6 * 3600.0) -> None:
        self.actual = trace.values
        self.day = max(1, round(DAY_S / trace.slot_s))
        self.days = days
        self.decay_slots = decay_s / trace.slot_s

    def _profile(self, t: int, target: np.ndarray) -> np.ndarray:
        """Mean of the values at the same time of day on the `days` days before slot t."""
        a, day = self.actual, self.day
        # the most recent past slot with the target's time of day
        back = np.maximum(1, np.ceil((target - t) / day)).astype(int) * day
        acc = np.zeros(target.size)
        n = np.zeros(target.size)
        for k in range(self.days):
            src = target - back - k * day
            ok = src >= 0
            acc[ok] += a[src[ok]]
            n[ok] += 1
        out = np.where(n > 0, acc / np.maximum(n, 1), a[t])
        return out

    def values(self, t: int, h: int) -> np.ndarray:
        a = self.actual
        h = min(h, len(a) - t)
        i = np.arange(h)
        prof = self._profile(t, t + i)
        anomaly = a[t] - self._profile(t, np.array([t + self.day]))[0]
        out = np.maximum(0.0, prof + anomaly * np.exp(-i / self.decay_slots))
        out[0] = a[t]
        return out


class HistoricalForecast:
    """Real issued forecasts (request_time, forecast_time, value) averaged onto the slots;
    beyond the issued horizon, the past-data model."""

    name = "historical"

    def __init__(self, trace: RegionTrace, path: str | Path) -> None:
        self.trace = trace
        self.fallback = PastDataForecast(trace)
        issued: dict[float, list[tuple[float, float]]] = {}
        with open(path, encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            next(reader)
            for row in reader:
                if len(row) < 3 or not row[2].strip():
                    continue
                req = _ts(row[0])
                issued.setdefault(req, []).append((_ts(row[1]), float(row[2])))
        self.requests = np.array(sorted(issued))
        self.issued = issued

    def values(self, t: int, h: int) -> np.ndarray:
        out = self.fallback.values(t, h)
        now_s = self.trace.origin_s + t * self.trace.slot_s
        k = int(np.searchsorted(self.requests, now_s, side="right")) - 1
        if k < 0:
            return out
        slot = self.trace.slot_s
        sums: dict[int, list[float]] = {}
        for ft, v in self.issued[float(self.requests[k])]:
            i = int((ft - now_s) // slot)
            if 1 <= i < out.size:
                sums.setdefault(i, []).append(v)
        for i, vs in sums.items():
            out[i] = float(np.mean(vs))
        return out


def _ts(text: str) -> float:
    text = text.strip()
    for fmt in ("%Y-%m-%d %H:%M:%S%z", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"):
        try:
            d = datetime.strptime(text, fmt)
        except ValueError:
            continue
        return (d if d.tzinfo else d.replace(tzinfo=UTC)).timestamp()
    raise ConfigError(f"unrecognised timestamp {text!r} in the forecast archive")


ForecastModel = PerfectForecast | NoisyForecast | PastDataForecast | HistoricalForecast


def make_forecast(
    kind: str, trace: RegionTrace, seed: int = 0, archive: Path | None = None
) -> ForecastModel:
    """kind: perfect | noise5 | noise10 | noise20 | noise<N> | realistic | historical."""
    if kind == "perfect":
        return PerfectForecast(trace)
    if kind.startswith("noise"):
        return NoisyForecast(trace, float(kind[5:].rstrip("%")) / 100.0, seed)
    if kind == "realistic":
        return PastDataForecast(trace)
    if kind == "historical":
        if archive is None:
            raise ConfigError(
                f"no historical forecast archive for {trace.name}; use perfect, noise<N> or "
                "realistic"
            )
        return HistoricalForecast(trace, archive)
    raise ConfigError(
        f"unknown forecast model {kind!r}; use perfect, noise5, noise10, noise20, realistic or "
        "historical"
    )
