"""Job traces for the simulator: nightly jobs, ML training (Let's Wait Awhile), a generator."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import TypeAdapter, ValidationError

from ..errors import ConfigError
from ..models import Job, JobSpec, JobState, UtcDatetime

_UTC: TypeAdapter[datetime] = TypeAdapter(UtcDatetime)

SCENARIOS = ("nightly", "ml", "ml-interruptible", "mixed")


def _job(
    i: int,
    submitted: datetime,
    duration_s: float,
    deadline: datetime,
    *,
    gpus: int,
    interruptible: bool,
    regions: list[str],
    checkpoint_cost_s: float = 0.0,
    min_run_s: float = 0.0,
    prefix: str = "job",
) -> Job:
    spec = JobSpec(
        name=f"{prefix}-{i}",
        command=["true"],
        gpus=gpus,
        expected_duration_s=duration_s,
        deadline=deadline,
        interruptible=interruptible,
        checkpoint_cost_s=checkpoint_cost_s,
        min_run_s=min_run_s,
        allowed_regions=regions,
    )
    return _pending(f"{prefix}-{i:05d}", spec, submitted)


def _pending(job_id: str, spec: JobSpec, submitted: datetime) -> Job:
    """A job just submitted, in the first region it allows, due by its spec's deadline."""
    assert spec.deadline is not None
    return Job(
        id=job_id,
        spec=spec,
        state=JobState.PENDING,
        submitted_at=submitted,
        deadline=spec.deadline,
        region=spec.allowed_regions[0],
        updated_at=submitted,
    )


def nightly_jobs(
    start: datetime,
    days: int,
    regions: list[str],
    *,
    hour: int = 1,
    window_h: float = 8.0,
    duration_s: float = 1800.0,
    gpus: int = 1,
) -> list[Job]:
    """One job a day at `hour`:00 that may run anywhere within +/- `window_h` hours (the
    Let's Wait Awhile "nightly" scenario). It is submitted at the window's start."""
    day0 = start.replace(hour=0, minute=0, second=0, microsecond=0)
    out = []
    for d in range(days):
        nominal = day0 + timedelta(days=d, hours=hour)
        opens = nominal - timedelta(hours=window_h)
        if opens < start:
            continue
        deadline = nominal + timedelta(hours=window_h) + timedelta(seconds=duration_s)
        out.append(
            _job(
                d,
                opens,
                duration_s,
                deadline,
                gpus=gpus,
                interruptible=False,
                regions=regions,
                prefix="nightly",
            )
        )
    return out


def _next_workday_9(t: datetime) -> datetime:
    d = (t + timedelta(days=1)).replace(hour=9, minute=0, second=0, microsecond=0)
    while d.weekday() >= 5:
        d += timedelta(days=1)
    return d


def ml_jobs(
    start: datetime,
    days: int,
    regions: list[str],
    *,
    interruptible: bool,
    seed: int = 0,
    per_workday: float = 13.0,
    slot_s: float = 3600.0,
    checkpoint_cost_s: float = 300.0,
    min_run_s: float = 3600.0,
) -> list[Job]:
    """ML training jobs submitted on workdays between 09:00 and 17:00, 4 to 89.5 hours long
    (log-uniform), each of which may start as late as 09:00 of the next workday ("Next
    Workday" of Let's Wait Awhile): deadline = that morning + its duration. About 13 jobs a
    workday (3,387 a year in the paper). Durations are whole slots."""
    rng = np.random.default_rng(seed)
    out: list[Job] = []
    day0 = start.replace(hour=0, minute=0, second=0, microsecond=0)
    i = 0
    for d in range(days):
        day = day0 + timedelta(days=d)
        if day.weekday() >= 5:
            continue
        n = rng.poisson(per_workday)
        for _ in range(n):
            sub = day + timedelta(hours=9 + float(rng.uniform(0, 8)))
            sub = _ceil(sub, slot_s)
            if sub < start:
                continue
            dur_h = float(np.exp(rng.uniform(np.log(4.0), np.log(89.5))))
            dur_s = max(1, round(dur_h * 3600 / slot_s)) * slot_s
            deadline = _next_workday_9(sub) + timedelta(seconds=dur_s)
            out.append(
                _job(
                    i,
                    sub,
                    dur_s,
                    deadline,
                    gpus=int(rng.choice([1, 2, 4, 8])),
                    interruptible=interruptible,
                    regions=regions,
                    checkpoint_cost_s=checkpoint_cost_s if interruptible else 0.0,
                    min_run_s=min_run_s if interruptible else 0.0,
                    prefix="ml",
                )
            )
            i += 1
    return out


