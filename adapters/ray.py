"""Ray: gridshift jobs as Ray Jobs, through each cluster's Jobs API (HTTP on the head node).

Ray has no held state, so a job is not sent to Ray until it is released: a job Ray does
not know is a held job. Every run of a job is one Ray submission, named after the job:

    gridshift-<job id>       the first run (the job's engine ref)
    gridshift-<job id>-2     the run after the first resume, and so on

and carries `gridshift_job_id` in its metadata. Each action reads what Ray has under those
names first and does nothing if the job is already where it should be (idempotent), so a
crash between a request and its record is repaired by the agent's next reconcile:

- release: submit the first run, to the cluster of the job's region (a no-op once any run
  exists);
- suspend: stop the running run. Ray sends the entrypoint SIGTERM, then SIGKILL; the job
  checkpoints on SIGTERM and, when started again, carries on from its checkpoint
  (`GRIDSHIFT_RUN` tells it which run it is);
- resume: submit the next run (a no-op while the latest run is pending or running);
- cancel: stop the latest run;
- relocate: a job not yet released goes to another cluster when it is released.

A run Ray reports STOPPED is the job's suspension where gridshift stopped it to suspend it
(a marker file per suspended run under the adapter's directory, written before the stop),
and a cancellation otherwise (someone ran `ray job stop`). Jobs submitted to Ray directly
are not adopted: Ray starts them at once.
"""

from __future__ import annotations

import logging
import re
import shlex
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from gridshift.scheduler.clock import Clock
from gridshift.scheduler.config import RayAdapterConfig, Settings
from gridshift.scheduler.errors import AdapterError, Conflict, EngineUnavailable, ValidationError
from gridshift.scheduler.interfaces import EngineState, EngineStatus
from gridshift.scheduler.models import Job, JobSpec

from ._common import Clusters, check_option_names

log = logging.getLogger(__name__)

PREFIX = "gridshift-"
METADATA_KEY = "gridshift_job_id"
_OPTIONS = {"runtime_env", "num_cpus", "resources", "memory_bytes"}
_EXIT_CODE = re.compile(r"exit code (-?\d+)")

# Ray's job status -> engine state (STOPPED depends on who stopped it: see `_state`)
_STATES = {
    "PENDING": EngineState.QUEUED,
    "RUNNING": EngineState.RUNNING,
    "SUCCEEDED": EngineState.SUCCEEDED,
    "FAILED": EngineState.FAILED,
}


