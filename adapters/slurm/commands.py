"""Running Slurm's client commands: one place for timeouts, environment and error mapping."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from pathlib import Path

from ...scheduler.errors import AdapterError, EngineUnavailable

log = logging.getLogger(__name__)

# stderr fragments that mean "the controller (or munge) cannot be reached right now".
_UNAVAILABLE = (
    "unable to contact slurm controller",
    "socket timed out",
    "connection refused",
    "zero bytes were transmitted",
    "backup controller in standby",
    "communication connection failure",
    "transport endpoint",
    "slurmctld is not responding",
    "unable to connect to munge",
    "munge decode failed",
    "munged",
    "resource temporarily unavailable",
    "could not establish a configuration source",
)
# stderr fragments that mean "no such job" (or: it has already gone).
_UNKNOWN_JOB = ("invalid job id", "job has already finished", "does not exist", "unknown job")


class SlurmCommandError(AdapterError):
    """A Slurm command ran and refused the request."""

    def __init__(self, message: str, *, stderr: str = "", returncode: int = 0) -> None:
        super().__init__(message)
        self.stderr = stderr
        self.returncode = returncode

    @property
    def unknown_job(self) -> bool:
        lowered = self.stderr.lower()
        return any(fragment in lowered for fragment in _UNKNOWN_JOB)


class SlurmCli:
    """Runs sbatch/squeue/scontrol/scancel/sinfo with a timeout, SLURM_CONF and TZ=UTC.

    Times that Slurm prints or parses are in the client's time zone; forcing UTC makes
    them UTC. Nothing runs at construction.
    """

    # After the controller failed to answer, further commands fail at once for this long
    # instead of each waiting out Slurm's own connection retries (about 4 s per command).
    unavailable_retry_s = 2.0

    def __init__(
        self, *, timeout_s: float, slurm_conf: str | None = None, bin_dir: str | None = None
    ) -> None:
        self.timeout_s = timeout_s
        self.slurm_conf = slurm_conf
        self.bin_dir = bin_dir
        self.changes = 0  # counts commands that may have changed a job (invalidates reads)
        self._down_until = 0.0
        self._down_reason = ""

    def _argv(self, argv: list[str]) -> list[str]:
        if self.bin_dir:
            return [str(Path(self.bin_dir) / argv[0]), *argv[1:]]
        return argv

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["TZ"] = "UTC"
        if self.slurm_conf:
            env["SLURM_CONF"] = self.slurm_conf
        # The agent's own Slurm job context (if it runs inside one) must not leak into sbatch.
        for key in list(env):
            if key.startswith(("SLURM_JOB", "SBATCH_", "SQUEUE_", "SLURM_CLUSTERS")):
                del env[key]
        return env

    @staticmethod
    def is_read(argv: list[str]) -> bool:
        return argv[0] in ("squeue", "sinfo", "sacct") or argv[:3] == ["scontrol", "-d", "show"]

    def run(self, argv: list[str]) -> str:
        """Run one command; return stdout. Raises EngineUnavailable or SlurmCommandError."""
        if time.monotonic() < self._down_until:
            raise EngineUnavailable(self._down_reason)
        if not self.is_read(argv):
            self.changes += 1
        try:
            return self._run(argv)
        except EngineUnavailable as exc:
            self.mark_unavailable(str(exc))
            raise

    def mark_unavailable(self, reason: str) -> None:
        """The controller did not answer (also when a command reported it in its output)."""
        self._down_until = time.monotonic() + self.unavailable_retry_s
        self._down_reason = reason

    def _run(self, argv: list[str]) -> str:
        cmd = self._argv(argv)
        try:
            done = subprocess.run(
                cmd,
                env=self._env(),
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise EngineUnavailable(
                f"`{' '.join(argv[:2])}` did not answer within {self.timeout_s:g} s; the Slurm "
                "controller may be down or restarting; the action will be retried"
            ) from exc
        except FileNotFoundError as exc:
            raise AdapterError(
                f"Slurm command {cmd[0]!r} was not found; install the Slurm client or set "
                "slurm.bin_dir to the directory that holds sbatch, squeue and scontrol"
            ) from exc
        if done.returncode != 0:
            stderr = (done.stderr or done.stdout or "").strip()
            lowered = stderr.lower()
            if any(fragment in lowered for fragment in _UNAVAILABLE):
                raise EngineUnavailable(
                    f"`{' '.join(argv[:2])}` could not reach Slurm ({stderr.splitlines()[-1]}); "
                    "the controller may be down or restarting; the action will be retried"
                )
            raise SlurmCommandError(
                f"`{' '.join(argv)}` failed with exit code {done.returncode}: {stderr}",
                stderr=stderr,
                returncode=done.returncode,
            )
        return done.stdout
