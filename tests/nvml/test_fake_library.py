"""The fake NVML library itself, through the unmodified pynvml binding."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import threading
from pathlib import Path

import pynvml
import pytest

from tests.conftest import require
from tests.nvml.conftest import FakeNvml
from tests.nvml.fakenvml import SOURCE


def _nvml_header_dir() -> str | None:
    for base in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        hits = sorted(glob.glob(os.path.join(base, "nvidia", "*", "include", "nvml.h")))
        if hits:
            return os.path.dirname(hits[-1])
    return os.environ.get("NVML_HEADER_DIR")


def test_prototypes_match_nvidias_header(tmp_path: Path) -> None:
    """Every exported function has the prototype of the real nvml.h (header not in the repo)."""
    gcc = shutil.which("gcc")
    require("a C compiler (gcc)", gcc is not None, "apt-get install gcc libc6-dev")
    include = _nvml_header_dir()
    require(
        "NVIDIA's nvml.h",
        include is not None,
        "pip install nvidia-nvml-dev (header only; never commit it)",
    )
    assert gcc is not None and include is not None
    out = subprocess.run(
        [
            gcc,
            "-fsyntax-only",
            "-Wall",
            "-Werror",
            "-DFAKE_NVML_REAL_HEADER",
            "-I",
            include,
            str(SOURCE),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr


def test_binding_reads_the_state_file(fake_nvml: FakeNvml) -> None:
    pynvml.nvmlInit()
    try:
        assert pynvml.nvmlDeviceGetCount() == 2
        h = pynvml.nvmlDeviceGetHandleByIndex(1)
        assert pynvml.nvmlDeviceGetIndex(h) == 1
        uuid = pynvml.nvmlDeviceGetUUID(h)
        assert uuid == "GPU-00000001-0000-4000-8000-000000000001"
        assert pynvml.nvmlDeviceGetIndex(pynvml.nvmlDeviceGetHandleByUUID(uuid)) == 1
        assert pynvml.nvmlDeviceGetName(h) == "NVIDIA H100 80GB HBM3"
        assert pynvml.nvmlDeviceGetPowerUsage(h) == 350_000  # mW
        assert pynvml.nvmlDeviceGetPowerManagementLimitConstraints(h) == [200_000, 700_000]
        assert pynvml.nvmlDeviceGetPowerManagementDefaultLimit(h) == 700_000
        assert pynvml.nvmlDeviceGetEnforcedPowerLimit(h) == 700_000
        mem = pynvml.nvmlDeviceGetMemoryInfo(h)
        assert mem.total == 80 * 2**30 and mem.used + mem.free == mem.total
        assert pynvml.nvmlDeviceGetMigMode(h) == [0, 0]
        values = pynvml.nvmlDeviceGetFieldValues(
            h,
            [
                pynvml.NVML_FI_DEV_POWER_INSTANT,
                pynvml.NVML_FI_DEV_POWER_AVERAGE,
                pynvml.NVML_FI_DEV_POWER_CURRENT_LIMIT,
                pynvml.NVML_FI_DEV_ENERGY,
                pynvml.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION
                if hasattr(pynvml, "NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION")
                else 9999,
            ],
        )
        assert [v.nvmlReturn for v in values[:4]] == [0, 0, 0, 0]
        assert [v.value.uiVal for v in values[:3]] == [350_000, 350_000, 700_000]
        assert values[4].nvmlReturn == pynvml.NVML_ERROR_NOT_SUPPORTED
        assert pynvml.nvmlSystemGetDriverVersion()
    finally:
        pynvml.nvmlShutdown()


def test_set_limit_checks_range_and_writes_back(fake_nvml: FakeNvml) -> None:
    pynvml.nvmlInit()
    try:
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        pynvml.nvmlDeviceSetPowerManagementLimit(h, 300_000)
        assert pynvml.nvmlDeviceGetPowerManagementLimit(h) == 300_000
        assert pynvml.nvmlDeviceGetPowerUsage(h) == 300_000  # power follows the cap (400 W load)
        assert fake_nvml.state.read_back()["gpu0.power_limit_mw"] == "300000"
        with pytest.raises(pynvml.NVMLError_InvalidArgument):
            pynvml.nvmlDeviceSetPowerManagementLimit(h, 100_000)
        with pytest.raises(pynvml.NVMLError_InvalidArgument):
            pynvml.nvmlDeviceSetPowerManagementLimit(h, 900_000)
        fake_nvml.state.change(0, set_limit_rc=4)
        with pytest.raises(pynvml.NVMLError_NoPermission):
            pynvml.nvmlDeviceSetPowerManagementLimit(h, 500_000)
        fake_nvml.state.change(0, lost=1)
        with pytest.raises(pynvml.NVMLError_GpuIsLost):
            pynvml.nvmlDeviceGetPowerUsage(h)
    finally:
        pynvml.nvmlShutdown()


def test_energy_counter_continuous_across_a_cap(fake_nvml: FakeNvml) -> None:
    pynvml.nvmlInit()
    try:
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        e0 = pynvml.nvmlDeviceGetTotalEnergyConsumption(h)
        fake_nvml.state.advance(10)  # 10 s at 400 W
        pynvml.nvmlDeviceSetPowerManagementLimit(h, 250_000)
        fake_nvml.state.sync_from_file()
        fake_nvml.state.advance(10)  # 10 s at the 250 W cap
        e1 = pynvml.nvmlDeviceGetTotalEnergyConsumption(h)
        assert e1 - e0 == 4_000_000 + 2_500_000  # mJ
    finally:
        pynvml.nvmlShutdown()


def test_process_list_two_call_protocol(fake_nvml: FakeNvml) -> None:
    fake_nvml.state.change(1, procs={11: 100, 22: 200, 33: 300})
    pynvml.nvmlInit()
    try:
        h = pynvml.nvmlDeviceGetHandleByIndex(1)
        procs = pynvml.nvmlDeviceGetComputeRunningProcesses(h)
        assert [(p.pid, p.usedGpuMemory) for p in procs] == [(11, 100), (22, 200), (33, 300)]
        assert (
            pynvml.nvmlDeviceGetComputeRunningProcesses(pynvml.nvmlDeviceGetHandleByIndex(0)) == []
        )
    finally:
        pynvml.nvmlShutdown()


def test_uninitialised_and_no_driver(fake_nvml: FakeNvml, tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        pynvml.nvmlDeviceGetCount()
    monkeypatch.setenv("FAKE_NVML_STATE", str(tmp_path / "missing"))
    with pytest.raises(pynvml.NVMLError_DriverNotLoaded):
        pynvml.nvmlInit()


def test_library_is_thread_safe(fake_nvml: FakeNvml) -> None:
    """Raw binding calls from several threads while the state file keeps changing."""
    pynvml.nvmlInit()
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(2)]
            while not stop.is_set():
                for h in handles:
                    assert pynvml.nvmlDeviceGetUUID(h).startswith("GPU-")
                    assert pynvml.nvmlDeviceGetPowerUsage(h) >= 300_000
                    pynvml.nvmlDeviceGetTotalEnergyConsumption(h)
        except BaseException as exc:
            errors.append(exc)

    def capper() -> None:
        try:
            h = pynvml.nvmlDeviceGetHandleByIndex(0)
            for i in range(100):
                pynvml.nvmlDeviceSetPowerManagementLimit(h, 300_000 + (i % 2) * 100_000)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    threads.append(threading.Thread(target=capper))
    try:
        for th in threads:
            th.start()
        threads[-1].join()
        stop.set()
        for th in threads:
            th.join()
    finally:
        pynvml.nvmlShutdown()
    assert not errors, errors[0]


def test_subprocess_finds_the_fake_through_ld_library_path(fake_nvml_files: FakeNvml) -> None:
    code = "import pynvml; pynvml.nvmlInit(); print(pynvml.nvmlDeviceGetCount())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=fake_nvml_files.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2"
