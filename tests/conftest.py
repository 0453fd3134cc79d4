"""Shared test helpers.

Tests that need an external component (Slurm, Prometheus, Ray, a C compiler for
the fake NVML, Docker) call `require(name, available, hint)`. On a laptop a missing component
skips the test; in CI (`GRIDSHIFT_REQUIRE_COMPONENTS=1`, set by .ci/run) it fails it, so a
missing install can never pass silently.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

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
def shared_carbon() -> Path:
    """The real carbon traces beside the repository (../shared/data/carbon)."""
    require("shared carbon traces", SHARED_CARBON.is_dir(), f"expected at {SHARED_CARBON}")
    return SHARED_CARBON
