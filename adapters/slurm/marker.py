"""The job comment through which gridshift and Slurm users talk.

A job opts in, or is tagged by gridshift, with a comment holding the marker (by default
``gridshift:``) followed by ``key=value`` pairs separated by ``;``::

    sbatch --comment "gridshift:deadline=8h" job.sh
    sbatch --comment "gridshift:deadline=2026-05-01T06:00Z;interruptible=yes;regions=green,brown"

Keys a user may write:

    deadline       a duration after submission (8h, 1d12h) or an absolute UTC time
    max_delay      how long the start may be delayed (instead of deadline)
    duration       expected run time, when the job has no time limit
    interruptible  yes/no: may be suspended and resumed
    regions        allowed regions (comma separated, or "any")

Keys gridshift writes (users see them in ``squeue -o "%.10i %.40k"``):

    id             gridshift's job id
    start          the planned start (UTC), or "now" once released
    paused         "requeue" while an interruptible job is requeued held
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ...scheduler.errors import ValidationError
from ...scheduler.models import parse_duration_s

USER_KEYS = ("deadline", "max_delay", "duration", "interruptible", "regions")
AGENT_KEYS = ("id", "start", "paused")
_TRUE = {"1", "yes", "true", "on", "y"}
_FALSE = {"0", "no", "false", "off", "n", ""}


@dataclass
class Marker:
    """The parsed gridshift part of a comment, and the text around it."""

    present: bool
    fields: dict[str, str] = field(default_factory=dict)
    before: str = ""  # the user's own comment text in front of the marker

    @property
    def job_id(self) -> str | None:
        return self.fields.get("id") or None


def parse(comment: str, marker: str) -> Marker:
    index = comment.find(marker)
    if index < 0:
        return Marker(present=False, before=comment)
    body = comment[index + len(marker) :]
    fields: dict[str, str] = {}
    for token in body.replace(" ", ";").split(";"):
        token = token.strip()
        if not token:
            continue
        key, _, value = token.partition("=")
        fields[key.strip().lower()] = value.strip()
    return Marker(present=True, fields=fields, before=comment[:index])


def render(current: Marker, marker: str, **updates: str | None) -> str:
    """The comment with `updates` applied (None removes a key). User keys stay first."""
    fields = dict(current.fields)
    for key, value in updates.items():
        if value is None:
            fields.pop(key, None)
        else:
            fields[key] = value
    ordered = [k for k in fields if k not in AGENT_KEYS] + [k for k in AGENT_KEYS if k in fields]
    body = ";".join(f"{k}={fields[k]}" for k in ordered)
    return f"{current.before}{marker}{body}"


def format_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _bool(value: str, key: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValidationError(f"marker key {key}={value!r} must be yes or no")


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


def adopt_spec(
    fields: dict[str, Any],
    *,
    name: str,
    slurm_job_id: str,
    time_limit_s: float | None,
    default_duration_s: float,
    gpus: int,
    submitted_age_s: float,
    current_region: str | None,
) -> dict[str, Any]:
    """The JobSpec fields of a natively submitted job that opted in.

    `submitted_age_s` is how long ago Slurm accepted the job: a relative deadline counts
    from the submission, not from the moment gridshift first sees the job.
    Raises ValidationError (naming the key) when the marker cannot be understood.
    """
    if "duration" in fields:
        try:
            duration_s = parse_duration_s(fields["duration"])
        except ValueError as exc:
            raise ValidationError(f"marker key duration: {exc}") from None
    elif time_limit_s:
        duration_s = time_limit_s
    else:
        duration_s = default_duration_s
    if duration_s <= 0:
        raise ValidationError("marker key duration must be positive")
    spec: dict[str, Any] = {
        "name": name or f"slurm-{slurm_job_id}",
        "command": [f"slurm:{slurm_job_id}"],
        "engine": "slurm",
        "engine_options": {"slurm_job_id": slurm_job_id, "native": True},
        "gpus": gpus,
        "expected_duration_s": duration_s,
        "interruptible": _bool(fields.get("interruptible", "no"), "interruptible"),
        "labels": {"slurm_job_id": slurm_job_id},
    }
    if "deadline" in fields and "max_delay" in fields:
        raise ValidationError("give either deadline or max_delay in the marker, not both")
    if "deadline" in fields:
        absolute = _absolute_time(fields["deadline"])
        if absolute is not None:
            spec["deadline"] = absolute
        else:
            try:
                within_s = parse_duration_s(fields["deadline"])
            except ValueError as exc:
                raise ValidationError(f"marker key deadline: {exc}") from None
            spec["max_delay_s"] = max(0.0, within_s - duration_s - max(0.0, submitted_age_s))
    elif "max_delay" in fields:
        try:
            delay_s = parse_duration_s(fields["max_delay"])
        except ValueError as exc:
            raise ValidationError(f"marker key max_delay: {exc}") from None
        spec["max_delay_s"] = max(0.0, delay_s - max(0.0, submitted_age_s))
    regions = fields.get("regions", "").strip()
    if regions and regions.lower() != "any":
        spec["allowed_regions"] = [r.strip() for r in regions.split(",") if r.strip()]
    elif not regions and current_region:
        # A user who picked a partition keeps it unless the marker says otherwise.
        spec["allowed_regions"] = [current_region]
    return spec
