"""Shared test helpers.

Tests that need an external component (Slurm, Prometheus, Ray, a C compiler for
the fake NVML, Docker) call `require(name, available, hint)`. On a laptop a missing component
skips the test; in CI (`GRIDSHIFT_REQUIRE_COMPONENTS=1`, set by .ci/run) it fails it, so a
missing install can never pass silently.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_CARBON = REPO_ROOT.parent / "shared" / "data" / "carbon"


def components_required() -> bool:
    return os.environ.get("GRIDSHIFT_REQUIRE_COMPONENTS", "") not in ("", "0", "false", "no")


def require(name: str, available: bool, hint: str = "") -> None:
    """Skip (laptop) or fail (CI) when a component the test needs is missing."""
    if available:
        return
    message = f"{name} is not available" + (f": {hint}" if hint else "")
    if components_required():
        pytest.fail(message + " (GRIDSHIFT_REQUIRE_COMPONENTS is set, so this is a failure)")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def agents() -> Iterator[list[Any]]:
    """In-process agents a test appends to; each is stopped at the end."""
    made: list[Any] = []
    yield made
    for agent in made:
        agent.stop()


@pytest.fixture
def shared_carbon() -> Path:
    """The real carbon traces beside the repository (../shared/data/carbon)."""
    require("shared carbon traces", SHARED_CARBON.is_dir(), f"expected at {SHARED_CARBON}")
    return SHARED_CARBON


def wait_for(predicate: Callable[[], Any], timeout_s: float = 30.0, what: str = "") -> Any:
    """Poll until `predicate()` is truthy (a real engine acts on its own time); its value."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what or predicate}: {last!r}")


def write_trace(path: Path, start: datetime, first_hours: Sequence[float], then: float) -> Path:
    """An hourly two-column trace over two weeks from `start`: `first_hours`, then `then`."""
    lines = ["time,intensity"]
    for h in range(14 * 24):
        value = first_hours[h] if h < len(first_hours) else then
        lines.append(f"{(start + timedelta(hours=h)):%Y-%m-%dT%H:%M:%S}+0000,{value}")
    path.write_text("\n".join(lines) + "\n")
    return path
