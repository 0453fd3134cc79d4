"""Everything that depends on the Slurm version: reading squeue's output into `SlurmJob`.

Three layouts are understood:

- `squeue --json` of Slurm 21.08-23.02 (OpenAPI plugin v0.0.37/v0.0.38/v0.0.39): scalars,
  `job_state` a string, times as epoch integers, `time_limit` in minutes or null;
- `squeue --json` of Slurm 23.11 and later (v0.0.40+): `job_state` a list of flags, numbers
  wrapped as `{"set": bool, "infinite": bool, "number": n}`, `exit_code` an object;
- the text format of `squeue -o` (`TEXT_FORMAT` below), for versions without `--json` or
  where the JSON plugin is not installed.

The rest of the adapter sees only `SlurmJob`, so supporting a new layout means touching
this module alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ...scheduler.errors import AdapterError, EngineUnavailable

# Slurm base states (the flags that may follow, e.g. REQUEUE_HOLD, are kept apart).
PENDING_STATES = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"})
RUNNING_STATES = frozenset(
    {"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING", "RESIZING"}
)
SUSPENDED_STATES = frozenset({"SUSPENDED", "STOPPED"})
SUCCEEDED_STATES = frozenset({"COMPLETED"})
FAILED_STATES = frozenset(
    {"FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT"}
)
CANCELLED_STATES = frozenset({"CANCELLED", "PREEMPTED"})
GONE_STATES = frozenset({"REVOKED"})  # a federated sibling that moved to another cluster


@dataclass
class SlurmJob:
    """One Slurm job, independent of the output layout it was read from."""

    job_id: str
    name: str
    state: str  # base state, upper case: PENDING, RUNNING, SUSPENDED, COMPLETED...
    reason: str
    partition: str
    comment: str
    user: str = ""
    cluster: str = ""
    time_limit_s: float | None = None  # None: no limit
    submit_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    exit_code: int | None = None
    gpus_requested: int = 0
    gpu_indices: list[int] = field(default_factory=list)
    detail_known: bool = True  # False when the layout carries no GPU indices

    @property
    def held(self) -> bool:
        """Pending because of a user or admin hold (not merely waiting)."""
        # Reasons: JobHeldUser, JobHeldAdmin, "job requeued in held state".
        return self.state in PENDING_STATES and (
            "held" in self.reason.lower() or self.state == "REQUEUE_HOLD"
        )

    @property
    def pending(self) -> bool:
        return self.state in PENDING_STATES

    @property
    def ended(self) -> bool:
        return self.state in SUCCEEDED_STATES | FAILED_STATES | CANCELLED_STATES | GONE_STATES


# --------------------------------------------------------------------------------------------
# helpers shared by the layouts


def _number(value: Any) -> float | None:
    """A number in either layout; None for unset or infinite."""
    if isinstance(value, dict):
        if not value.get("set", True) or value.get("infinite", False):
            return None
        value = value.get("number")
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _epoch(value: Any) -> datetime | None:
    number = _number(value)
    if number is None or number <= 0:
        return None
    try:
        return datetime.fromtimestamp(number, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _base_state(value: Any) -> str:
    """`"RUNNING"` (old) or `["RUNNING", "REQUEUED"]`-like lists (new) -> the base state."""
    if isinstance(value, list):
        names = [str(v).upper() for v in value]
        for name in names:  # the base state comes first in practice, but do not rely on it
            if name in _ALL_BASE_STATES:
                return name
        return names[0] if names else "UNKNOWN"
    return str(value or "UNKNOWN").upper()


_ALL_BASE_STATES = (
    PENDING_STATES
    | RUNNING_STATES
    | SUSPENDED_STATES
    | SUCCEEDED_STATES
    | FAILED_STATES
    | CANCELLED_STATES
    | GONE_STATES
)

_IDX_RE = re.compile(r"IDX:([0-9,\-N/A]+)\)")


def gpus_from_tres(text: str) -> int:
    """'gres:gpu:2', 'gres/gpu:a100:2', 'gpu:1,gres:foo:1' -> number of GPUs (0 if none)."""
    total = 0
    for part in re.split(r"[,;]", text or ""):
        part = part.strip()
        if not part:
            continue
        fields = re.split(r"[:/]", part)
        if fields and fields[0] == "gres":
            fields = fields[1:]
        if not fields or fields[0] != "gpu":
            continue
        count = 1
        if len(fields) >= 2 and fields[-1].isdigit():
            count = int(fields[-1])
        total += count
    return total


def gpu_indices(details: list[str] | str) -> list[int]:
    """['gpu:2(IDX:0-1)', 'gpu(IDX:3)'] or 'GRES=gpu:1(IDX:0)' -> [0, 1, 3]."""
    texts = details if isinstance(details, list) else [details]
    found: list[int] = []
    for text in texts:
        if "gpu" not in str(text):
            continue
        for spec in _IDX_RE.findall(str(text)):
            for piece in spec.split(","):
                if not piece or piece == "N/A":
                    continue
                if "-" in piece:
                    lo, hi = piece.split("-", 1)
                    found.extend(range(int(lo), int(hi) + 1))
                else:
                    found.append(int(piece))
    return sorted(set(found))


def _exit_code(value: Any, state: str) -> int | None:
    if isinstance(value, dict):  # v0.0.40+: {"status": [...], "return_code": {...}, ...}
        code = _number(value.get("return_code"))
        return int(code) if code is not None else None
    number = _number(value)
    if number is None:
        return None
    # v0.0.37-v0.0.39 report the raw wait status: exit code in the high byte, signal low.
    status = int(number)
    signal = status & 0x7F
    return 128 + signal if signal else (status >> 8) & 0xFF


# --------------------------------------------------------------------------------------------
# JSON (squeue --json)


def json_layout(payload: dict[str, Any]) -> str:
    """The OpenAPI plugin that produced `payload`, e.g. 'openapi/v0.0.38' (or '')."""
    meta = payload.get("meta") or {}
    plugin = meta.get("plugin") or {}
    return str(plugin.get("type") or plugin.get("name") or "")


def parse_json(payload: dict[str, Any]) -> list[SlurmJob]:
    """`squeue --json` output (any supported layout) -> jobs."""
    if not isinstance(payload, dict) or "jobs" not in payload:
        raise AdapterError(
            "squeue --json returned no 'jobs' list; set slurm.output: text to use the text format"
        )
    errors = payload.get("errors") or []
    if errors:
        # squeue lists every job, so the error is about reaching the controller (22.05 says
        # only "Failed while looking for jobs" when slurmctld is down, and exits 0).
        first = errors[0]
        message = (
            first.get("description") or first.get("error") if isinstance(first, dict) else first
        )
        raise EngineUnavailable(
            f"squeue --json could not load the job list ({message}); the Slurm controller "
            "may be down or restarting; the action will be retried"
        )
    return [_job_from_json(raw) for raw in payload["jobs"]]


def _job_from_json(raw: dict[str, Any]) -> SlurmJob:
    state = _base_state(raw.get("job_state"))
    flags = raw.get("job_state")
    if isinstance(flags, list) and "REQUEUE_HOLD" in {str(f).upper() for f in flags}:
        state = "REQUEUE_HOLD"
    limit_min = _number(raw.get("time_limit"))
    tres = str(raw.get("tres_per_node") or raw.get("tres_per_job") or "")
    details = raw.get("gres_detail") or []
    return SlurmJob(
        job_id=str(raw.get("job_id")),
        name=str(raw.get("name") or ""),
        state=state,
        reason=str(raw.get("state_reason") or ""),
        partition=str(raw.get("partition") or ""),
        comment=str(raw.get("comment") or ""),
        user=str(raw.get("user_name") or ""),
        cluster=str(raw.get("cluster") or ""),
        time_limit_s=limit_min * 60 if limit_min is not None else None,
        submit_time=_epoch(raw.get("submit_time")),
        start_time=_epoch(raw.get("start_time")) if state not in PENDING_STATES else None,
        end_time=_epoch(raw.get("end_time")) if state in _ENDED else None,
        exit_code=_exit_code(raw.get("exit_code"), state) if state in _ENDED else None,
        gpus_requested=gpus_from_tres(tres),
        gpu_indices=gpu_indices([str(d) for d in details]) if isinstance(details, list) else [],
        detail_known=True,
    )


_ENDED = SUCCEEDED_STATES | FAILED_STATES | CANCELLED_STATES | GONE_STATES


# --------------------------------------------------------------------------------------------
# Text (squeue -o)

TEXT_FIELDS = (
    ("job_id", "%i"),
    ("name", "%j"),
    ("state", "%T"),
    ("reason", "%r"),
    ("partition", "%P"),
    ("user", "%u"),
    ("time_limit", "%l"),
    ("submit_time", "%V"),
    ("start_time", "%S"),
    ("end_time", "%e"),
    ("tres", "%b"),
    ("comment", "%k"),  # last: a comment may contain the separator
)
TEXT_SEPARATOR = "|"
TEXT_FORMAT = TEXT_SEPARATOR.join(code for _, code in TEXT_FIELDS)


def parse_time_limit_s(text: str) -> float | None:
    """'UNLIMITED' -> None; '30' (minutes), 'MM:SS', 'HH:MM:SS', 'D-HH[:MM[:SS]]' -> seconds."""
    text = text.strip()
    if not text or text.upper() in ("UNLIMITED", "INFINITE", "NOT_SET", "N/A", "PARTITION_LIMIT"):
        return None
    days = 0
    if "-" in text:
        day_text, text = text.split("-", 1)
        days = int(day_text)
        parts = [int(p) for p in text.split(":")]
        while len(parts) < 3:
            parts.append(0)
        hours, minutes, seconds = parts[:3]
    else:
        parts = [int(p) for p in text.split(":")]
        if len(parts) == 1:
            hours, minutes, seconds = 0, parts[0], 0
        elif len(parts) == 2:
            hours, minutes, seconds = 0, parts[0], parts[1]
        else:
            hours, minutes, seconds = parts[:3]
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def _text_time(text: str) -> datetime | None:
    """squeue's 'YYYY-MM-DDTHH:MM:SS' (printed in the client's zone; the adapter runs
    every command with TZ=UTC) -> aware UTC datetime."""
    text = text.strip()
    if not text or text in ("N/A", "Unknown", "None", "(null)"):
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def parse_text(output: str) -> list[SlurmJob]:
    """`squeue -h -o TEXT_FORMAT` output -> jobs (GPU indices come from `parse_show_job`)."""
    jobs = []
    for line in output.splitlines():
        if not line.strip():
            continue
        values = line.split(TEXT_SEPARATOR, len(TEXT_FIELDS) - 1)
        if len(values) != len(TEXT_FIELDS):
            raise AdapterError(f"squeue printed a line gridshift cannot read: {line!r}")
        row = {name: value.strip() for (name, _), value in zip(TEXT_FIELDS, values, strict=True)}
        comment = row["comment"]
        state = row["state"].upper()
        jobs.append(
            SlurmJob(
                job_id=row["job_id"],
                name=row["name"],
                state=state,
                reason=row["reason"],
                partition=row["partition"],
                comment="" if comment == "(null)" else comment,
                user=row["user"],
                time_limit_s=parse_time_limit_s(row["time_limit"]),
                submit_time=_text_time(row["submit_time"]),
                start_time=_text_time(row["start_time"]) if state not in PENDING_STATES else None,
                end_time=_text_time(row["end_time"]) if state in _ENDED else None,
                exit_code=(0 if state in SUCCEEDED_STATES else None),
                gpus_requested=gpus_from_tres("" if row["tres"] == "N/A" else row["tres"]),
                detail_known=False,
            )
        )
    return jobs


@dataclass
class ShownJob:
    """What `scontrol -d show job` adds to the text format: GPU indices and exit code."""

    gpu_indices: list[int] = field(default_factory=list)
    exit_code: int | None = None


def parse_show_job(output: str) -> dict[str, ShownJob]:
    """`scontrol -d show job` text -> {job id: ShownJob}."""
    result: dict[str, ShownJob] = {}
    current: ShownJob | None = None
    for line in output.splitlines():
        match = re.search(r"\bJobId=(\d+)", line)
        if match:
            current = result.setdefault(match.group(1), ShownJob())
            continue
        if current is None:
            continue
        exit_match = re.search(r"(?:^|\s)ExitCode=(\d+:\d+)", line)
        if exit_match:
            current.exit_code = parse_exit_code(exit_match.group(1))
        if "GRES=" in line and "IDX:" in line:
            current.gpu_indices = sorted(set(current.gpu_indices) | set(gpu_indices(line)))
    return result


def parse_exit_code(text: str) -> int | None:
    """'0:0' / '1:0' / '0:9' (code:signal) -> exit code, 128+signal when killed by one."""
    if not text or ":" not in text:
        return None
    code, sig = text.split(":", 1)
    try:
        return 128 + int(sig) if int(sig) else int(code)
    except ValueError:
        return None


def strip_gres_sockets(text: str) -> str:
    """sinfo's 'gpu:4(S:0-1),gpu:a100:2(S:0)' -> 'gpu:4,gpu:a100:2'; '(null)' -> ''."""
    text = (text or "").strip()
    if text in ("(null)", "N/A"):
        return ""
    return re.sub(r"\([^)]*\)", "", text)


