"""The data gridshift works with. Units are in the names; every time is UTC."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from .errors import InvalidTransition


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamp must carry a timezone, e.g. 2024-05-01T12:00Z")
    return value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]
"""A timezone-aware datetime, normalised to UTC. Naive datetimes are rejected."""


class Strict(BaseModel):
    """Models that reject unknown fields, so a typo is an error, not a silent no-op."""

    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------------------------
# Jobs


class JobState(StrEnum):
    PENDING = "pending"  # accepted, not yet planned
    HELD = "held"  # waiting for its planned start
    RUNNING = "running"
    SUSPENDED = "suspended"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset(
        {JobState.HELD, JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}
    ),
    JobState.HELD: frozenset(
        {JobState.HELD, JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}
    ),
    # RUNNING -> HELD is a requeue (checkpointed job put back in the queue).
    JobState.RUNNING: frozenset(
        {
            JobState.SUSPENDED,
            JobState.HELD,
            JobState.SUCCEEDED,
            JobState.FAILED,
            JobState.CANCELLED,
        }
    ),
    JobState.SUSPENDED: frozenset(
        {JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
    ),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


def check_transition(job_id: str, current: JobState, target: JobState) -> None:
    if target not in TRANSITIONS[current]:
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "none (terminal state)"
        raise InvalidTransition(
            f"job {job_id} is {current.value}; it cannot become {target.value} "
            f"(allowed from {current.value}: {allowed})"
        )


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration_s(text: str | float | int) -> float:
    """'90' -> 90 s, '45m' -> 2700 s, '8h' -> 28800 s, '1.5d' -> 129600 s; also compound '1h30m'."""
    if isinstance(text, int | float):
        value = float(text)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhdw]?)", text.strip().lower())
        joined = "".join(n + u for n, u in parts)
        if not parts or joined != re.sub(r"\s+", "", text.strip().lower()):
            raise ValueError(f"{text!r} is not a duration; use e.g. 90s, 45m, 8h, 2d or 1h30m")
        value = sum(float(n) * _UNIT_S[u] for n, u in parts)
    if value < 0:
        raise ValueError("a duration cannot be negative")
    return value


class JobSpec(Strict):
    """What a user submits."""

    name: str = Field(default="job", min_length=1, max_length=200)
    command: list[str] = Field(min_length=1, description="argv; with shell=true, one string")
    shell: bool = False
    workdir: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    engine: str = Field(default="local", description="which adapter runs it")
    engine_options: dict[str, Any] = Field(default_factory=dict)
    gpus: int = Field(default=0, ge=0, le=1024)
    expected_duration_s: float = Field(gt=0, le=90 * 86400)
    deadline: UtcDatetime | None = None
    max_delay_s: float | None = Field(default=None, ge=0)
    interruptible: bool = False
    checkpoint_cost_s: float = Field(default=0.0, ge=0)
    min_run_s: float = Field(default=0.0, ge=0)
    allowed_regions: list[str] = Field(default_factory=list)
    priority: int = Field(default=0, ge=-1000, le=1000)
    labels: dict[str, str] = Field(default_factory=dict)
    expected_power_w: float | None = Field(
        default=None, gt=0, le=100_000, description="used for estimates until energy is measured"
    )
    power_cap_opt_out: bool = False
    max_slowdown: float | None = Field(default=None, ge=0, le=10)

    @field_validator("command")
    @classmethod
    def _command_not_blank(cls, value: list[str]) -> list[str]:
        if not value[0].strip():
            raise ValueError("command must not be empty")
        return value

    @model_validator(mode="after")
    def _one_deadline(self) -> JobSpec:
        if self.deadline is not None and self.max_delay_s is not None:
            raise ValueError("give either deadline or max_delay_s, not both")
        if self.shell and len(self.command) != 1:
            raise ValueError("with shell=true, command must be a single string")
        return self

    def resolve_deadline(self, submitted_at: datetime, default_max_delay_s: float) -> datetime:
        """The absolute deadline by which the job must have finished."""
        if self.deadline is not None:
            return self.deadline
        delay = self.max_delay_s if self.max_delay_s is not None else default_max_delay_s
        return submitted_at + timedelta(seconds=delay + self.expected_duration_s)


def new_job_id() -> str:
    return "j-" + uuid.uuid4().hex[:12]


class Job(BaseModel):
    """A job as gridshift tracks it."""

    id: str
    spec: JobSpec
    state: JobState = JobState.PENDING
    submitted_at: UtcDatetime
    deadline: UtcDatetime
    region: str | None = None
    planned_start: UtcDatetime | None = None
    started_at: UtcDatetime | None = None
    ended_at: UtcDatetime | None = None
    running_since: UtcDatetime | None = None  # start of the current running stretch
    run_s: float = 0.0  # time run in completed stretches (excludes suspensions)
    exit_code: int | None = None
    engine_ref: str | None = None
    gpus_assigned: list[int] = Field(default_factory=list)
    reason: str = ""
    energy_j: float = 0.0
    emissions_g: float = 0.0
    counterfactual_g: float | None = None
    expected_saving_g: float | None = None
    saving_is_estimate: bool = True
    updated_at: UtcDatetime
    version: int = 0

    @property
    def latest_start(self) -> datetime:
        """The last moment it can start (or resume) and still meet its deadline."""
        remaining = max(0.0, self.spec.expected_duration_s - self.run_s)
        return self.deadline - timedelta(seconds=remaining)

    @property
    def remaining_s(self) -> float:
        return max(0.0, self.spec.expected_duration_s - self.run_s)


class JobEvent(BaseModel):
    job_id: str
    at: UtcDatetime
    from_state: JobState | None
    to_state: JobState
    reason: str


# --------------------------------------------------------------------------------------------
# Grid signals


class SignalKind(StrEnum):
    AVERAGE = "average"
    MARGINAL = "marginal"


class EmissionBasis(StrEnum):
    DIRECT = "direct"
    LIFECYCLE = "lifecycle"


class IntensitySample(BaseModel):
    """One carbon-intensity value for a region over an interval."""

    model_config = ConfigDict(frozen=True)

    region: str
    start: UtcDatetime
    end: UtcDatetime
    intensity_g_per_kwh: float = Field(ge=0)
    provider: str
    kind: SignalKind = SignalKind.AVERAGE
    basis: EmissionBasis = EmissionBasis.DIRECT
    estimated: bool = False
    fetched_at: UtcDatetime | None = None
    issued_at: UtcDatetime | None = None  # when the provider produced or last updated it


class ForecastPoint(BaseModel):
    model_config = ConfigDict(frozen=True)

    start: UtcDatetime
    end: UtcDatetime
    intensity_g_per_kwh: float = Field(ge=0)


class Forecast(BaseModel):
    """A series of future intensities, ordered, non-overlapping."""

    region: str
    provider: str
    issued_at: UtcDatetime
    kind: SignalKind = SignalKind.AVERAGE
    basis: EmissionBasis = EmissionBasis.DIRECT
    points: list[ForecastPoint]

    @model_validator(mode="after")
    def _ordered(self) -> Forecast:
        for a, b in zip(self.points, self.points[1:], strict=False):
            if b.start < a.end:
                raise ValueError("forecast points must be ordered and must not overlap")
        return self

    @property
    def horizon_end(self) -> datetime | None:
        return self.points[-1].end if self.points else None


class RegionSignal(BaseModel):
    """What the agent knows about one region's grid at snapshot time."""

    region: str
    current: IntensitySample | None = None
    forecast: Forecast | None = None
    provider: str | None = None
    age_s: float | None = None
    fresh: bool = False
    error: str | None = None
    # measured root mean square error of this region's recent forecasts (1-24 h ahead);
    # None until enough forecasts could be checked against measured values
    forecast_error_g_per_kwh: float | None = None


