"""The interfaces between gridshift's core and its edges, in one place.

Adapters, signal providers, telemetry sources and stores implement these; the core uses
nothing else of them. An adapter has a small required interface (`Adapter`) and may add
optional capabilities (`Suspendable`, `Relocatable`, `ChecksSpecs`), which the core detects with
``isinstance``. Every adapter action is idempotent: calling it twice has the effect of once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from .models import (
    Decision,
    Forecast,
    IntensitySample,
    Job,
    JobEvent,
    JobSpec,
    JobState,
    PowerSample,
    Snapshot,
    UtcDatetime,
)

# --------------------------------------------------------------------------------------------
# Signals


@runtime_checkable
class SignalProvider(Protocol):
    """A source of grid carbon intensity. `location` is the provider's own id for a place
    (a zone, a region code, a postcode). Failures raise `SignalError` subclasses."""

    name: str

    def current(self, location: str) -> IntensitySample: ...

    def forecast(self, location: str, start: datetime, end: datetime) -> Forecast: ...


# --------------------------------------------------------------------------------------------
# Engines


class EngineState(StrEnum):
    HELD = "held"  # known to the engine, not started
    QUEUED = "queued"  # released: the engine starts it as soon as it has resources
    RUNNING = "running"
    SUSPENDED = "suspended"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    MISSING = "missing"  # the engine does not know the job


ENGINE_TO_JOB_STATE: dict[EngineState, JobState] = {
    EngineState.HELD: JobState.HELD,
    EngineState.RUNNING: JobState.RUNNING,
    EngineState.SUSPENDED: JobState.SUSPENDED,
    EngineState.SUCCEEDED: JobState.SUCCEEDED,
    EngineState.FAILED: JobState.FAILED,
    EngineState.CANCELLED: JobState.CANCELLED,
}


class EngineStatus(BaseModel):
    """What an engine says about one job."""

    ref: str
    state: EngineState
    job_id: str | None = None  # gridshift's id, when the engine carries it
    exit_code: int | None = None
    gpus: list[int] = Field(default_factory=list)
    started_at: UtcDatetime | None = None
    ended_at: UtcDatetime | None = None
    region: str | None = None
    message: str = ""
    # For jobs submitted natively and opting in (adoption): what the user asked for.
    adopt_spec: dict[str, Any] | None = None


@runtime_checkable
class Adapter(Protocol):
    """The required interface of every engine adapter."""

    name: str

    def submit(self, job: Job) -> str:
        """Make the engine aware of the job without starting it; return the engine's ref."""
        ...

    def release(self, job: Job) -> None:
        """Start the job now (a no-op if it already started)."""
        ...

    def hold(self, job: Job) -> None:
        """Keep a not-yet-started job from starting (a no-op if already held)."""
        ...

    def cancel(self, job: Job) -> None:
        """Stop the job for good (a no-op if it already ended)."""
        ...

    def status(self, job: Job) -> EngineStatus: ...

    def list_managed(self) -> list[EngineStatus]:
        """Every job this adapter manages, including natively submitted ones that opted in."""
        ...


@runtime_checkable
class Suspendable(Protocol):
    """Optional: pause and continue a running job."""

    def suspend(self, job: Job) -> None: ...

    def resume(self, job: Job) -> None: ...


@runtime_checkable
class Relocatable(Protocol):
    """Optional: move a not-yet-started job to another region (cluster, partition)."""

    def regions(self) -> dict[str, int | None]:
        """Regions this adapter can place jobs in, with their GPU capacity (None: unlimited)."""
        ...

    def relocate(self, job: Job, region: str) -> None: ...


@runtime_checkable
class ChecksSpecs(Protocol):
    """Optional: refuse at submission a job the engine could never run (bad engine options),
    rather than at its first start."""

    def check_spec(self, spec: JobSpec) -> None:
        """Raise ValidationError saying what is wrong; return None if the job can run."""
        ...


# --------------------------------------------------------------------------------------------
# GPUs


@runtime_checkable
class PowerSource(Protocol):
    """Reads GPU power. `sample` is on the hot path (1 Hz); it must be cheap."""

    def sample(self) -> list[PowerSample]: ...


@runtime_checkable
class PowerCapper(Protocol):
    """Sets and restores GPU power limits."""

    def set_limit(self, index: int, limit_w: float, reason: str) -> float:
        """Set the limit (clamped to the device's range); return the limit applied."""
        ...

    def restore_defaults(self, reason: str) -> None: ...


# --------------------------------------------------------------------------------------------
# Planning


class Planner(Protocol):
    """Pure: a snapshot in, decisions out. No I/O, no clock other than snapshot.now."""

    def plan(self, snapshot: Snapshot) -> list[Decision]: ...


# --------------------------------------------------------------------------------------------
# Storage


class Store(Protocol):
    """Durable state. Every write is committed before the method returns."""

    def add_job(self, job: Job, reason: str) -> Job: ...

    def get_job(self, job_id: str) -> Job: ...

    def list_jobs(self, states: Iterable[JobState] | None = None) -> list[Job]: ...

    def transition(self, job_id: str, to_state: JobState, reason: str, **fields: Any) -> Job:
        """Validate and record a state change (and any field updates) atomically."""
        ...

    def update(self, job_id: str, **fields: Any) -> Job:
        """Update fields other than the state."""
        ...

    def record_decisions(self, decisions: Sequence[Decision]) -> None: ...

    def decisions(self, job_id: str | None = None, limit: int = 100) -> list[Decision]: ...

    def events(self, job_id: str) -> list[JobEvent]: ...

    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str | None) -> None: ...

    def close(self) -> None: ...
