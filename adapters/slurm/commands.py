"""Running Slurm's client commands: one place for timeouts, environment and error mapping."""

from __future__ import annotations

import logging
import os
import subprocess
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

    def __init__(
        self, *, timeout_s: float, slurm_conf: str | None = None, bin_dir: str | None = None
    ) -> None:
        self.timeout_s = timeout_s
        self.slurm_conf = slurm_conf
        self.bin_dir = bin_dir

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

    def run(self, argv: list[str]) -> str:
        """Run one command; return stdout. Raises EngineUnavailable or SlurmCommandError."""
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
