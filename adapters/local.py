"""Local processes: the embedded default engine.

Each job runs under a small supervisor (`local_runner`) in its own session and process
group, with CUDA_VISIBLE_DEVICES set to the GPUs it was given. Everything the adapter knows
lives in the job's run directory, so a restarted agent re-adopts running jobs:

    RUN_DIR/launch.json   argv, env, workdir, gpus (written before the process starts)
    RUN_DIR/pid           the supervisor's pid = the job's process group id
    RUN_DIR/exit.json     the exit code, written by the supervisor when the job ends
    RUN_DIR/cancelled     present once the job was cancelled
    RUN_DIR/stdout.log, stderr.log

Idempotence: `release` creates RUN_DIR with an exclusive mkdir, so a job is never started
twice, however often release is called (for example after a crash between recording the
start and starting it). Suspend/resume are SIGSTOP/SIGCONT of the process group; cancel is
SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from gridshift.scheduler.clock import Clock
from gridshift.scheduler.config import Settings
from gridshift.scheduler.errors import AdapterError
from gridshift.scheduler.interfaces import EngineState, EngineStatus
from gridshift.scheduler.models import Job

log = logging.getLogger(__name__)
RUNNER = "gridshift.adapters.local_runner"


class LocalAdapter:
    name = "local"

    def __init__(self, runs_dir: Path, clock: Clock, *, gpus: int = 0, kill_grace_s: float = 10.0):
        self.runs_dir = Path(runs_dir)
        self.clock = clock
        self.gpus = gpus
        self.kill_grace_s = kill_grace_s

    def _dir(self, job: Job) -> Path:
        return self.runs_dir / job.id

    # -- required interface

    def submit(self, job: Job) -> str:
        # Nothing to create: a local job that has not started is simply not running.
        return job.id

    def hold(self, job: Job) -> None:
        # A held local job has no process; nothing to do, whatever its state.
        return None

    def release(self, job: Job) -> None:
        run_dir = self._dir(job)
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        try:
            run_dir.mkdir()
        except FileExistsError:
            return  # already started (or starting): never twice
        gpus = self._free_gpus(job.spec.gpus, exclude=job.id)
        env = dict(job.spec.env)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
        env["GRIDSHIFT_JOB_ID"] = job.id
        argv = ["/bin/sh", "-c", job.spec.command[0]] if job.spec.shell else job.spec.command
        launch = {"argv": argv, "env": env, "workdir": job.spec.workdir, "gpus": gpus}
        from .local_runner import write_atomic

        write_atomic(run_dir / "launch.json", json.dumps(launch))
        try:
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gridshift.adapters.local_runner",
                    str(run_dir),
                    "--",
                    *argv,
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=open(run_dir / "runner.log", "ab"),  # noqa: SIM115 - handed to the child
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            write_atomic(run_dir / "exit.json", json.dumps({"exit_code": 127, "error": str(exc)}))
            raise AdapterError(f"job {job.id}: cannot start the supervisor: {exc}") from exc
        log.info("job %s started locally (gpus %s): %s", job.id, gpus or "none", argv)

    def cancel(self, job: Job) -> None:
        run_dir = self._dir(job)
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        try:
            run_dir.mkdir()  # not started: claim the directory so it never starts
            (run_dir / "cancelled").touch()
            from .local_runner import write_atomic

            write_atomic(run_dir / "exit.json", json.dumps({"exit_code": None}))
            return
        except FileExistsError:
            pass
        (run_dir / "cancelled").touch()
        pgid = self._pgid(run_dir)
        if pgid is None or (run_dir / "exit.json").exists():
            return
        self._signal(pgid, signal.SIGCONT)  # a stopped group must run to handle SIGTERM
        self._signal(pgid, signal.SIGTERM)
        timer = threading.Timer(self.kill_grace_s, self._kill_if_alive, args=(run_dir, pgid))
        timer.daemon = True
        timer.start()

    def status(self, job: Job) -> EngineStatus:
        return self._status(self._dir(job), job.id)

    def list_managed(self) -> list[EngineStatus]:
        if not self.runs_dir.is_dir():
            return []
        return [self._status(d, d.name) for d in sorted(self.runs_dir.iterdir()) if d.is_dir()]

    # -- optional capabilities

    def suspend(self, job: Job) -> None:
        pgid = self._started_pgid(self._dir(job))
        if pgid is None:
            raise AdapterError(f"job {job.id} has no local process to suspend")
        self._signal(pgid, signal.SIGSTOP)

    def resume(self, job: Job) -> None:
        pgid = self._started_pgid(self._dir(job))
        if pgid is None:
            raise AdapterError(f"job {job.id} has no local process to resume")
        self._signal(pgid, signal.SIGCONT)

    # -- internals

    def _status(self, run_dir: Path, job_id: str) -> EngineStatus:
        if not run_dir.is_dir():
            return EngineStatus(ref=job_id, job_id=job_id, state=EngineState.HELD)
        gpus = self._launch_gpus(run_dir)
        exit_file = run_dir / "exit.json"
        cancelled = (run_dir / "cancelled").exists()
        if exit_file.exists():
            code = json.loads(exit_file.read_text(encoding="utf-8")).get("exit_code")
            if cancelled:
                state = EngineState.CANCELLED
            else:
                state = EngineState.SUCCEEDED if code == 0 else EngineState.FAILED
            return EngineStatus(ref=job_id, job_id=job_id, state=state, exit_code=code, gpus=gpus)
        pgid = self._pgid(run_dir)
        if pgid is None:
            if (run_dir / "launch.json").exists() and _age_s(run_dir / "launch.json") < 30:
                return EngineStatus(ref=job_id, job_id=job_id, state=EngineState.RUNNING, gpus=gpus)
            return EngineStatus(
                ref=job_id,
                job_id=job_id,
                state=EngineState.FAILED,
                message="the job's supervisor never started",
            )
        proc_state = _proc_state(pgid)
        if proc_state is None or proc_state == "Z":
            # The supervisor is gone without writing an exit code: killed from outside.
            if exit_file.exists():
                return self._status(run_dir, job_id)
            state = EngineState.CANCELLED if cancelled else EngineState.FAILED
            return EngineStatus(
                ref=job_id,
                job_id=job_id,
                state=state,
                gpus=gpus,
                message="the job's process group was killed before it could record an exit code",
            )
        state = EngineState.SUSPENDED if proc_state == "T" else EngineState.RUNNING
        return EngineStatus(ref=job_id, job_id=job_id, state=state, gpus=gpus)

    def _free_gpus(self, count: int, exclude: str) -> list[int]:
        if count == 0:
            return []
        used: set[int] = set()
        for status in self.list_managed():
            if status.job_id != exclude and status.state in (
                EngineState.RUNNING,
                EngineState.SUSPENDED,
            ):
                used.update(status.gpus)
        free = [g for g in range(self.gpus) if g not in used]
        if len(free) < count:
            # Oversubscribe rather than refuse: the planner keeps within capacity; this only
            # happens when jobs were started outside its plan.
            log.warning("only %d free GPUs for a job asking %d; sharing", len(free), count)
            free += [g for g in range(self.gpus) if g not in free]
        return free[:count]

    @staticmethod
    def _launch_gpus(run_dir: Path) -> list[int]:
        try:
            return list(json.loads((run_dir / "launch.json").read_text(encoding="utf-8"))["gpus"])
        except (OSError, ValueError, KeyError):
            return []

    def _started_pgid(self, run_dir: Path, wait_s: float = 5.0) -> int | None:
        """The job's process group; a job released a moment ago (its supervisor has yet to
        write its pid) is waited for, up to `wait_s`."""
        deadline = time.monotonic() + wait_s
        while True:
            pgid = self._pgid(run_dir)
            if pgid is not None or not (run_dir / "launch.json").exists():
                return pgid
            if (run_dir / "exit.json").exists() or time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    @staticmethod
    def _pgid(run_dir: Path) -> int | None:
        try:
            return int((run_dir / "pid").read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            return None

    @staticmethod
    def _signal(pgid: int, sig: signal.Signals) -> None:
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass
        except PermissionError as exc:
            raise AdapterError(f"not allowed to signal process group {pgid}: {exc}") from exc

    def _kill_if_alive(self, run_dir: Path, pgid: int) -> None:
        if not (run_dir / "exit.json").exists() and _proc_state(pgid) not in (None, "Z"):
            log.warning(
                "process group %d ignored SIGTERM for %.0fs: SIGKILL", pgid, self.kill_grace_s
            )
            self._signal(pgid, signal.SIGKILL)


def _proc_state(pid: int) -> str | None:
    """The one-letter state of a process (R, S, T, Z, ...), or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            data = fh.read()
    except OSError:
        return None
    return data[data.rindex(")") + 2 :].split(" ", 1)[0]


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return float("inf")


def build(settings: Settings, clock: Clock) -> LocalAdapter:
    return LocalAdapter(
        settings.state_dir / "runs",
        clock,
        gpus=settings.local.gpus,
        kill_grace_s=settings.local.kill_grace_s,
    )