def generated_jobs(
    start: datetime,
    days: float,
    regions: list[str],
    *,
    per_hour: float = 2.0,
    mean_duration_h: float = 3.0,
    max_delay_h: float = 12.0,
    interruptible_share: float = 0.3,
    gpu_mix: tuple[int, ...] = (1, 1, 2, 4, 8),
    slot_s: float = 3600.0,
    seed: int = 0,
) -> list[Job]:
    """Poisson arrivals, exponential durations (whole slots), a uniform delay allowance up
    to `max_delay_h`, a GPU count drawn from `gpu_mix`, a share of interruptible jobs, and a
    random non-empty subset of `regions` allowed."""
    rng = np.random.default_rng(seed)
    out: list[Job] = []
    t = start
    end = start + timedelta(days=days)
    i = 0
    while True:
        t = t + timedelta(hours=float(rng.exponential(1.0 / per_hour)))
        if t >= end:
            break
        sub = _ceil(t, slot_s)
        dur_s = max(1, round(rng.exponential(mean_duration_h) * 3600 / slot_s)) * slot_s
        delay = float(rng.uniform(0, max_delay_h)) * 3600
        inter = bool(rng.random() < interruptible_share)
        k = int(rng.integers(1, len(regions) + 1))
        allowed = sorted(rng.choice(regions, size=k, replace=False).tolist())
        out.append(
            _job(
                i,
                sub,
                dur_s,
                sub + timedelta(seconds=dur_s + delay),
                gpus=int(rng.choice(gpu_mix)),
                interruptible=inter,
                regions=allowed,
                checkpoint_cost_s=300.0 if inter else 0.0,
                min_run_s=3600.0 if inter else 0.0,
                prefix="gen",
            )
        )
        i += 1
    return out


def _ceil(t: datetime, slot_s: float) -> datetime:
    ts = t.timestamp()
    q = -(-ts // slot_s) * slot_s
    return datetime.fromtimestamp(q, UTC)


def spread_home_regions(jobs: list[Job], regions: list[str]) -> list[Job]:
    """Let every job run in any of `regions`, with its home (first, where the baselines run
    it) taken in turn, as if the jobs were submitted to each cluster alike."""
    out = []
    for i, job in enumerate(jobs):
        k = i % len(regions)
        order = regions[k:] + regions[:k]
        spec = job.spec.model_copy(update={"allowed_regions": order})
        out.append(job.model_copy(update={"spec": spec, "region": order[0]}))
    return out


def scenario_jobs(
    name: str,
    start: datetime,
    days: int,
    regions: list[str],
    slot_s: float,
    seed: int = 0,
    generator: dict[str, Any] | None = None,
) -> list[Job]:
    """The jobs of a named scenario; `generator` holds `generated_jobs`' options for
    "mixed" (refused for the others, which have none)."""
    if generator and name != "mixed":
        raise ValueError(f"the generator's options apply to the 'mixed' scenario, not {name!r}")
    if name == "nightly":
        return nightly_jobs(start, days, regions)
    if name == "ml":
        return ml_jobs(start, days, regions, interruptible=False, seed=seed, slot_s=slot_s)
    if name == "ml-interruptible":
        return ml_jobs(start, days, regions, interruptible=True, seed=seed, slot_s=slot_s)
    if name == "mixed":
        return generated_jobs(start, days, regions, slot_s=slot_s, seed=seed, **(generator or {}))
    raise ValueError(f"unknown scenario {name!r}; use one of {', '.join(SCENARIOS)}")


def _first_error(exc: ValidationError, field: str = "") -> str:
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in err["loc"]) or field
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


def _time(item: dict[str, Any], key: str, where: str) -> datetime:
    try:
        return _UTC.validate_python(item[key])
    except ValidationError as exc:
        raise ConfigError(f"{where}: {_first_error(exc, key)}") from None


