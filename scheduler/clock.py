"""Clocks. Every component takes one; nothing else reads the system time.

All clocks return timezone-aware UTC datetimes.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    """Wall-clock time, UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ScaledClock:
    """Time that runs `speed` times faster than the wall clock from a fixed origin.

    The origin is a wall-clock instant; the clock reads `start + (wall - origin) * speed`,
    where `start`, the time the clock shows at the origin, is the origin itself unless
    given. Because both are fixed (not the process start), an agent restarted with the same
    settings sees continuous time. Used for demos and end-to-end tests: a fixed `start`
    makes a replayed trace show the same hours whenever it runs.
    """

    def __init__(self, origin: datetime, speed: float, start: datetime | None = None) -> None:
        if speed <= 0:
            raise ValueError("clock speed must be positive")
        self.origin = origin.astimezone(UTC)
        self.start = (start or origin).astimezone(UTC)
        self.speed = speed

    def now(self) -> datetime:
        wall = datetime.now(UTC)
        return self.start + (wall - self.origin) * self.speed

    def wall_seconds(self, sim_seconds: float) -> float:
        """How many wall-clock seconds `sim_seconds` of this clock take."""
        return sim_seconds / self.speed


class FakeClock:
    """A clock that only moves when told to. Thread-safe."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = (start or datetime(2024, 1, 1, tzinfo=UTC)).astimezone(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta | float) -> datetime:
        step = delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        with self._lock:
            self._now += step
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = when.astimezone(UTC)


def monotonic_s() -> float:
    """Monotonic seconds, for measuring durations (not for timestamps)."""
    return time.monotonic()
