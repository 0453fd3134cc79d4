"""Fixtures for the signal-provider tests: a fake clock and the API replicas."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from gridshift.scheduler.clock import FakeClock

from .replicas import (
    CarbonAwareSdkReplica,
    ElectricityMapsReplica,
    UkCarbonIntensityReplica,
    WattTimeReplica,
)

START = datetime(2024, 5, 1, 12, 10, tzinfo=UTC)


class SleepRecorder:
    """Stands in for time.sleep in the retry loop: records the backoff, waits nothing."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def em_replica(clock: FakeClock) -> Iterator[ElectricityMapsReplica]:
    with ElectricityMapsReplica(clock) as replica:
        yield replica


@pytest.fixture
def wt_replica(clock: FakeClock) -> Iterator[WattTimeReplica]:
    with WattTimeReplica(clock) as replica:
        yield replica


@pytest.fixture
def uk_replica(clock: FakeClock) -> Iterator[UkCarbonIntensityReplica]:
    with UkCarbonIntensityReplica(clock) as replica:
        yield replica


@pytest.fixture
def sdk_replica(clock: FakeClock) -> Iterator[CarbonAwareSdkReplica]:
    with CarbonAwareSdkReplica(clock) as replica:
        yield replica