# --------------------------------------------------------------------------------------------
# sacct (for jobs the controller has already forgotten: older than MinJobAge)

SACCT_FIELDS = "JobID,JobName,State,ExitCode,Submit,Start,End,Partition,Comment"


def parse_sacct(output: str, job_id: str) -> SlurmJob | None:
    """`sacct -X -n -P -j ID -o SACCT_FIELDS` -> the job (its last record), or None."""
    found: SlurmJob | None = None
    for line in output.splitlines():
        if not line.strip():
            continue
        values = line.split("|", 8)
        if len(values) != 9:
            raise AdapterError(f"sacct printed a line gridshift cannot read: {line!r}")
        jid, name, state, exit_code, submit, start, end, partition, comment = values
        if jid.split("+")[0].split("_")[0] != job_id:
            continue
        base = state.split()[0].upper() if state.strip() else "UNKNOWN"  # "CANCELLED by 0"
        found = SlurmJob(
            job_id=job_id,
            name=name,
            state=base,
            reason="",
            partition=partition,
            comment=comment,
            submit_time=_text_time(submit),
            start_time=_text_time(start),
            end_time=_text_time(end) if base in _ENDED else None,
            exit_code=parse_exit_code(exit_code) if base in _ENDED else None,
            detail_known=False,
        )
    return found
