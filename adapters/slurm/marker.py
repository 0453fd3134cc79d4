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

from .._common import opt_in_spec

USER_KEYS = ("deadline", "max_delay", "duration", "interruptible", "regions")
AGENT_KEYS = ("id", "start", "paused")


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
    spec: dict[str, Any] = {
        "name": name or f"slurm-{slurm_job_id}",
        "command": [f"slurm:{slurm_job_id}"],
        "engine": "slurm",
        "engine_options": {"slurm_job_id": slurm_job_id, "native": True},
        "gpus": gpus,
        "labels": {"slurm_job_id": slurm_job_id},
    }
    spec.update(
        opt_in_spec(
            fields,
            fallback_duration_s=time_limit_s or default_duration_s,
            submitted_age_s=submitted_age_s,
            current_region=current_region,
            key=lambda k: f"marker key {k}",
        )
    )
    return spec
