"""What the engine adapters share: regions as clusters (Ray, Kubernetes), the check of a
job's engine options, and what a natively submitted job that opts in asks for (Slurm's
comment marker, Kubernetes' annotations)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

from gridshift.scheduler.errors import ValidationError
from gridshift.scheduler.models import Job, JobSpec, parse_duration_s


class _Cluster(Protocol):
    @property
    def capacity_gpus(self) -> int | None: ...


C = TypeVar("C", bound=_Cluster)


class Clusters(Generic[C]):
    """An engine's regions, one cluster each: lookup with an error that names the setting,
    the region a job goes to, and the GPUs the planner may fill in each."""

    def __init__(
        self, engine: str, setting: str, clusters: Mapping[str, C], default: str | None
    ) -> None:
        self.engine = engine  # as users read it: "Ray"
        self.setting = setting  # the settings section: "ray"
        self.clusters = dict(clusters)
        self.default = default or next(iter(self.clusters))

    def get(self, region: str | None) -> C:
        name = region or self.default
        if name not in self.clusters:
            raise ValidationError(
                f"region {name!r} has no {self.engine} cluster; configured regions: "
                f"{', '.join(sorted(self.clusters))} (see {self.setting}.regions)"
            )
        return self.clusters[name]

    def of(self, job: Job) -> str:
        """The region the job runs in (its own, else the default), known to have a cluster."""
        region = job.region or self.default
        self.get(region)
        return region

    def check_allowed(self, spec: JobSpec) -> None:
        for region in spec.allowed_regions:
            self.get(region)

    def capacities(self) -> dict[str, int | None]:
        return {name: cluster.capacity_gpus for name, cluster in self.clusters.items()}


def check_option_names(engine: str, options: Mapping[str, Any], known: Collection[str]) -> None:
    """Refuse engine options the adapter does not know (a typo must not pass silently)."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValidationError(
            f"unknown {engine} engine options {', '.join(unknown)} "
            f"(known: {', '.join(sorted(known))})"
        )


_TRUE = {"1", "yes", "true", "on", "y"}
_FALSE = {"0", "no", "false", "off", "n", ""}


def opt_in_spec(
    fields: Mapping[str, str],
    *,
    fallback_duration_s: float,
    submitted_age_s: float,
    current_region: str | None,
    key: Callable[[str], str],
) -> dict[str, Any]:
    """The JobSpec fields a native job asks for with the keys `duration`, `deadline` (a
    duration after submission, or a UTC time), `max_delay`, `interruptible` and `regions`
    (`any`, or names; by default the region it was submitted to).

    `submitted_age_s` is how long ago the engine accepted the job: a relative deadline
    counts from the submission, not from the moment gridshift first sees the job. `key`
    names a key in errors as the user wrote it. Raises ValidationError naming the key.
    """

    def duration(name: str) -> float:
        try:
            return parse_duration_s(fields[name])
        except ValueError as exc:
            raise ValidationError(f"{key(name)}: {exc}") from None

    duration_s = duration("duration") if "duration" in fields else fallback_duration_s
    if duration_s <= 0:
        raise ValidationError(f"{key('duration')} must be positive")
    spec: dict[str, Any] = {
        "expected_duration_s": duration_s,
        "interruptible": _bool(fields.get("interruptible", "no"), key("interruptible")),
    }
    if "deadline" in fields and "max_delay" in fields:
        raise ValidationError(f"give either {key('deadline')} or {key('max_delay')}, not both")
    if "deadline" in fields:
        absolute = _absolute_time(fields["deadline"])
        if absolute is not None:
            spec["deadline"] = absolute
        else:
            within_s = duration("deadline")
            spec["max_delay_s"] = max(0.0, within_s - duration_s - max(0.0, submitted_age_s))
    elif "max_delay" in fields:
        spec["max_delay_s"] = max(0.0, duration("max_delay") - max(0.0, submitted_age_s))
    regions = fields.get("regions", "").strip()
    if regions and regions.lower() != "any":
        spec["allowed_regions"] = [r.strip() for r in regions.split(",") if r.strip()]
    elif not regions and current_region:
        # A user who picked a region (partition, cluster) keeps it unless told otherwise.
        spec["allowed_regions"] = [current_region]
    return spec


def _bool(value: str, key: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValidationError(f"{key}={value!r} must be yes or no")


def _absolute_time(value: str) -> datetime | None:
    text = value.strip()
    if not text or not text[0].isdigit() or "-" not in text:
        return None
    text = text.replace("Z", "+00:00").replace("z", "+00:00")
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValidationError(
            f"deadline {value!r} is neither a duration (8h) nor a UTC time (2026-05-01T06:00Z)"
        ) from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC)
