"""A real local Ray for the whole test session: `ray start --head` with its Jobs API on a
free loopback port, two logical GPUs (Ray hands them out as CUDA_VISIBLE_DEVICES without
hardware), stopped at the end.

The `ray` command is found through GRIDSHIFT_RAY_BIN, else PATH; only the head started
here is stopped (never another Ray on the machine). Ray needs its own
environment (`python3 -m venv /opt/ray-venv && /opt/ray-venv/bin/pip install
"ray[default]"`, as .ci/run does); gridshift talks to it over HTTP only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import free_port, require, wait_for

RAY_GPUS = 2


@dataclass
class RayHead:
    ray: str
    address: str  # the Jobs API (dashboard), http://127.0.0.1:PORT
    temp_dir: Path
    env: dict[str, str]

    def jobs(self) -> list[dict[str, Any]]:
        return list(requests.get(self.address + "/api/jobs/", timeout=10).json())

    def job(self, submission_id: str) -> dict[str, Any]:
        return dict(requests.get(f"{self.address}/api/jobs/{submission_id}", timeout=10).json())

    def logs(self, submission_id: str) -> str:
        url = f"{self.address}/api/jobs/{submission_id}/logs"
        return str(requests.get(url, timeout=10).json()["logs"])


def find_ray() -> str | None:
    return os.environ.get("GRIDSHIFT_RAY_BIN") or shutil.which("ray")


@pytest.fixture(scope="session")
def ray_head() -> Iterator[RayHead]:
    ray = find_ray()
    require(
        "ray",
        ray is not None and os.access(ray, os.X_OK),
        "install it in its own venv (python3 -m venv /opt/ray-venv && /opt/ray-venv/bin/pip "
        'install "ray[default]") and set GRIDSHIFT_RAY_BIN=/opt/ray-venv/bin/ray',
    )
    assert ray is not None
    temp_dir = Path(tempfile.mkdtemp(prefix="gsray", dir="/tmp"))  # short: Ray's sockets
    env = {
        **os.environ,
        # the job entrypoints run under the head's PATH: Ray's own venv first
        "PATH": f"{Path(ray).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # single-host mode: loopback only
    }
    env.pop("VIRTUAL_ENV", None)
    port = free_port()
    cmd = [
        ray, "start", "--head", "--block", "--node-ip-address=127.0.0.1",
        f"--port={free_port()}", "--num-cpus=4", f"--num-gpus={RAY_GPUS}",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={port}",
        "--disable-usage-stats", f"--temp-dir={temp_dir}",
    ]  # fmt: skip
    log = open(temp_dir / "ray-start.log", "wb")  # noqa: SIM115 - the head's output, until it ends
    # --block keeps `ray start` in the foreground: ending it ends this head and nothing else
    # (`ray stop` would stop every Ray on the machine).
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    head = RayHead(ray, f"http://127.0.0.1:{port}", temp_dir, env)
    try:

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(
                    "ray start ended: " + (temp_dir / "ray-start.log").read_text(errors="replace")
                )
            return _api_up(head.address)

        wait_for(up, timeout_s=90, what="Ray's Jobs API")
        yield head
    finally:
        _stop_jobs(head)
        proc.terminate()  # Ray drains the node and stops its processes
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _stop_jobs(head: RayHead) -> None:
    """Stop every job still running, so the head drains at once."""
    try:
        for job in head.jobs():
            if job.get("status") in ("PENDING", "RUNNING"):
                url = f"{head.address}/api/jobs/{job['submission_id']}/stop"
                requests.post(url, timeout=10)
    except requests.RequestException:
        pass


def _api_up(address: str) -> bool:
    try:
        return requests.get(address + "/api/version", timeout=2).ok
    except requests.RequestException:
        return False
