"""A forecast made from measured values alone, for a region none of whose providers gives
one (a free-tier key with current values only, a provider without forecast access).

The hub records every current value it fetches onto hourly slots. Once a day of them is
known, the forecast for each coming hour is the mean of the same hour of the day over the
last `days` days, plus the deviation measured now from that profile, fading with time
constant `decay_s`: the "past data" forecast model of the simulator, on which the benchmark
measures what gridshift saves with it (deploy/docs/planner.md). Its error is scored like any
provider's forecast, so the planner trusts it as far as it has been right.

Nothing here does I/O; `state()` and `restore()` turn the history into plain data and back,
so the agent keeps it in its store across restarts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

STATE_VERSION = 1
DAY_S = 86400.0


class MeasuredHistory:
    """Measured intensities, time-weighted onto `slot_s` slots, for the last `days` days."""

    def __init__(
        self,
        *,
        slot_s: float = 3600.0,
        days: int = 7,
        decay_s: float = 6 * 3600.0,
        min_hours_of_day: int = 18,
    ) -> None:
        if DAY_S % slot_s:
            raise ValueError("slot_s must divide a day")
        if days < 1 or decay_s <= 0:
            raise ValueError("need days >= 1 and decay_s > 0")
        self.slot_s = slot_s
        self.days = days
        self.decay_s = decay_s
        self.day_slots = int(DAY_S // slot_s)
        # how many slots of the day must be known before a forecast is made
        self.min_known = min(self.day_slots, math.ceil(min_hours_of_day * 3600.0 / slot_s))
        # (start_s, end_s) -> g/kWh: each measured interval once, at its latest value (a
        # provider's estimate is replaced by its measurement; refreshes see it again)
        self._intervals: dict[tuple[float, float], float] = {}

    def record(self, start_s: float, end_s: float, value: float) -> None:
        """A measured value over [start_s, end_s)."""
        if not (math.isfinite(value) and end_s > start_s):
            return
        self._intervals[(float(start_s), float(end_s))] = float(value)
        oldest = end_s - (self.days + 1) * DAY_S
        for key in [k for k in self._intervals if k[1] < oldest]:
            del self._intervals[key]

    def profile(self, now_s: float) -> list[float] | None:
        """Mean of each slot of the day over the last `days` days before now's slot, or None
        while fewer than `min_known` slots of the day have been measured."""
        k_now = int(now_s // self.slot_s)
        first = k_now - self.days * self.day_slots
        slots: dict[int, list[float]] = {}  # slot -> [value x seconds, seconds]
        for (start_s, end_s), value in self._intervals.items():
            k = int(start_s // self.slot_s)
            while k * self.slot_s < end_s and k < k_now:
                lo, hi = max(start_s, k * self.slot_s), min(end_s, (k + 1) * self.slot_s)
                if k >= first and hi > lo:
                    acc = slots.setdefault(k, [0.0, 0.0])
                    acc[0] += value * (hi - lo)
                    acc[1] += hi - lo
                k += 1
        sums = [0.0] * self.day_slots
        counts = [0] * self.day_slots
        for k, (total, seconds) in slots.items():
            sums[k % self.day_slots] += total / seconds
            counts[k % self.day_slots] += 1
        known = [i for i, c in enumerate(counts) if c]
        if len(known) < self.min_known:
            return None
        mean = sum(sums[i] / counts[i] for i in known) / len(known)
        return [sums[i] / counts[i] if counts[i] else mean for i in range(self.day_slots)]

    def forecast(
        self, now_s: float, horizon_s: float, current_g_per_kwh: float
    ) -> list[tuple[float, float, float]] | None:
        """(start_s, end_s, g/kWh) for the slots from now's to `horizon_s` ahead, or None
        while too little has been measured. The first slot is now's, at the value measured
        now."""
        prof = self.profile(now_s)
        if prof is None:
            return None
        k_now = int(now_s // self.slot_s)
        anomaly = current_g_per_kwh - prof[k_now % self.day_slots]
        n = max(1, math.ceil(horizon_s / self.slot_s))
        decay_slots = self.decay_s / self.slot_s
        out = [(k_now * self.slot_s, (k_now + 1) * self.slot_s, current_g_per_kwh)]
        for i in range(1, n):
            k = k_now + i
            value = prof[k % self.day_slots] + anomaly * math.exp(-i / decay_slots)
            out.append((k * self.slot_s, (k + 1) * self.slot_s, max(0.0, value)))
        return out

    def state(self) -> dict[str, Any]:
        """What has been measured, as JSON-ready data (see `restore`)."""
        return {
            "version": STATE_VERSION,
            "intervals": [[s0, s1, v] for (s0, s1), v in sorted(self._intervals.items())],
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take back what `state()` returned. Raises ValueError, and changes nothing, if
        the data is not such a state."""
        try:
            if state.get("version") != STATE_VERSION:
                raise ValueError(f"unknown history state version {state.get('version')!r}")
            intervals = {(float(s0), float(s1)): float(v) for s0, s1, v in state["intervals"]}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"malformed measured history: {exc!r}") from exc
        if any(not (math.isfinite(v) and s1 > s0) for (s0, s1), v in intervals.items()):
            raise ValueError("malformed measured history: empty interval or non-finite value")
        self._intervals = intervals
