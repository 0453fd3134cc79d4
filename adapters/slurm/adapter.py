"""The Slurm adapter: gridshift jobs as Slurm batch jobs, and adoption of native ones.

How a job is kept from starting (`start_mode`):

- ``hold``: submitted with ``--hold`` and released (``scontrol release``) at the planned
  start. If the agent is down, held jobs stay held.
- ``begin``: submitted with a begin time at the job's latest start, moved to the planned
  start when the plan is known (``scontrol update StartTime=``) and to ``now`` on release.
  If the agent is down, Slurm still starts the job in time for its deadline.

Either way the comment carries gridshift's id and the planned start, so Slurm users see
them in ``squeue -o "%.10i %.9P %.20j %.8T %.50k"``. Every action looks at the job first
and does nothing if it already is in the wanted state (idempotent), and logs the job ids
and the reason. A controller that cannot be reached raises EngineUnavailable before any
change is made, so the agent retries on its next tick; nothing is released early.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shlex
import time
from datetime import datetime
from typing import Any

from ...scheduler.clock import Clock
from ...scheduler.config import SlurmAdapterConfig
from ...scheduler.errors import (
    AdapterError,
    Conflict,
    EngineUnavailable,
    NotFound,
    ValidationError,
)
from ...scheduler.interfaces import EngineState, EngineStatus
from ...scheduler.models import Job
from . import formats, marker
from .commands import SlurmCli, SlurmCommandError
from .formats import SlurmJob

log = logging.getLogger(__name__)

_REGIONS_CACHE_S = 300.0
_READ_CACHE_S = 1.0
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SlurmAdapter:
    """Adapter + Suspendable + Relocatable over Slurm's command-line clients."""

    name = "slurm"

    def __init__(
        self, config: SlurmAdapterConfig, clock: Clock, cli: SlurmCli | None = None
    ) -> None:
        self.config = config
        self.clock = clock
        self.cli = cli or SlurmCli(
            timeout_s=config.timeout_s, slurm_conf=config.slurm_conf, bin_dir=config.bin_dir
        )
        self._output = config.output  # "auto" becomes "json" or "text" on first use
        self._partition_region = {r.partition: name for name, r in config.regions.items()}
        self._regions_cache: tuple[float, dict[str, int | None]] | None = None
        self._read_cache: tuple[float, int, list[SlurmJob]] | None = None
        self._rejected: set[str] = set()  # native jobs whose marker was invalid (logged once)
        default = config.default_region or next(iter(config.regions))
        if default not in config.regions:
            raise ValidationError(
                f"slurm.default_region {default!r} is not one of slurm.regions "
                f"({', '.join(sorted(config.regions))})"
            )
        self.default_region = default

    # ---------------------------------------------------------------------------- reading

    def _query(self, *, fresh: bool = False) -> list[SlurmJob]:
        """Every job the controller knows (all states), in one call.

        A reconcile lists the managed jobs (always a fresh read), then asks for each job's
        status: those share the listing's squeue call as long as the adapter changed nothing
        in between and the answer is under a second old.
        """
        cached = self._read_cache
        if (
            not fresh
            and cached is not None
            and cached[1] == self.cli.changes
            and time.monotonic() - cached[0] < _READ_CACHE_S
        ):
            return cached[2]
        jobs = self._query_uncached()
        self._read_cache = (time.monotonic(), self.cli.changes, jobs)
        return jobs

    def _query_uncached(self) -> list[SlurmJob]:
        if self._output in ("auto", "json"):
            try:
                out = self.cli.run(["squeue", "--all", "--json"])
                payload = json.loads(out)
                try:
                    jobs = formats.parse_json(payload)
                except EngineUnavailable as exc:
                    self.cli.mark_unavailable(str(exc))
                    raise
                if self._output == "auto":
                    log.info(
                        "slurm: reading squeue --json (%s)", formats.json_layout(payload) or "?"
                    )
                    self._output = "json"
                return jobs
            except (SlurmCommandError, json.JSONDecodeError) as exc:
                if self._output == "json":
                    raise AdapterError(
                        f"squeue --json failed ({exc}); set slurm.output: text for this Slurm"
                    ) from exc
                log.info("slurm: squeue --json is not usable here (%s); using squeue -o", exc)
                self._output = "text"
        out = self.cli.run(["squeue", "--all", "-h", "-t", "all", "-o", formats.TEXT_FORMAT])
        jobs = formats.parse_text(out)
        if any(not j.pending for j in jobs):
            # The text format has no GPU indices and no exit code: one more call for both.
            try:
                shown = formats.parse_show_job(self.cli.run(["scontrol", "-d", "show", "job"]))
            except SlurmCommandError as exc:
                log.warning("slurm: could not read GPU indices (scontrol -d show job): %s", exc)
                shown = {}
            for j in jobs:
                detail = shown.get(j.job_id)
                if detail is None:
                    continue
                j.gpu_indices = detail.gpu_indices
                if j.ended:
                    j.exit_code = detail.exit_code
                j.detail_known = True
        return jobs

    def _marker(self, sj: SlurmJob) -> marker.Marker:
        return marker.parse(sj.comment, self.config.opt_in_marker)

    def _find(self, job: Job, jobs: list[SlurmJob] | None = None) -> SlurmJob | None:
        """The Slurm job behind `job`: by engine ref, else by the id in the comment."""
        jobs = self._query() if jobs is None else jobs
        ref = job.engine_ref or job.spec.engine_options.get("slurm_job_id")
        if ref is not None:
            ref_id = str(ref).split(";")[0]
            for sj in jobs:
                if sj.job_id == ref_id:
                    return sj
        tagged = [sj for sj in jobs if self._marker(sj).job_id == job.id]
        if not tagged:
            return None
        live = [sj for sj in tagged if not sj.ended]
        return (live or tagged)[-1]

    def _require(self, job: Job, action: str) -> SlurmJob:
        sj = self._find(job)
        if sj is None:
            raise NotFound(
                f"cannot {action} job {job.id}: Slurm does not know it (ref "
                f"{job.engine_ref or 'none'}); it may have ended long ago (MinJobAge) or "
                "been removed by an operator; submit it again if it should still run"
            )
        return sj

    def _region_of(self, sj: SlurmJob) -> str | None:
        return self._partition_region.get(sj.partition)

    def _engine_state(self, sj: SlurmJob) -> EngineState:
        fields = self._marker(sj).fields
        if sj.pending:
            if fields.get("paused") == "requeue":
                return EngineState.SUSPENDED
            released = fields.get("start") == "now" and not sj.held and sj.reason != "BeginTime"
            return EngineState.QUEUED if released else EngineState.HELD
        if sj.state in formats.RUNNING_STATES:
            return EngineState.RUNNING
        if sj.state in formats.SUSPENDED_STATES:
            return EngineState.SUSPENDED
        if sj.state in formats.SUCCEEDED_STATES:
            return EngineState.SUCCEEDED
        if sj.state in formats.FAILED_STATES:
            return EngineState.FAILED
        if sj.state in formats.CANCELLED_STATES:
            return EngineState.CANCELLED
        if sj.state in formats.GONE_STATES:
            return EngineState.MISSING
        return EngineState.HELD if sj.state == "UNKNOWN" else EngineState.RUNNING

    def _status(self, sj: SlurmJob, job_id: str | None) -> EngineStatus:
        state = self._engine_state(sj)
        message = f"slurm {sj.state.lower()}"
        if sj.reason and sj.reason != "None":
            message += f" ({sj.reason})"
        return EngineStatus(
            ref=sj.job_id,
            state=state,
            job_id=job_id,
            exit_code=sj.exit_code,
            gpus=sj.gpu_indices if state in (EngineState.RUNNING, EngineState.SUSPENDED) else [],
            started_at=sj.start_time,
            ended_at=sj.end_time,
            region=self._region_of(sj),
            message=message,
        )

    # ---------------------------------------------------------------------------- helpers

    def _log(
        self, action: str, job: Job, ref: str, detail: str = "", default: str = "no reason given"
    ) -> None:
        reason = job.reason or default
        log.info(
            "slurm: %s job %s (slurm %s)%s: %s",
            action,
            job.id,
            ref,
            f" [{detail}]" if detail else "",
            reason,
        )

    def _partition(self, region: str | None) -> tuple[str, str]:
        name = region or self.default_region
        if name not in self.config.regions:
            raise ValidationError(
                f"region {name!r} has no Slurm partition; configured regions: "
                f"{', '.join(sorted(self.config.regions))} (see slurm.regions)"
            )
        return name, self.config.regions[name].partition

    def _begin_arg(self, when: datetime) -> str:
        """A begin time relative to the controller's clock ('now+N'), so that the agent's
        clock (possibly simulated) and the controller's need not agree."""
        seconds = max(0, math.ceil((when - self.clock.now()).total_seconds()))
        return f"now+{seconds}" if seconds else "now"

    def _update(self, sj: SlurmJob, *assignments: str) -> None:
        self.cli.run(["scontrol", "update", f"JobId={sj.job_id}", *assignments])

    def _set_comment(self, sj: SlurmJob, job: Job | None, **updates: str | None) -> None:
        current = self._marker(sj)
        if job is not None:
            updates.setdefault("id", job.id)
        new = marker.render(current, self.config.opt_in_marker, **updates)
        if new != sj.comment:
            self._update(sj, f"Comment={new}")
            sj.comment = new

    def _interrupt_mode(self, job: Job) -> str:
        mode = str(job.spec.engine_options.get("interrupt", self.config.interrupt))
        if mode not in ("suspend", "requeue"):
            raise ValidationError(
                f"job {job.id}: engine_options.interrupt must be suspend or requeue, not {mode!r}"
            )
        return mode

    # ---------------------------------------------------------------------------- Adapter

    def submit(self, job: Job) -> str:
        jobs = self._query()
        existing = self._find(job, jobs)
        if existing is not None:
            self._set_comment(existing, job)
            log.info(
                "slurm: submit job %s: already known to Slurm as %s (%s); nothing submitted",
                job.id,
                existing.job_id,
                existing.state.lower(),
            )
            return existing.job_id
        if job.spec.engine_options.get("native"):
            raise NotFound(
                f"job {job.id} was adopted from Slurm job "
                f"{job.spec.engine_options.get('slurm_job_id')}, which Slurm no longer knows"
            )
        region, partition = self._partition(job.region)
        spec = job.spec
        planned = job.planned_start or job.latest_start
        fields: dict[str, str] = {"id": job.id, "start": marker.format_time(planned)}
        comment = marker.render(marker.Marker(present=True), self.config.opt_in_marker, **fields)
        argv = [
            "sbatch",
            "--parsable",
            f"--job-name={spec.name}",
            f"--partition={partition}",
            f"--comment={comment}",
        ]
        if self.config.start_mode == "hold":
            argv.append("--hold")
        else:
            argv.append(f"--begin={self._begin_arg(planned)}")
        if spec.gpus:
            argv.append(f"--gres=gpu:{spec.gpus}")
        limit_min = spec.engine_options.get("time_limit_min")
        if limit_min is None and self.config.time_limit_factor is not None:
            limit_min = math.ceil(spec.expected_duration_s * self.config.time_limit_factor / 60)
        if limit_min is not None:
            argv.append(f"--time={int(limit_min)}")
        if spec.workdir:
            argv.append(f"--chdir={spec.workdir}")
        output = spec.engine_options.get("output")
        if output:
            argv.append(f"--output={output}")
        if spec.interruptible and self._interrupt_mode(job) == "requeue":
            argv.append("--requeue")
        extra = spec.engine_options.get("sbatch_args") or []
        if not isinstance(extra, list) or not all(isinstance(a, str) for a in extra):
            raise ValidationError(f"job {job.id}: engine_options.sbatch_args must be strings")
        argv.extend(extra)
        command = spec.command[0] if spec.shell else shlex.join(spec.command)
        bad = [k for k in spec.env if not _ENV_NAME.fullmatch(k)]
        if bad:
            raise ValidationError(
                f"job {job.id}: environment names must be letters, digits and _ (not starting "
                f"with a digit): {', '.join(sorted(bad))}"
            )
        env = {**spec.env, "GRIDSHIFT_JOB_ID": job.id}
        exports = "".join(f"export {k}={shlex.quote(v)}; " for k, v in sorted(env.items()))
        argv.append(f"--wrap={exports}{command}")
        out = self.cli.run(argv).strip()
        ref = out.split(";")[0].strip()
        if not ref.isdigit():
            raise AdapterError(f"sbatch printed {out!r} where a job id was expected")
        self._log(
            "submitted",
            job,
            ref,
            f"partition {partition} ({region}), start {fields['start']}",
            default="waiting in Slurm until gridshift releases it"
            if self.config.start_mode == "hold"
            else "begin time set to its planned (or latest) start",
        )
        return ref

    def release(self, job: Job) -> None:
        sj = self._require(job, "release")
        if not sj.pending:
            log.debug("slurm: release job %s (slurm %s): already %s", job.id, sj.job_id, sj.state)
            return
        if self._marker(sj).fields.get("paused") == "requeue":
            self.resume(job)  # starting a job that gridshift requeued is resuming it
            return
        if sj.reason == "JobHeldAdmin":
            # gridshift only ever places user holds: this one is an administrator's.
            log.warning(
                "slurm: not releasing job %s (slurm %s): an administrator holds it; it starts "
                "once they release it",
                job.id,
                sj.job_id,
            )
            return
        first = self._marker(sj).fields.get("start") != "now"
        self._set_comment(sj, job, start="now")
        acted = first
        if sj.held:
            self.cli.run(["scontrol", "release", sj.job_id])
            acted = True
        if sj.reason == "BeginTime" or (first and self.config.start_mode == "begin"):
            self._update(sj, "StartTime=now")
            acted = True
        if acted:
            self._log("released", job, sj.job_id)
        else:
            log.debug(
                "slurm: release job %s (slurm %s): released already, pending (%s)",
                job.id,
                sj.job_id,
                sj.reason,
            )

    def hold(self, job: Job) -> None:
        sj = self._require(job, "hold")
        if not sj.pending:
            log.info(
                "slurm: hold job %s (slurm %s): it is %s already; nothing to hold",
                job.id,
                sj.job_id,
                sj.state.lower(),
            )
            return
        planned = job.planned_start or job.latest_start
        planned = min(planned, job.latest_start)
        stamp = marker.format_time(planned)
        changed = self._marker(sj).fields.get("start") != stamp
        self._set_comment(sj, job, start=stamp)
        if self.config.start_mode == "hold":
            if not sj.held:
                self.cli.run(["scontrol", "uhold", sj.job_id])
                changed = True
        elif changed or sj.held:
            if sj.held and sj.reason != "JobHeldAdmin":
                # A native job held by its user (sbatch --hold): the begin time takes over.
                self.cli.run(["scontrol", "release", sj.job_id])
            self._update(sj, f"StartTime={self._begin_arg(planned)}")
        if changed:
            self._log("held", job, sj.job_id, f"until {stamp}")

    def cancel(self, job: Job) -> None:
        sj = self._find(job)
        if sj is None or sj.ended:
            return
        try:
            self.cli.run(["scancel", sj.job_id])
        except SlurmCommandError as exc:
            if not exc.unknown_job:
                raise
        self._log("cancelled", job, sj.job_id)

    def _accounting(self, job: Job) -> SlurmJob | None:
        """A job the controller no longer lists (ended more than MinJobAge ago), from the
        accounting database; None where accounting is off or does not know it either."""
        ref = job.engine_ref or job.spec.engine_options.get("slurm_job_id")
        if ref is None:
            return None
        ref_id = str(ref).split(";")[0]
        try:
            out = self.cli.run(
                ["sacct", "-X", "-n", "-P", "-j", ref_id, "-o", formats.SACCT_FIELDS]
            )
        except EngineUnavailable:
            raise
        except AdapterError as exc:  # "accounting storage is disabled", or no sacct at all
            log.debug("slurm: sacct cannot tell about slurm job %s: %s", ref_id, exc)
            return None
        return formats.parse_sacct(out, ref_id)

    def status(self, job: Job) -> EngineStatus:
        sj = self._find(job)
        if sj is None:
            # Never report "missing" for a job that merely ended long ago: the agent would
            # submit it again.
            sj = self._accounting(job)
        if sj is None:
            return EngineStatus(
                ref=job.engine_ref or "",
                state=EngineState.MISSING,
                job_id=job.id,
                message="Slurm does not know this job (ended before MinJobAge, or removed)",
            )
        return self._status(sj, job.id)

    def list_managed(self) -> list[EngineStatus]:
        result: list[EngineStatus] = []
        for sj in self._query(fresh=True):
            mark = self._marker(sj)
            opted_in = mark.present or sj.partition in self.config.opt_in_partitions
            if not opted_in:
                continue
            if mark.job_id:
                result.append(self._status(sj, mark.job_id))
                continue
            if sj.ended:
                continue
            adopted = self._adoption(sj, mark)
            if adopted is not None:
                result.append(adopted)
        return result

    def _adoption(self, sj: SlurmJob, mark: marker.Marker) -> EngineStatus | None:
        """A native opted-in job, not yet known to the agent: report it with its spec."""
        now_s = time.time()
        age_s = now_s - sj.submit_time.timestamp() if sj.submit_time else 0.0
        try:
            spec = marker.adopt_spec(
                mark.fields,
                name=sj.name,
                slurm_job_id=sj.job_id,
                time_limit_s=sj.time_limit_s,
                default_duration_s=self.config.default_duration_s,
                gpus=sj.gpus_requested,
                submitted_age_s=age_s,
                current_region=self._region_of(sj),
            )
        except ValidationError as exc:
            if sj.job_id not in self._rejected:
                self._rejected.add(sj.job_id)
                log.warning("slurm: not adopting slurm job %s: %s", sj.job_id, exc)
            return None
        if self.config.claim_on_adopt and sj.pending and not sj.held:
            self._claim(sj, spec, age_s)
        status = self._status(sj, None)
        status.adopt_spec = spec
        return status

    def _claim(self, sj: SlurmJob, spec: dict[str, Any], age_s: float) -> None:
        """Keep an opted-in native job from starting before the agent has planned it."""
        if self.config.start_mode == "hold":
            # A user hold: the job's owner can still release it himself (opting out).
            self.cli.run(["scontrol", "uhold", sj.job_id])
            sj.reason = "JobHeldUser"
            how = "held"
        else:
            # Begin at the latest start the marker allows: safe even if the agent stops.
            delay_s = spec.get("max_delay_s")
            if delay_s is None and spec.get("deadline") is not None:
                delay_s = (spec["deadline"] - self.clock.now()).total_seconds() - spec[
                    "expected_duration_s"
                ]
            seconds = max(0, int(delay_s or 0))
            self._update(sj, f"StartTime=now+{seconds}")
            how = f"begin time now+{seconds}s"
        log.info(
            "slurm: claimed native slurm job %s (%s) for adoption: opted in with %r",
            sj.job_id,
            how,
            sj.comment or f"partition {sj.partition}",
        )

    # ---------------------------------------------------------------------------- Suspendable

    def suspend(self, job: Job) -> None:
        sj = self._require(job, "suspend")
        if sj.state in formats.SUSPENDED_STATES or sj.pending or sj.ended:
            log.debug("slurm: suspend job %s (slurm %s): it is %s", job.id, sj.job_id, sj.state)
            return
        if not job.spec.interruptible:
            raise ValidationError(f"job {job.id} is not interruptible; it cannot be suspended")
        if self._interrupt_mode(job) == "requeue":
            self._set_comment(sj, job, paused="requeue")
            self.cli.run(["scontrol", "requeuehold", sj.job_id])
            self._log("requeued held", job, sj.job_id)
        else:
            self.cli.run(["scontrol", "suspend", sj.job_id])
            self._log("suspended", job, sj.job_id)

    def resume(self, job: Job) -> None:
        sj = self._require(job, "resume")
        if sj.state in formats.SUSPENDED_STATES:
            self.cli.run(["scontrol", "resume", sj.job_id])
            self._log("resumed", job, sj.job_id)
        elif sj.pending and self._marker(sj).fields.get("paused") == "requeue":
            self._set_comment(sj, job, paused=None, start="now")
            if sj.held:
                self.cli.run(["scontrol", "release", sj.job_id])
            # A requeued job waits out Slurm's requeue delay (a begin time) unless told not to.
            self._update(sj, "StartTime=now")
            self._log("released after requeue", job, sj.job_id)
        else:
            log.debug("slurm: resume job %s (slurm %s): it is %s", job.id, sj.job_id, sj.state)

    # ---------------------------------------------------------------------------- Relocatable

    def regions(self) -> dict[str, int | None]:
        cached = self._regions_cache
        if cached is not None and time.monotonic() - cached[0] < _REGIONS_CACHE_S:
            return dict(cached[1])
        result: dict[str, int | None] = {}
        for name, region in self.config.regions.items():
            if region.capacity_gpus is not None:
                result[name] = region.capacity_gpus
                continue
            try:
                out = self.cli.run(["sinfo", "-h", "-N", "-p", region.partition, "-o", "%N|%G"])
            except AdapterError as exc:  # includes EngineUnavailable
                log.warning("slurm: cannot count GPUs of partition %s: %s", region.partition, exc)
                if cached is not None and name in cached[1]:
                    result[name] = cached[1][name]
                else:
                    result[name] = None
                continue
            per_node: dict[str, int] = {}
            for line in out.splitlines():
                node, _, gres = line.partition("|")
                gres = formats.strip_gres_sockets(gres)
                per_node[node.strip()] = formats.gpus_from_tres(gres)
            result[name] = sum(per_node.values())
        self._regions_cache = (time.monotonic(), result)
        return dict(result)

    def relocate(self, job: Job, region: str) -> None:
        name, partition = self._partition(region)
        sj = self._require(job, "relocate")
        if sj.partition == partition:
            return
        if not sj.pending:
            raise Conflict(
                f"job {job.id} (slurm {sj.job_id}) is {sj.state.lower()}; only a job that has "
                "not started can move to another partition"
            )
        self._set_comment(sj, job)
        self._update(sj, f"Partition={partition}")
        self._log("relocated", job, sj.job_id, f"{sj.partition} -> {partition} ({name})")
