"""GPU telemetry through NVML (the `pynvml` module of NVIDIA's nvidia-ml-py distribution).

`NvmlTelemetry` is the agent's `PowerSource`. It initialises NVML lazily, on first use
(never in the constructor), caches device handles and the static facts of each device
(name, UUID, MIG mode, limit constraints, which readings the driver supports), and keeps
`sample()` cheap: per device one field-value call (instant power, 1 s average power and the
current limit) and the utilisation, about 10 us each on an H100 (driver 580). Reading the
energy counter cost about 4 ms of CPU there (as the field NVML_FI_DEV_ENERGY or through
nvmlDeviceGetTotalEnergyConsumption alike), so it is read only every `energy_every_s`
(default 10 s; 0: every sample), in the same field-value call, with the classic call as the
fallback. Samples in between carry `energy_j=None`; the attribution integrates power over
them and corrects the total to the counter at the next reading. Process lists are read only
by `processes()`, off the hot path.

Units: NVML speaks milliwatts and millijoules; everything leaving this module is in watts
and joules.

Power readings: on Ampere (except GA100) and newer, `nvmlDeviceGetPowerUsage` is a one-second
average; on A100 and older it is an instant reading. Where the driver supports the field
values NVML_FI_DEV_POWER_INSTANT / NVML_FI_DEV_POWER_AVERAGE, both are read explicitly:
`PowerSample.power_w` is the instant value and `power_avg_w` the one-second average. Where
not, `power_w` is whatever `nvmlDeviceGetPowerUsage` returns and `power_avg_w` is None.

Every NVML error goes through one table, `NVML_ERRORS`, which says which gridshift error it
becomes and what the agent does about it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from types import ModuleType
from typing import Any

from ..clock import Clock
from ..errors import TelemetryError
from ..models import PowerSample

log = logging.getLogger(__name__)

# NVML field ids (nvml.h); pynvml has the same constants, but the module is imported lazily.
FI_POWER_AVERAGE = 185
FI_POWER_INSTANT = 186
FI_POWER_CURRENT_LIMIT = 190
FI_ENERGY = 191  # total energy since the driver loaded, mJ (same as the counter call)
_POWER_FIELDS = (FI_POWER_INSTANT, FI_POWER_AVERAGE, FI_POWER_CURRENT_LIMIT)
_POWER_AND_ENERGY_FIELDS = (*_POWER_FIELDS, FI_ENERGY)

NVML_SUCCESS = 0
NVML_ERROR_NOT_SUPPORTED = 3


# --------------------------------------------------------------------------------------------
# Errors


class NvmlUnavailable(TelemetryError):
    """No NVIDIA driver or NVML library on this host: telemetry is off."""


class NvmlPermissionDenied(TelemetryError):
    """NVML refused an operation for lack of privileges (setting power limits)."""


class NvmlNotSupported(TelemetryError):
    """The device or driver does not support this reading or operation."""


class GpuLost(TelemetryError):
    """The GPU fell off the bus or needs a reset."""


@dataclass(frozen=True)
class NvmlErrorRule:
    error: type[TelemetryError]
    behaviour: str
    hint: str


# One table from NVML's error classes (by pynvml's class name) to gridshift's errors and the
# agent's behaviour. Anything not listed becomes a plain TelemetryError.
NVML_ERRORS: dict[str, NvmlErrorRule] = {
    "NVMLError_LibraryNotFound": NvmlErrorRule(
        NvmlUnavailable,
        "telemetry off",
        "libnvidia-ml.so.1 was not found; install the NVIDIA driver, or set nvml.enabled=false",
    ),
    "NVMLError_DriverNotLoaded": NvmlErrorRule(
        NvmlUnavailable,
        "telemetry off",
        "the NVIDIA kernel driver is not loaded; load it (nvidia-smi should work) or set "
        "nvml.enabled=false",
    ),
    "NVMLError_LibRmVersionMismatch": NvmlErrorRule(
        NvmlUnavailable,
        "telemetry off",
        "the NVML library and the kernel driver differ in version; reboot or reinstall the driver",
    ),
    "NVMLError_FunctionNotFound": NvmlErrorRule(
        NvmlNotSupported,
        "reading skipped",
        "this driver's NVML lacks the function; upgrade the driver for this reading",
    ),
    "NVMLError_NotSupported": NvmlErrorRule(
        NvmlNotSupported,
        "reading skipped (remembered per device)",
        "the device does not support this reading; it is left empty",
    ),
    "NVMLError_NoPermission": NvmlErrorRule(
        NvmlPermissionDenied,
        "capping off, measuring continues",
        "setting GPU power limits needs root or CAP_SYS_ADMIN; run the agent with that "
        "privilege or set nvml.capping=false",
    ),
    "NVMLError_GpuIsLost": NvmlErrorRule(
        GpuLost,
        "device skipped until it comes back",
        "the GPU fell off the bus; check `nvidia-smi` and the kernel log (Xid errors)",
    ),
    "NVMLError_ResetRequired": NvmlErrorRule(
        GpuLost,
        "device skipped until it comes back",
        "the GPU needs a reset (nvidia-smi --gpu-reset)",
    ),
    "NVMLError_Uninitialized": NvmlErrorRule(
        TelemetryError, "re-initialise on next call", "NVML was shut down; it is re-initialised"
    ),
    "NVMLError_InvalidArgument": NvmlErrorRule(
        TelemetryError,
        "operation refused",
        "the value is outside what the device accepts (e.g. a power limit out of range)",
    ),
}


def translate(exc: BaseException, what: str) -> TelemetryError:
    """Turn a pynvml NVMLError into the gridshift error of the table above."""
    name = type(exc).__name__
    rule = NVML_ERRORS.get(name)
    text = str(exc) or name
    if rule is None:
        return TelemetryError(f"NVML failed to {what}: {text}; check `nvidia-smi` on this host")
    return rule.error(f"NVML failed to {what}: {text}; {rule.hint}")


# --------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class PowerLimits:
    current_w: float
    default_w: float
    min_w: float
    max_w: float


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    used_memory_bytes: int | None


@dataclass
class GpuDevice:
    index: int
    uuid: str
    name: str
    mig_enabled: bool | None
    limits: PowerLimits | None
    memory_total_bytes: int | None = None
    memory_used_bytes: int | None = None
    energy_supported: bool = True
    fields_supported: bool = True
    lost: bool = False


@dataclass
class _Device:
    handle: Any
    info: GpuDevice
    energy_read_at: datetime | None = None


# --------------------------------------------------------------------------------------------


class NvmlTelemetry:
    """Reads GPUs through NVML. Thread-safe; `sample()` is cheap enough for 1 Hz on 8 GPUs.

    Raises `NvmlUnavailable` (a TelemetryError) from any method when this host has no
    driver; the caller says "telemetry off" once and carries on.
    """

    def __init__(
        self, clock: Clock, nvml: ModuleType | None = None, *, energy_every_s: float = 10.0
    ) -> None:
        self.clock = clock
        self.energy_every_s = energy_every_s
        self._nvml = nvml
        self._lock = threading.RLock()
        self._initialised = False
        self._devices: list[_Device] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def _module(self) -> ModuleType:
        if self._nvml is None:
            try:
                import pynvml
            except ImportError as exc:  # pragma: no cover - a dependency of gridshift
                raise NvmlUnavailable(
                    "the pynvml module is missing; install nvidia-ml-py (a gridshift dependency)"
                ) from exc
            self._nvml = pynvml
        return self._nvml

    def _ensure(self) -> ModuleType:
        nv = self._module()
        if not self._initialised:
            try:
                nv.nvmlInit()
            except nv.NVMLError as exc:
                raise translate(exc, "initialise") from None
            self._initialised = True
            self._devices = None
        return nv

    def close(self) -> None:
        """Shut NVML down (idempotent). Later calls initialise it again."""
        with self._lock:
            if self._initialised and self._nvml is not None:
                try:
                    self._nvml.nvmlShutdown()
                except self._nvml.NVMLError as exc:
                    log.debug("nvmlShutdown failed: %s", exc)
            self._initialised = False
            self._devices = None

    @property
    def initialised(self) -> bool:
        return self._initialised

    # -- devices ---------------------------------------------------------------------------

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        nv = self._module()
        try:
            return fn(*args)
        except nv.NVMLError as exc:
            if type(exc).__name__ == "NVMLError_Uninitialized":
                self._initialised = False
                self._devices = None
            raise translate(exc, what) from None

    def _optional(self, what: str, fn: Any, *args: Any) -> Any:
        """Call; NOT_SUPPORTED (or a missing function) gives None instead of an error."""
        try:
            return self._call(what, fn, *args)
        except NvmlNotSupported:
            return None

    def _discover(self) -> list[_Device]:
        nv = self._ensure()
        if self._devices is not None:
            return self._devices
        count = self._call("count devices", nv.nvmlDeviceGetCount)
        found: list[_Device] = []
        for index in range(count):
            try:
                handle = self._call(f"open GPU {index}", nv.nvmlDeviceGetHandleByIndex, index)
                found.append(_Device(handle, self._describe(index, handle)))
            except GpuLost as exc:
                log.warning("GPU %d is lost and left out: %s", index, exc)
        self._devices = found
        return found

    def _describe(self, index: int, handle: Any) -> GpuDevice:
        nv = self._module()
        uuid = _text(self._call(f"read GPU {index} UUID", nv.nvmlDeviceGetUUID, handle))
        name = _text(self._call(f"read GPU {index} name", nv.nvmlDeviceGetName, handle))
        mig = self._optional(f"read GPU {index} MIG mode", nv.nvmlDeviceGetMigMode, handle)
        memory = self._optional(f"read GPU {index} memory", nv.nvmlDeviceGetMemoryInfo, handle)
        return GpuDevice(
            index=index,
            uuid=uuid,
            name=name,
            mig_enabled=bool(mig[0]) if mig is not None else None,
            limits=self._read_limits(index, handle),
            memory_total_bytes=int(memory.total) if memory is not None else None,
            memory_used_bytes=int(memory.used) if memory is not None else None,
        )

    def _read_limits(self, index: int, handle: Any) -> PowerLimits | None:
        nv = self._module()
        current = self._optional(
            f"read GPU {index} power limit", nv.nvmlDeviceGetPowerManagementLimit, handle
        )
        if current is None:
            return None
        default = self._optional(
            f"read GPU {index} default power limit",
            nv.nvmlDeviceGetPowerManagementDefaultLimit,
            handle,
        )
        bounds = self._optional(
            f"read GPU {index} power limit range",
            nv.nvmlDeviceGetPowerManagementLimitConstraints,
            handle,
        )
        default_mw = default if default is not None else current
        min_mw, max_mw = bounds if bounds is not None else (current, current)
        return PowerLimits(current / 1000, default_mw / 1000, min_mw / 1000, max_mw / 1000)

    def devices(self, refresh: bool = False) -> list[GpuDevice]:
        """Every GPU NVML sees, with its static facts (re-read when `refresh`)."""
        with self._lock:
            if refresh:
                self._devices = None
            return [d.info for d in self._discover()]

    def _device(self, index: int) -> _Device:
        for dev in self._discover():
            if dev.info.index == index:
                return dev
        from ..errors import NotFound

        raise NotFound(f"no GPU with index {index}; `gridshift gpus` lists the GPUs NVML sees")

    def limits(self, index: int) -> PowerLimits | None:
        """The device's current, default, min and max power limits (W), read now."""
        with self._lock:
            dev = self._device(index)
            limits = self._read_limits(index, dev.handle)
            dev.info.limits = limits
            return limits

    def processes(self, index: int) -> list[GpuProcess]:
        """Compute processes running on the GPU (slow on real drivers: keep off the hot path)."""
        with self._lock:
            nv = self._ensure()
            dev = self._device(index)
            procs = self._optional(
                f"list processes on GPU {index}",
                nv.nvmlDeviceGetComputeRunningProcesses,
                dev.handle,
            )
            return [GpuProcess(int(p.pid), p.usedGpuMemory) for p in (procs or [])]

    def set_power_limit_w(self, index: int, limit_w: float) -> None:
        """Set the device's power limit. No clamping here: the actuator does that."""
        with self._lock:
            nv = self._ensure()
            dev = self._device(index)
            self._call(
                f"set GPU {index} power limit to {limit_w:.0f} W",
                nv.nvmlDeviceSetPowerManagementLimit,
                dev.handle,
                round(limit_w * 1000),
            )
            if dev.info.limits is not None:
                old = dev.info.limits
                dev.info.limits = PowerLimits(limit_w, old.default_w, old.min_w, old.max_w)

    # -- the hot path ----------------------------------------------------------------------

    def sample(self) -> list[PowerSample]:
        """One reading of every GPU. A lost GPU is left out (and logged once)."""
        with self._lock:
            devs = self._discover()
            now = self.clock.now()
            out: list[PowerSample] = []
            for dev in devs:
                try:
                    out.append(self._sample_one(dev, now))
                    if dev.info.lost:
                        log.warning("GPU %d (%s) is back", dev.info.index, dev.info.uuid)
                        dev.info.lost = False
                except GpuLost as exc:
                    if not dev.info.lost:
                        log.warning("GPU %d (%s) is lost: %s", dev.info.index, dev.info.uuid, exc)
                    dev.info.lost = True
            return out

    def _sample_one(self, dev: _Device, now: datetime) -> PowerSample:
        nv = self._module()
        info, h, i = dev.info, dev.handle, dev.info.index
        instant_w = avg_w = limit_w = energy_j = None
        last = dev.energy_read_at
        want_energy = (
            self.energy_every_s <= 0
            or last is None
            or (now - last).total_seconds() >= 0.95 * self.energy_every_s
        )
        if info.fields_supported:
            fields = _POWER_AND_ENERGY_FIELDS if want_energy else _POWER_FIELDS
            values = self._optional(
                f"read GPU {i} power fields", nv.nvmlDeviceGetFieldValues, h, list(fields)
            )
            if values is None:
                info.fields_supported = False
            else:
                got: dict[int, float] = {}
                for v in values:
                    if v.nvmlReturn == NVML_SUCCESS:
                        got[int(v.fieldId)] = _field_number(v) / 1000  # mW -> W, mJ -> J
                    elif v.nvmlReturn not in (NVML_ERROR_NOT_SUPPORTED,):
                        # A per-field failure such as GPU_IS_LOST: raise it like a call would.
                        raise translate(nv.NVMLError(v.nvmlReturn), f"read GPU {i} power")
                instant_w = got.get(FI_POWER_INSTANT)
                avg_w = got.get(FI_POWER_AVERAGE)
                limit_w = got.get(FI_POWER_CURRENT_LIMIT)
                energy_j = got.get(FI_ENERGY)
                if instant_w is None and avg_w is None:
                    info.fields_supported = False
        if instant_w is None:
            usage = self._call(f"read GPU {i} power", nv.nvmlDeviceGetPowerUsage, h)
            instant_w = usage / 1000
        if want_energy and energy_j is None and info.energy_supported:
            mj = self._optional(
                f"read GPU {i} energy counter", nv.nvmlDeviceGetTotalEnergyConsumption, h
            )
            if mj is None:
                info.energy_supported = False
                log.info("GPU %d has no energy counter; energy is integrated from power", i)
            else:
                energy_j = mj / 1000
        if energy_j is not None:
            dev.energy_read_at = now
        if limit_w is None and info.limits is not None:
            mw = self._optional(
                f"read GPU {i} power limit", nv.nvmlDeviceGetPowerManagementLimit, h
            )
            limit_w = mw / 1000 if mw is not None else None
        util = self._optional(f"read GPU {i} utilisation", nv.nvmlDeviceGetUtilizationRates, h)
        limits = info.limits
        if limits is not None and limit_w is not None and limit_w != limits.current_w:
            info.limits = limits = PowerLimits(
                limit_w, limits.default_w, limits.min_w, limits.max_w
            )
        return PowerSample(
            index=i,
            uuid=info.uuid,
            at=now,
            power_w=instant_w,
            power_avg_w=avg_w,
            energy_j=energy_j,
            power_limit_w=limit_w,
            default_limit_w=limits.default_w if limits else None,
            min_limit_w=limits.min_w if limits else None,
            max_limit_w=limits.max_w if limits else None,
            utilization_pct=float(util.gpu) if util is not None else None,
        )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _field_number(v: Any) -> float:
    """The number in an nvmlFieldValue_t, by its valueType."""
    kind = int(v.valueType)
    union = v.value
    return float(
        {
            0: union.dVal,
            1: union.uiVal,
            2: union.ulVal,
            3: union.ullVal,
            4: union.sllVal,
            5: union.siVal,
            6: union.usVal,
        }.get(kind, union.uiVal)
    )
