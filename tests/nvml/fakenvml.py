"""Build and drive the fake NVML library (fake_nvml.c) from tests.

The library is built once per session into a temporary directory. In-process tests load it
with ctypes.CDLL(abs path, RTLD_GLOBAL) before the first nvmlInit, so the unmodified pynvml
binding (which dlopens "libnvidia-ml.so.1") finds it; subprocesses get LD_LIBRARY_PATH.
"""

from __future__ import annotations

import ctypes
import math
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).with_name("fake_nvml.c")
LIBNAME = "libnvidia-ml.so.1"


def build(outdir: Path) -> Path:
    """Compile fake_nvml.c into outdir/libnvidia-ml.so.1 and return its path."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise FileNotFoundError("no C compiler (gcc) on PATH")
    lib = outdir / LIBNAME
    subprocess.run(
        [
            gcc,
            "-shared",
            "-fPIC",
            "-O2",
            "-Wall",
            "-Werror",
            "-Wl,-soname," + LIBNAME,
            "-o",
            str(lib),
            str(SOURCE),
            "-lpthread",
            "-lm",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return lib


def load_in_process(lib: Path) -> ctypes.CDLL:
    """Load the fake so pynvml's dlopen("libnvidia-ml.so.1") reuses it (same SONAME)."""
    handle = ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
    handle.fakeNvmlCallCount.restype = ctypes.c_ulonglong
    handle.fakeNvmlCallCount.argtypes = [ctypes.c_char_p]
    return handle


@dataclass
class FakeGpu:
    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = ""
    demand_w: float = 400.0
    ripple_w: float = 0.0
    ripple_period_s: float = 7.0
    power_limit_w: float = 700.0
    default_limit_w: float = 700.0
    min_limit_w: float = 200.0
    max_limit_w: float = 700.0
    util_gpu: int = 90
    util_mem: int = 40
    mem_total: int = 80 * 2**30
    mem_used: int = 10 * 2**30
    procs: dict[int, int] = field(default_factory=dict)
    mig: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class FakeNvmlState:
    """The fake's state file. Times are unix seconds on the fake's clock (`clock_s`).

    The fake's clock is frozen at `clock_s` when it is set (deterministic tests); with
    `clock_s=None` the fake follows the wall clock (subprocess tests, benchmarks).
    """

    def __init__(self, path: Path, gpus: list[FakeGpu], clock_s: float | None = 1.7e9) -> None:
        self.path = path
        self.gpus = gpus
        for i, gpu in enumerate(gpus):
            gpu.uuid = gpu.uuid or f"GPU-{i:08x}-0000-4000-8000-{i:012x}"
        self.clock_s = clock_s
        self.top: dict[str, Any] = {}
        self._energy_mj = [0.0] * len(gpus)
        self._energy_ts = [self._now()] * len(gpus)
        self.write()

    def _now(self) -> float:
        return self.clock_s if self.clock_s is not None else time.time()

    # -- the fake's model, mirrored, to rebase the counter when a load changes -------------

    def energy_mj(self, i: int, at: float | None = None) -> float:
        t = self._now() if at is None else at
        g = self.gpus[i]
        t0 = self._energy_ts[i]
        base = min(g.demand_w, g.power_limit_w) * 1000
        e = self._energy_mj[i] + base * (t - t0)
        if g.ripple_w:
            w = 2 * math.pi / g.ripple_period_s
            e += g.ripple_w * 1000 / w * (math.cos(w * t0) - math.cos(w * t))
        return e

    def read_back(self) -> dict[str, str]:
        """The file as the fake last wrote it (it writes limits and rebased counters)."""
        out = {}
        for line in self.path.read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                key, _, value = line.partition("=")
                out[key] = value
        return out

    def sync_from_file(self) -> None:
        """Adopt limits and counter bases that the library wrote back."""
        kv = self.read_back()
        for i, g in enumerate(self.gpus):
            if f"gpu{i}.power_limit_mw" in kv:
                g.power_limit_w = float(kv[f"gpu{i}.power_limit_mw"]) / 1000
            if f"gpu{i}.energy_mj" in kv:
                self._energy_mj[i] = float(kv[f"gpu{i}.energy_mj"])
            if f"gpu{i}.energy_ts" in kv:
                self._energy_ts[i] = float(kv[f"gpu{i}.energy_ts"])

    def change(self, i: int, **fields: Any) -> None:
        """Change a device (load, limits, error injection) keeping its counter continuous."""
        self.sync_from_file()
        now = self._now()
        self._energy_mj[i] = self.energy_mj(i, now)
        self._energy_ts[i] = now
        g = self.gpus[i]
        for key, value in fields.items():
            if hasattr(g, key) and key != "extra":
                setattr(g, key, value)
            else:
                g.extra[key] = value
        self.write()

    def advance(self, seconds: float) -> None:
        assert self.clock_s is not None, "advance() needs a frozen fake clock"
        self.sync_from_file()
        self.clock_s += seconds
        self.write()

    def write(self) -> None:
        lines = [f"device_count={len(self.gpus)}"]
        if self.clock_s is not None:
            lines.append(f"clock_s={self.clock_s:.6f}")
        lines += [f"{k}={v}" for k, v in self.top.items()]
        for i, g in enumerate(self.gpus):
            p = f"gpu{i}."
            lines += [
                f"{p}name={g.name}",
                f"{p}uuid={g.uuid}",
                f"{p}demand_mw={g.demand_w * 1000:.0f}",
                f"{p}ripple_mw={g.ripple_w * 1000:.0f}",
                f"{p}ripple_period_s={g.ripple_period_s}",
                f"{p}power_limit_mw={g.power_limit_w * 1000:.0f}",
                f"{p}default_limit_mw={g.default_limit_w * 1000:.0f}",
                f"{p}min_limit_mw={g.min_limit_w * 1000:.0f}",
                f"{p}max_limit_mw={g.max_limit_w * 1000:.0f}",
                f"{p}energy_mj={self._energy_mj[i]:.3f}",
                f"{p}energy_ts={self._energy_ts[i]:.6f}",
                f"{p}util_gpu={g.util_gpu}",
                f"{p}util_mem={g.util_mem}",
                f"{p}mem_total={g.mem_total}",
                f"{p}mem_used={g.mem_used}",
                f"{p}mig={g.mig}",
                f"{p}procs=" + ",".join(f"{pid}:{mem}" for pid, mem in g.procs.items()),
            ]
            lines += [f"{p}{k}={v}" for k, v in g.extra.items()]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, self.path)