def load_jobs(
    path: Path,
    start: datetime,
    regions: list[str],
    slot_s: float,
    default_max_delay_s: float = 24 * 3600.0,
) -> tuple[list[Job], int]:
    """A job trace from a file, moved to the simulated period.

    The file holds jobs as `gridshift list --json` prints them (a JSON array), or one such
    object per line (JSON Lines). Each needs `submitted_at` and `spec`, the job spec as
    submitted (`expected_duration_s`, `gpus`, `deadline` or `max_delay_s`, `interruptible`,
    `checkpoint_cost_s`, `min_run_s`, `allowed_regions`, ...); a `deadline` beside them is
    kept, and anything else a listed job carries (state, runs, emissions) is ignored: the
    simulator replays each job from its submission. Jobs with no `allowed_regions` may run
    in every simulated region; those with some keep the simulated ones among them. A job's
    `region` (where it ran), if simulated, is its home: the baselines run it there.

    The whole trace is moved by whole days so that its first submission falls on the day
    of `start` (the day after, where it would come before `start`), keeping each job's time
    of day and the gaps between jobs. A submission
    between slots moves to the next slot boundary (its deadline too, where it would
    otherwise leave less than the job's duration). Returns the jobs and the shift in days.
    """
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    items: list[tuple[str, Any]]
    try:
        if stripped.startswith("["):
            loaded = json.loads(text)
            items = [(f"item {i + 1}", x) for i, x in enumerate(loaded)]
        else:
            items = [
                (f"line {n}", json.loads(line))
                for n, line in enumerate(text.splitlines(), 1)
                if line.strip()
            ]
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not JSON or JSON Lines ({exc})") from None
    if not items:
        raise ConfigError(f"{path}: no jobs")
    parsed: list[tuple[str, dict[str, Any], JobSpec, datetime, datetime | None]] = []
    for where, item in items:
        if not isinstance(item, dict):
            raise ConfigError(f"{path} {where}: a job must be a JSON object")
        missing = [k for k in ("submitted_at", "spec") if item.get(k) is None]
        if missing:
            raise ConfigError(f"{path} {where}: {' and '.join(missing)} missing")
        spec_data = item["spec"]
        if isinstance(spec_data, dict) and "command" not in spec_data:
            spec_data = {**spec_data, "command": ["true"]}  # a replay runs no command
        try:
            spec = JobSpec.model_validate(spec_data)
        except ValidationError as exc:
            raise ConfigError(f"{path} {where}: {_first_error(exc)}") from None
        submitted = _time(item, "submitted_at", f"{path} {where}")
        deadline = _time(item, "deadline", f"{path} {where}") if item.get("deadline") else None
        parsed.append((where, item, spec, submitted, deadline))
    first = min(p[3] for p in parsed)
    shift_days = (start.date() - first.astimezone(UTC).date()).days
    if first + timedelta(days=shift_days) < start:  # a trace that starts in the day
        shift_days += 1
    shift = timedelta(days=shift_days)
    jobs: list[Job] = []
    seen: set[str] = set()
    for i, (where, item, spec, submitted, deadline) in enumerate(parsed):
        sub = _ceil(submitted + shift, slot_s)
        # the job's own deadline (listed beside the spec, or in it), else its allowed delay
        due = spec.resolve_deadline(submitted, default_max_delay_s) + shift
        if deadline is not None:
            due = deadline + shift
        due = max(due, sub + timedelta(seconds=spec.expected_duration_s))
        allowed = [r for r in spec.allowed_regions if r in regions] or (
            [] if spec.allowed_regions else list(regions)
        )
        if not allowed:
            raise ConfigError(
                f"{path} {where}: allowed_regions {spec.allowed_regions} names none of the "
                f"simulated regions ({', '.join(regions)})"
            )
        if item.get("region") in allowed:  # where it ran: its home, where baselines run it
            allowed.remove(item["region"])
            allowed.insert(0, item["region"])
        jid = str(item["id"]) if item.get("id") else f"job-{i:05d}"
        if jid in seen:
            raise ConfigError(f"{path} {where}: job id {jid} is given twice")
        seen.add(jid)
        spec = spec.model_copy(
            update={"allowed_regions": allowed, "deadline": due, "max_delay_s": None}
        )
        jobs.append(_pending(jid, spec, sub))
    jobs.sort(key=lambda j: j.submitted_at)
    return jobs, shift_days
