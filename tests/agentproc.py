"""The agent as a real process, for the tests that start, kill and restart it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.conftest import free_port


class AgentProcess:
    """`gridshift agent` run in `tmp` with `self.env` (which a subclass sets, knowing
    `self.port`); each start logs to its own file, so a restart does not hide the log of
    the run before."""

    def __init__(self, tmp: Path, up_timeout_s: float = 30.0) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}"
        self.env: dict[str, str] = {}
        self.up_timeout_s = up_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, **env: str) -> None:
        """Start the agent (with `env` added for this start) and wait for /healthz."""
        self.starts += 1
        # the child keeps its own copy of the log's descriptor; this process closes its own
        with open(self.tmp / f"agent-{self.starts}.log", "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gridshift.scheduler.cli", "agent"],
                env={**self.env, **env},
                cwd=self.tmp,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + self.up_timeout_s
        while time.monotonic() < deadline:
            try:
                if requests.get(self.api + "/healthz", timeout=1).ok:
                    return
            except requests.ConnectionError:
                pass
            assert self.proc.poll() is None, self.log()
            time.sleep(0.05)
        raise AssertionError("agent did not come up\n" + self.log())

    def log(self) -> str:
        return (self.tmp / f"agent-{self.starts}.log").read_text(errors="replace")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=60)