# --------------------------------------------------------------------------------------------
# GPUs


class PowerSample(BaseModel):
    """One reading of one GPU."""

    index: int
    uuid: str
    at: UtcDatetime
    power_w: float  # instant power where the driver reports it, else NVML's power reading
    power_avg_w: float | None = None  # the driver's 1 s average, where reported separately
    energy_j: float | None = None  # the device's cumulative counter; None if unsupported
    power_limit_w: float | None = None
    default_limit_w: float | None = None
    min_limit_w: float | None = None
    max_limit_w: float | None = None
    utilization_pct: float | None = None


# --------------------------------------------------------------------------------------------
# Decisions


class Action(StrEnum):
    START = "start"  # start (release) a held or pending job now
    HOLD = "hold"  # keep a job waiting until planned_start
    SUSPEND = "suspend"
    RESUME = "resume"
    RELOCATE = "relocate"  # place or move a not-yet-started job to another region
    CAP = "cap"  # set a GPU power limit
    UNCAP = "uncap"  # restore a GPU's default power limit


class Decision(BaseModel):
    """One thing the planner wants done, and why."""

    action: Action
    reason: str
    at: UtcDatetime
    job_id: str | None = None
    region: str | None = None
    planned_start: UtcDatetime | None = None
    expected_saving_g: float | None = None
    saving_is_estimate: bool = True
    device_index: int | None = None
    power_limit_w: float | None = None


class Snapshot(BaseModel):
    """A consistent view of the world for one planning tick. The planner reads only this."""

    now: UtcDatetime
    jobs: list[Job]
    regions: dict[str, RegionSignal]
    default_region: str
    capacity_gpus: dict[str, int | None] = Field(default_factory=dict)  # None: unlimited
    gpus: list[PowerSample] = Field(default_factory=list)