class RayAdapter:
    """Adapter + Suspendable + Relocatable + ChecksSpecs over the Ray Jobs API of one or more
    clusters."""

    name = "ray"

    def __init__(
        self,
        config: RayAdapterConfig,
        clock: Clock,
        marks_dir: Path,
        session: requests.Session | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.marks_dir = Path(marks_dir)
        self.clusters = Clusters("Ray", "ray", config.regions, config.default_region)
        self.http = session or requests.Session()

    # -- required interface

    def submit(self, job: Job) -> str:
        self.clusters.of(job)  # the region must have a cluster
        self.check_spec(job.spec)
        return PREFIX + job.id

    def release(self, job: Job) -> None:
        region = self._region(job)
        if self._runs(job, region):
            return  # released before: never twice
        self._start(job, region, 1)

    def hold(self, job: Job) -> None:
        # A job not yet released is held by not being sent; one released is Ray's (the
        # agent's reconcile then records it as started).
        return None

    def cancel(self, job: Job) -> None:
        runs = self._runs(job, self._region(job))
        if runs and runs[-1]["status"] in ("PENDING", "RUNNING"):
            self._stop(job, runs[-1]["submission_id"])

    def status(self, job: Job) -> EngineStatus:
        region = self._region(job)
        runs = self._runs(job, region)
        if not runs:
            return EngineStatus(
                ref=PREFIX + job.id, job_id=job.id, state=EngineState.HELD, region=region
            )
        return self._status(runs[-1], job.id, region)

    def list_managed(self) -> list[EngineStatus]:
        out: list[EngineStatus] = []
        for region in self.config.regions:
            latest: dict[str, dict[str, Any]] = {}
            for run in self._get(region, "/api/jobs/"):
                job_id = (run.get("metadata") or {}).get(METADATA_KEY)
                sid = run.get("submission_id") or ""
                if not job_id or not _run_number(sid, job_id):
                    continue
                best = latest.get(job_id)
                if best is None or _run_number(sid, job_id) > _run_number(
                    best["submission_id"], job_id
                ):
                    latest[job_id] = run
            out += [self._status(run, job_id, region) for job_id, run in sorted(latest.items())]
        return out

    # -- optional capabilities

    def suspend(self, job: Job) -> None:
        runs = self._runs(job, self._region(job))
        if not runs:
            raise AdapterError(f"job {job.id} was never started in Ray: nothing to suspend")
        run = runs[-1]
        if run["status"] not in ("PENDING", "RUNNING"):
            return  # stopped or ended already
        mark = self._mark(run["submission_id"])
        mark.parent.mkdir(parents=True, exist_ok=True)
        mark.touch()  # before the stop: a STOPPED run without it was stopped by someone else
        self._stop(job, run["submission_id"])

    def resume(self, job: Job) -> None:
        region = self._region(job)
        runs = self._runs(job, region)
        if not runs:
            # Ray lost it (a restart of the head keeps no jobs): its first run again, which
            # carries on from the job's own checkpoint
            self._start(job, region, 1)
            return
        run = runs[-1]
        if run["status"] in ("PENDING", "RUNNING"):
            return  # resumed already
        if run["status"] != "STOPPED" or not self._mark(run["submission_id"]).exists():
            raise AdapterError(
                f"job {job.id} ({run['submission_id']}) is {run['status'].lower()} in Ray, "
                "not suspended by gridshift: it cannot be resumed"
            )
        self._start(job, region, len(runs) + 1)

    def regions(self) -> dict[str, int | None]:
        return self.clusters.capacities()

    def relocate(self, job: Job, region: str) -> None:
        self.clusters.get(region)
        runs = self._runs(job, self._region(job))
        if runs:
            raise Conflict(
                f"job {job.id} was already released to Ray in {self._region(job)}; "
                "only a job not yet released can move"
            )

    # -- internals

    def _region(self, job: Job) -> str:
        return self.clusters.of(job)

    def _cluster(self, region: str | None) -> str:
        return self.clusters.get(region).address.rstrip("/")

    def _mark(self, submission_id: str) -> Path:
        return self.marks_dir / f"{submission_id}.suspended"

    def check_spec(self, spec: JobSpec) -> None:
        """Refuse regions without a Ray cluster and engine options Ray would not take (at
        submission, not at the start)."""
        self.clusters.check_allowed(spec)
        opts = spec.engine_options
        check_option_names("Ray", opts, _OPTIONS)
        for key in ("runtime_env", "resources"):
            if not isinstance(opts.get(key, {}), dict):
                raise ValidationError(f"engine_options.{key} must be a mapping")
        resources = opts.get("resources", {})
        if not all(isinstance(v, int | float) and v >= 0 for v in resources.values()):
            raise ValidationError("engine_options.resources must map names to amounts >= 0")
        for key in ("num_cpus", "memory_bytes"):
            value = opts.get(key)
            if value is not None and (not isinstance(value, int | float) or value < 0):
                raise ValidationError(f"engine_options.{key} must be a number >= 0")

    def _start(self, job: Job, region: str, run: int) -> None:
        opts = job.spec.engine_options
        sid = PREFIX + job.id + ("" if run == 1 else f"-{run}")
        command = job.spec.command[0] if job.spec.shell else shlex.join(job.spec.command)
        if job.spec.workdir:
            command = f"cd {shlex.quote(job.spec.workdir)} && {command}"
        runtime_env = dict(opts.get("runtime_env", {}))
        runtime_env["env_vars"] = {
            **runtime_env.get("env_vars", {}),
            **job.spec.env,
            "GRIDSHIFT_JOB_ID": job.id,
            "GRIDSHIFT_RUN": str(run),
        }
        body: dict[str, Any] = {
            "entrypoint": command,
            "submission_id": sid,
            "runtime_env": runtime_env,
            "metadata": {METADATA_KEY: job.id, "name": job.spec.name},
            "entrypoint_num_gpus": job.spec.gpus,
            "entrypoint_num_cpus": float(opts.get("num_cpus", self.config.entrypoint_num_cpus)),
        }
        if opts.get("resources"):
            body["entrypoint_resources"] = opts["resources"]
        if opts.get("memory_bytes") is not None:
            body["entrypoint_memory"] = int(opts["memory_bytes"])
        try:
            self._request("POST", region, "/api/jobs/", json=body)
        except AdapterError as exc:
            if "already exists" in str(exc):
                return  # submitted by an earlier call whose answer was lost
            raise
        log.info("job %s submitted to Ray in %s as %s: %s", job.id, region, sid, command)

    def _stop(self, job: Job, submission_id: str) -> None:
        self._request("POST", self._region(job), f"/api/jobs/{submission_id}/stop")
        log.info("job %s: Ray run %s stopped", job.id, submission_id)

    def _runs(self, job: Job, region: str) -> list[dict[str, Any]]:
        """The job's runs in Ray, first to latest."""
        runs: list[dict[str, Any]] = []
        while True:
            sid = PREFIX + job.id + ("" if not runs else f"-{len(runs) + 1}")
            found = self._get(region, f"/api/jobs/{sid}", missing_ok=True)
            if found is None:
                return runs
            runs.append(found)

    def _status(self, run: dict[str, Any], job_id: str, region: str) -> EngineStatus:
        status = str(run.get("status", ""))
        message = str(run.get("message") or "").split("\n", 1)[0]
        if status == "STOPPED":
            mine = self._mark(run["submission_id"]).exists()
            state = EngineState.SUSPENDED if mine else EngineState.CANCELLED
        elif status in _STATES:
            state = _STATES[status]
        else:
            raise AdapterError(f"Ray reports an unknown status {status!r} for {job_id}")
        code = run.get("driver_exit_code")
        if code is None and state == EngineState.FAILED:
            found = _EXIT_CODE.search(message)
            code = int(found.group(1)) if found else None
        elif state == EngineState.SUCCEEDED:
            code = 0
        return EngineStatus(
            ref=PREFIX + job_id,
            job_id=job_id,
            state=state,
            exit_code=code,
            started_at=_ms(run.get("start_time")),
            ended_at=_ms(run.get("end_time")),
            region=region,
            message=message if state in (EngineState.FAILED, EngineState.CANCELLED) else "",
        )

    def _get(self, region: str, path: str, missing_ok: bool = False) -> Any:
        return self._request("GET", region, path, missing_ok=missing_ok)

    def _request(
        self, method: str, region: str, path: str, missing_ok: bool = False, **kwargs: Any
    ) -> Any:
        url = self._cluster(region) + path
        try:
            resp = self.http.request(method, url, timeout=self.config.timeout_s, **kwargs)
        except requests.RequestException as exc:
            raise EngineUnavailable(
                f"Ray in {region} cannot be reached at {self._cluster(region)} "
                f"({_why(exc, self.config.timeout_s)}): is its head node running with the "
                "dashboard (ray start --head --dashboard-host=0.0.0.0)?"
            ) from exc
        if resp.status_code == 404 and missing_ok:
            return None
        if resp.status_code >= 400:
            raise (EngineUnavailable if resp.status_code in (502, 503, 504) else AdapterError)(
                f"Ray in {region}: {method} {path} answered {resp.status_code}: "
                f"{_ray_error(resp.text)}"
            )
        try:
            return resp.json()
        except ValueError as exc:
            raise AdapterError(
                f"Ray in {region}: {method} {path} answered with no JSON: {resp.text[:200]!r}"
            ) from exc


def _run_number(submission_id: str, job_id: str) -> int:
    """1 for gridshift-<job id>, n for gridshift-<job id>-n; 0 for another job's name."""
    base = PREFIX + job_id
    if submission_id == base:
        return 1
    tail = submission_id[len(base) + 1 :]
    return int(tail) if submission_id.startswith(base + "-") and tail.isdigit() else 0


def _why(exc: requests.RequestException, timeout_s: float) -> str:
    if isinstance(exc, requests.Timeout):
        return f"no answer within {timeout_s:g} s"
    errno = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(exc))
    return errno.group(1).strip().lower() if errno else type(exc).__name__


def _ray_error(text: str) -> str:
    """The line that says what went wrong: Ray answers some errors with a Python traceback."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "(no text)")[:500]


def _ms(value: Any) -> datetime | None:
    return datetime.fromtimestamp(value / 1000.0, UTC) if value else None


def build(settings: Settings, clock: Clock) -> RayAdapter | None:
    """The adapter for `settings.ray`, or None when Ray is not configured."""
    if settings.ray is None:
        return None
    return RayAdapter(settings.ray, clock, settings.state_dir / "ray")
