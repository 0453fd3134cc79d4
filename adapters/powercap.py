"""The NVML power-cap actuator: sets GPU power limits and always puts them back.

- Before it first changes a device, it records the limit in force (and NVML's default) in
  `<state_dir>/gpu-power-defaults.json`, written atomically (temp file, fsync, rename) and
  durably *before* the change, keyed by GPU UUID (indices can change across reboots).
- `restore_defaults(reason)` sets every recorded device back and forgets it. The agent calls
  it at start-up (so a crash or SIGKILL after a cap is repaired by the next start), at
  shutdown, and when the carbon signal is lost.
- Limits are clamped to the device's [min, max]; changes to one device are at most one per
  `min_change_interval_s` (going back to the default is never delayed).
- Dry run (`nvml.dry_run`): logs what it would do and changes nothing.
- Without permission (NVML_ERROR_NO_PERMISSION) it says so once, clearly, stops trying, and
  the agent goes on measuring.

Registered under the entry-point group "gridshift.actuators" as `powercap`.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from gridshift.scheduler.clock import Clock
from gridshift.scheduler.config import Settings
from gridshift.scheduler.errors import GridshiftError, TelemetryError
from gridshift.scheduler.telemetry.nvml import (
    GpuLost,
    NvmlPermissionDenied,
    NvmlTelemetry,
    NvmlUnavailable,
)

log = logging.getLogger(__name__)

DEFAULTS_FILE = "gpu-power-defaults.json"
_TOLERANCE_W = 1.0


class NvmlPowerCapper:
    """PowerCapper over NVML. Thread-safe. Does no I/O until first used."""

    def __init__(
        self,
        telemetry: NvmlTelemetry,
        state_dir: Path,
        clock: Clock,
        *,
        enabled: bool = True,
        dry_run: bool = False,
        min_change_interval_s: float = 300.0,
    ) -> None:
        self.telemetry = telemetry
        self.path = Path(state_dir) / DEFAULTS_FILE
        self.clock = clock
        self.enabled = enabled
        self.dry_run = dry_run
        self.min_change_interval_s = min_change_interval_s
        self.permission_denied = False
        self._last_change: dict[int, datetime] = {}
        self._lock = threading.RLock()

    # -- the durable record ----------------------------------------------------------------

    def recorded(self) -> dict[str, dict[str, Any]]:
        """UUID -> {index, restore_w, nvml_default_w, recorded_at} of devices changed."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise TelemetryError(
                f"the record of GPU default power limits at {self.path} is unreadable ({exc}); "
                "restore limits by hand (nvidia-smi -pl) and delete the file"
            ) from exc
        devices = data.get("devices", {}) if isinstance(data, dict) else {}
        return devices if isinstance(devices, dict) else {}

    def _write(self, devices: dict[str, dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not devices:
            self.path.unlink(missing_ok=True)
            _fsync_dir(self.path.parent)
            return
        body = json.dumps({"version": 1, "devices": devices}, indent=2, sort_keys=True)
        fd, tmp = tempfile.mkstemp(prefix=".gpu-power-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(self.path.parent)

    # -- PowerCapper -----------------------------------------------------------------------

    def set_limit(self, index: int, limit_w: float, reason: str) -> float:
        """Set a device's limit (clamped); returns the limit in force afterwards."""
        with self._lock:
            limits = self.telemetry.limits(index)
            if limits is None:
                raise TelemetryError(
                    f"GPU {index} does not report power limits, so it cannot be capped"
                )
            target = min(max(limit_w, limits.min_w), limits.max_w)
            if abs(target - limits.current_w) < _TOLERANCE_W:
                return limits.current_w
            dev = next(d for d in self.telemetry.devices() if d.index == index)
            record = self.recorded()
            restore_w = record.get(dev.uuid, {}).get("restore_w", limits.current_w)
            going_back = abs(target - float(restore_w)) < _TOLERANCE_W
            if not self.enabled and not going_back:
                return limits.current_w
            if self.permission_denied:
                return limits.current_w
            now = self.clock.now()
            last = self._last_change.get(index)
            if (
                not going_back
                and last is not None
                and (now - last).total_seconds() < self.min_change_interval_s
            ):
                log.debug("GPU %d: limit change to %.0f W deferred (rate limit)", index, target)
                return limits.current_w
            if self.dry_run:
                log.info(
                    "dry run: would set GPU %d (%s) power limit %.0f W -> %.0f W (%s)",
                    index,
                    dev.uuid,
                    limits.current_w,
                    target,
                    reason,
                )
                self._last_change[index] = now
                return limits.current_w
            if dev.uuid not in record:
                record[dev.uuid] = {
                    "index": index,
                    "restore_w": limits.current_w,
                    "nvml_default_w": limits.default_w,
                    "recorded_at": now.isoformat(),
                }
                self._write(record)  # durable before the change
            try:
                self.telemetry.set_power_limit_w(index, target)
            except NvmlPermissionDenied as exc:
                self.permission_denied = True
                log.warning(
                    "GPU power capping is OFF: %s. gridshift keeps measuring power and energy.",
                    exc,
                )
                self._forget_if_unchanged(dev.uuid, record, limits.current_w)
                return limits.current_w
            self._last_change[index] = now
            log.info(
                "GPU %d (%s) power limit %.0f W -> %.0f W (%s)",
                index,
                dev.uuid,
                limits.current_w,
                target,
                reason,
            )
            if going_back:
                record.pop(dev.uuid, None)
                self._write(record)
            return target

    def _forget_if_unchanged(
        self, uuid: str, record: dict[str, dict[str, Any]], current_w: float
    ) -> None:
        entry = record.get(uuid)
        if entry is not None and abs(float(entry["restore_w"]) - current_w) < _TOLERANCE_W:
            record.pop(uuid)
            self._write(record)

    def restore(self, index: int, reason: str) -> bool:
        """Put one device back to the limit recorded before gridshift changed it. Returns
        whether a limit was changed (False: gridshift had not changed this device)."""
        with self._lock:
            dev = next((d for d in self.telemetry.devices() if d.index == index), None)
            if dev is None:
                return False
            entry = self.recorded().get(dev.uuid)
            if entry is None:
                return False
            restore_w = float(entry["restore_w"])
            applied = self.set_limit(index, restore_w, reason)
            return abs(applied - restore_w) < _TOLERANCE_W

    def restore_defaults(self, reason: str) -> None:
        """Put every device gridshift changed back to its recorded limit; forget it."""
        with self._lock:
            record = self.recorded()
            if not record:
                return
            if self.dry_run:
                log.info("dry run: would restore GPU power limits (%s)", reason)
                return
            try:
                by_uuid = {d.uuid: d for d in self.telemetry.devices(refresh=True)}
            except NvmlUnavailable as exc:
                log.error("cannot restore GPU power limits now (%s); will retry", exc)
                return
            failed: list[str] = []
            for uuid, entry in list(record.items()):
                dev = by_uuid.get(uuid)
                if dev is None:
                    failed.append(f"GPU {uuid}: not present (lost or removed)")
                    continue
                restore_w = float(entry["restore_w"])
                try:
                    limits = self.telemetry.limits(dev.index)
                    if limits is not None and abs(limits.current_w - restore_w) >= _TOLERANCE_W:
                        self.telemetry.set_power_limit_w(dev.index, restore_w)
                        log.info(
                            "GPU %d (%s) power limit restored to %.0f W (%s)",
                            dev.index,
                            uuid,
                            restore_w,
                            reason,
                        )
                except (GpuLost, NvmlPermissionDenied, TelemetryError) as exc:
                    failed.append(f"GPU {dev.index}: {exc}")
                    continue
                record.pop(uuid)
                self._last_change.pop(dev.index, None)
            self._write(record)
            if failed:
                raise TelemetryError(
                    "could not restore the power limit of "
                    + "; ".join(failed)
                    + ". It stays on record and is retried at the next restore."
                )


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def build(settings: Settings, clock: Clock) -> NvmlPowerCapper | None:
    """The actuator, if NVML is enabled and capping is on (or earlier caps await restoring)."""
    cfg = settings.nvml
    if not cfg.enabled:
        return None
    capper = NvmlPowerCapper(
        NvmlTelemetry(clock),
        settings.state_dir,
        clock,
        enabled=cfg.capping,
        dry_run=cfg.dry_run,
        min_change_interval_s=cfg.min_change_interval_s,
    )
    if not cfg.capping:
        try:
            pending = bool(capper.recorded())
        except GridshiftError:
            pending = True
        if not pending:
            return None
    return capper
