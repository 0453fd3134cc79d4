"""Fixtures for the NVML tests: the fake library (built once per session) and, with -m gpu,
a real GPU.

Tests parametrised over `backend` run against the fake everywhere and against a real GPU
when run with `-m gpu` on a host that has one (skipped elsewhere, including CI, which has no
GPU). The fake and a real driver cannot share one process (same SONAME), so the real
backend is skipped in a process that has already loaded the fake: run `-m gpu` on its own.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require
from tests.nvml.fakenvml import FakeGpu, FakeNvmlState, build, load_in_process

_loaded: dict[str, ctypes.CDLL] = {}


@dataclass
class FakeNvml:
    lib_path: Path
    lib: ctypes.CDLL | None
    state: FakeNvmlState

    def calls(self, name: str) -> int:
        assert self.lib is not None
        return int(self.lib.fakeNvmlCallCount(name.encode()))

    def env(self) -> dict[str, str]:
        """Environment for a subprocess that should load the fake."""
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = str(self.lib_path.parent)
        env["FAKE_NVML_STATE"] = str(self.state.path)
        return env


@pytest.fixture(scope="session")
def fake_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    have_cc = shutil.which("gcc") is not None or shutil.which("cc") is not None
    require("a C compiler (gcc)", have_cc, "apt-get install gcc libc6-dev")
    return build(tmp_path_factory.mktemp("fake-nvml"))


def _load_fake(lib_path: Path) -> ctypes.CDLL:
    if "fake" not in _loaded:
        if "real" in _loaded:
            pytest.skip("a real NVML is loaded in this process; run the fake tests separately")
        _loaded["fake"] = load_in_process(lib_path)
    return _loaded["fake"]


def default_gpus(n: int = 2) -> list[FakeGpu]:
    return [FakeGpu(demand_w=400.0 - 50 * i) for i in range(n)]


@pytest.fixture
def fake_nvml(
    fake_lib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeNvml]:
    """The fake loaded in this process, with two H100-like GPUs and a frozen clock."""
    lib = _load_fake(fake_lib)
    lib.fakeNvmlReset()  # each test starts as a fresh process would: NVML not initialised
    state = FakeNvmlState(tmp_path / "nvml-state", default_gpus())
    monkeypatch.setenv("FAKE_NVML_STATE", str(state.path))
    yield FakeNvml(fake_lib, lib, state)


@pytest.fixture
def fake_nvml_files(fake_lib: Path, tmp_path: Path) -> FakeNvml:
    """The fake for subprocesses only (not loaded here); follows the wall clock."""
    state = FakeNvmlState(tmp_path / "nvml-state", default_gpus(), clock_s=None)
    return FakeNvml(fake_lib, None, state)


@functools.cache
def real_gpu_present() -> bool:
    """A real NVML that initialises and sees a GPU (probed in a child process, so this
    process can still load the fake)."""
    code = (
        "import ctypes, sys\n"
        "lib = ctypes.CDLL('libnvidia-ml.so.1')\n"
        "n = ctypes.c_uint(0)\n"
        "ok = lib.nvmlInitWithFlags(0) == 0 and lib.nvmlDeviceGetCount_v2(ctypes.byref(n)) == 0\n"
        "sys.exit(0 if ok and n.value > 0 else 1)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "FAKE_NVML_STATE"}
    try:
        probe = subprocess.run([sys.executable, "-c", code], env=env, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.gpu)])
def backend(request: pytest.FixtureRequest) -> str:
    """'fake' (the fake library, loaded in-process) or 'real' (this host's GPU, with -m gpu)."""
    if request.param == "real":
        if not real_gpu_present():
            pytest.skip("no NVIDIA GPU and driver on this host")
        if "fake" in _loaded:
            pytest.skip("the fake NVML is loaded in this process; run `pytest -m gpu` alone")
        _loaded.setdefault("real", ctypes.CDLL("libnvidia-ml.so.1", mode=ctypes.RTLD_GLOBAL))
        return "real"
    request.getfixturevalue("fake_nvml")
    return "fake"
