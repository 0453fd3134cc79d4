"""How good a region's forecasts have been: forecast values are remembered by target
interval, and when the measured value for that interval arrives, the error is scored.

The planner uses the result (`RegionSignal.forecast_error_g_per_kwh`) to know how much to
trust the forecast: a forecast that has been exact is taken as it is; one that has been
wrong by 40 g/kWh may be smoothed (if its shape shows independent errors), and held plans
in that region are then made afresh at every tick. Nothing here does I/O; the agent's
signal hub and the simulator feed it. `state()` and `restore()` turn what has been learnt
into plain data and back, so the agent keeps it in its store across restarts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

STATE_VERSION = 1


class ForecastSkill:
    """Root mean square of (forecast - measured) for one provider's forecasts of one
    region (the hub keeps one per provider), over forecasts made
    `min_lead_s` to `max_lead_s` ahead of their target, weighted towards recent targets.

    For each target interval, one forecast per hour of lead is kept (the latest made in
    that hour), so a forecast fetched every few minutes does not outweigh a daily one.
    Each measured target contributes the mean squared error of its kept forecasts; targets
    are averaged with an exponential weight of `1 / memory` (a plain mean until then).
    """

    def __init__(
        self,
        *,
        min_lead_s: float = 3600.0,
        max_lead_s: float = 86400.0,
        memory: int = 168,
        min_targets: int = 12,
    ) -> None:
        if not 0 <= min_lead_s <= max_lead_s:
            raise ValueError("need 0 <= min_lead_s <= max_lead_s")
        if memory < 1 or min_targets < 1:
            raise ValueError("memory and min_targets must be at least 1")
        self.min_lead_s = min_lead_s
        self.max_lead_s = max_lead_s
        self.memory = memory
        self.min_targets = min_targets
        # target (start_s, end_s) -> {lead hour: forecast g/kWh}
        self._pending: dict[tuple[float, float], dict[int, float]] = {}
        self._mse = 0.0
        self._targets = 0

    def record_forecast(
        self, issued_s: float, points: Iterable[tuple[float, float, float]]
    ) -> None:
        """Remember a forecast: (start_s, end_s, g/kWh) per point, issued at `issued_s`."""
        for start_s, end_s, value in points:
            lead = start_s - issued_s
            if lead < self.min_lead_s or lead > self.max_lead_s or not math.isfinite(value):
                continue
            self._pending.setdefault((start_s, end_s), {})[int(lead // 3600)] = float(value)

    def record_actual(self, start_s: float, end_s: float, value: float) -> None:
        """Score every remembered forecast whose target's midpoint lies in [start_s, end_s),
        and forget targets that ended before `start_s - max_lead_s`."""
        if not math.isfinite(value):
            return
        done = [k for k in self._pending if start_s <= (k[0] + k[1]) / 2 < end_s]
        for key in done:
            preds = self._pending.pop(key)
            err2 = sum((p - value) ** 2 for p in preds.values()) / len(preds)
            self._targets += 1
            alpha = max(1.0 / self._targets, 1.0 / self.memory)
            self._mse += alpha * (err2 - self._mse)
        stale = start_s - self.max_lead_s
        for key in [k for k in self._pending if k[1] < stale]:
            del self._pending[key]

    @property
    def targets(self) -> int:
        """How many measured targets have been scored."""
        return self._targets

    def error_sd(self) -> float | None:
        """The forecast's recent error (g/kWh), or None before `min_targets` were scored."""
        if self._targets < self.min_targets:
            return None
        return math.sqrt(max(0.0, self._mse))

    def state(self) -> dict[str, Any]:
        """What has been learnt, as JSON-ready data (see `restore`)."""
        return {
            "version": STATE_VERSION,
            "mse": self._mse,
            "targets": self._targets,
            "pending": [
                [start_s, end_s, {str(lead): v for lead, v in preds.items()}]
                for (start_s, end_s), preds in self._pending.items()
            ],
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take back what `state()` returned. Raises ValueError, and changes nothing, if
        the data is not such a state."""
        try:
            if state.get("version") != STATE_VERSION:
                raise ValueError(f"unknown forecast skill state version {state.get('version')!r}")
            mse, targets = float(state["mse"]), int(state["targets"])
            pending = {
                (float(start_s), float(end_s)): {int(k): float(v) for k, v in preds.items()}
                for start_s, end_s, preds in state["pending"]
            }
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed forecast skill state: {exc!r}") from exc
        if not (math.isfinite(mse) and mse >= 0 and targets >= 0):
            raise ValueError("malformed forecast skill state: negative or non-finite error")
        self._mse, self._targets, self._pending = mse, targets, pending
