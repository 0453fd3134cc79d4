"""The NVML power-cap actuator against the fake NVML (and a real GPU with -m gpu)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gridshift.adapters.powercap import DEFAULTS_FILE, NvmlPowerCapper, build
from gridshift.scheduler.clock import FakeClock
from gridshift.scheduler.config import Settings
from gridshift.scheduler.errors import TelemetryError
from gridshift.scheduler.interfaces import PowerCapper
from gridshift.scheduler.telemetry.nvml import NvmlTelemetry
from tests.nvml.conftest import FakeNvml

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def make(state_dir: Path, **kw) -> tuple[NvmlPowerCapper, FakeClock]:
    clock = FakeClock(T0)
    kw.setdefault("min_change_interval_s", 300.0)
    return NvmlPowerCapper(NvmlTelemetry(clock), state_dir, clock, **kw), clock


def limit_mw(fake: FakeNvml, i: int) -> int:
    return int(fake.state.read_back()[f"gpu{i}.power_limit_mw"])


def test_is_a_power_capper(fake_nvml: FakeNvml, tmp_path: Path) -> None:
    capper, _ = make(tmp_path)
    assert isinstance(capper, PowerCapper)


def test_records_default_durably_before_the_first_change(
    fake_nvml: FakeNvml, tmp_path: Path
) -> None:
    capper, _ = make(tmp_path)
    seen_before_change: list[dict] = []
    real_set = capper.telemetry.set_power_limit_w

    def spy(index: int, limit_w: float) -> None:
        seen_before_change.append(json.loads((tmp_path / DEFAULTS_FILE).read_text()))
        real_set(index, limit_w)

    capper.telemetry.set_power_limit_w = spy  # type: ignore[method-assign]
    applied = capper.set_limit(0, 450.0, "test")
    assert applied == 450.0
    assert limit_mw(fake_nvml, 0) == 450_000
    record = seen_before_change[0]["devices"]
    uuid = "GPU-00000000-0000-4000-8000-000000000000"
    assert record[uuid]["restore_w"] == 700.0
    assert record[uuid]["nvml_default_w"] == 700.0
    assert record[uuid]["index"] == 0
    # no temp files left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == [DEFAULTS_FILE, "nvml-state"]


def test_clamps_to_device_range(fake_nvml: FakeNvml, tmp_path: Path) -> None:
    capper, _ = make(tmp_path, min_change_interval_s=0)
    assert capper.set_limit(0, 50.0, "too low") == 200.0
    assert limit_mw(fake_nvml, 0) == 200_000
    assert capper.set_limit(1, 5000.0, "too high") == 700.0  # already at max: no change


def test_rate_limited_but_restore_is_never_delayed(fake_nvml: FakeNvml, tmp_path: Path) -> None:
    capper, clock = make(tmp_path, min_change_interval_s=300)
    assert capper.set_limit(0, 500.0, "dirty") == 500.0
    clock.advance(60)
    assert capper.set_limit(0, 400.0, "dirtier") == 500.0  # too soon: unchanged
    assert limit_mw(fake_nvml, 0) == 500_000
    assert capper.set_limit(0, 700.0, "clean again") == 700.0  # back to default: at once
    assert not (tmp_path / DEFAULTS_FILE).exists()  # nothing left to restore
    clock.advance(301)
    assert capper.set_limit(0, 400.0, "dirty") == 400.0


def test_restore_defaults_and_restart(fake_nvml: FakeNvml, tmp_path: Path) -> None:
    capper, _ = make(tmp_path)
    capper.set_limit(0, 300.0, "dirty")
    capper.set_limit(1, 350.0, "dirty")
    assert (limit_mw(fake_nvml, 0), limit_mw(fake_nvml, 1)) == (300_000, 350_000)
    # a new agent (after a crash) reads the record and restores
    capper2, _ = make(tmp_path)
    capper2.restore_defaults("start-up")
    assert (limit_mw(fake_nvml, 0), limit_mw(fake_nvml, 1)) == (700_000, 700_000)
    assert not (tmp_path / DEFAULTS_FILE).exists()
    capper2.restore_defaults("again")  # idempotent


def test_restores_the_limit_in_force_not_nvmls_default(fake_nvml: FakeNvml, tmp_path: Path) -> None:
    fake_nvml.state.change(0, power_limit_w=600.0)  # an admin's own limit
    capper, _ = make(tmp_path)
    capper.set_limit(0, 400.0, "dirty")
    capper.restore_defaults("stop")
    assert limit_mw(fake_nvml, 0) == 600_000


def test_lost_gpu_keeps_its_record(fake_nvml: FakeNvml, tmp_path: Path) -> None:
    capper, _ = make(tmp_path)
    capper.set_limit(0, 300.0, "dirty")
    capper.set_limit(1, 300.0, "dirty")
    fake_nvml.state.change(0, lost=1)
    with pytest.raises(TelemetryError, match=r"GPU-00000000-.* not present"):
        capper.restore_defaults("stop")
    assert limit_mw(fake_nvml, 1) == 700_000
    record = json.loads((tmp_path / DEFAULTS_FILE).read_text())["devices"]
    assert list(record) == ["GPU-00000000-0000-4000-8000-000000000000"]
    fake_nvml.state.change(0, lost=0)
    capper.restore_defaults("retry")
    assert limit_mw(fake_nvml, 0) == 700_000
    assert not (tmp_path / DEFAULTS_FILE).exists()


def test_dry_run_changes_nothing(
    fake_nvml: FakeNvml, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    capper, _ = make(tmp_path, dry_run=True)
    with caplog.at_level(logging.INFO, logger="gridshift.adapters.powercap"):
        assert capper.set_limit(0, 400.0, "dirty grid") == 700.0
    assert limit_mw(fake_nvml, 0) == 700_000
    assert not (tmp_path / DEFAULTS_FILE).exists()
    assert "dry run: would set GPU 0" in caplog.text
    assert "700 W -> 400 W (dirty grid)" in caplog.text


def test_no_permission_warns_once_and_keeps_measuring(
    fake_nvml: FakeNvml, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake_nvml.state.change(0, set_limit_rc=4)
    fake_nvml.state.change(1, set_limit_rc=4)
    capper, clock = make(tmp_path, min_change_interval_s=0)
    with caplog.at_level(logging.WARNING, logger="gridshift.adapters.powercap"):
        for i in range(5):
            assert capper.set_limit(i % 2, 400.0, "dirty") == 700.0
            clock.advance(10)
    warnings = [r for r in caplog.records if "capping is OFF" in r.getMessage()]
    assert len(warnings) == 1
    assert "CAP_SYS_ADMIN" in warnings[0].getMessage()
    assert fake_nvml.calls("nvmlDeviceSetPowerManagementLimit") >= 1
    assert not (tmp_path / DEFAULTS_FILE).exists()  # nothing was changed, nothing to restore
    assert len(capper.telemetry.sample()) == 2  # measuring goes on


def test_capping_disabled_only_restores(fake_nvml: FakeNvml, tmp_path: Path) -> None:
    capper, _ = make(tmp_path)
    capper.set_limit(0, 300.0, "dirty")
    off, _ = make(tmp_path, enabled=False)
    assert off.set_limit(1, 300.0, "dirty") == 700.0  # refuses new caps
    off.restore_defaults("start-up")  # but restores old ones
    assert limit_mw(fake_nvml, 0) == 700_000


def test_build_from_settings(fake_nvml: FakeNvml, tmp_path: Path) -> None:
    clock = FakeClock(T0)
    assert build(Settings(state_dir=tmp_path, nvml={"enabled": False}), clock) is None
    assert build(Settings(state_dir=tmp_path), clock) is None  # capping off, nothing pending
    capper = build(Settings(state_dir=tmp_path, nvml={"capping": True, "dry_run": True}), clock)
    assert isinstance(capper, NvmlPowerCapper) and capper.dry_run
    # capping off but an earlier run left caps on record: built, to restore them
    make(tmp_path)[0].set_limit(0, 300.0, "dirty")
    pending = build(Settings(state_dir=tmp_path), clock)
    assert pending is not None and not pending.enabled


def test_corrupt_record_is_an_error_not_a_guess(fake_nvml: FakeNvml, tmp_path: Path) -> None:
    (tmp_path / DEFAULTS_FILE).write_text("{not json")
    capper, _ = make(tmp_path)
    with pytest.raises(TelemetryError, match="unreadable"):
        capper.restore_defaults("start-up")


def test_cap_and_restore_on_a_real_gpu(backend: str, tmp_path: Path) -> None:
    """On a real GPU: caps GPU 0 by 10 % and restores it; without root, says so and goes on."""
    capper, _ = make(tmp_path, min_change_interval_s=0)
    limits = capper.telemetry.limits(0)
    if limits is None:
        pytest.skip("GPU 0 reports no power limits")
    target_w = max(limits.min_w, limits.current_w * 0.9)
    try:
        applied = capper.set_limit(0, target_w, "test")
        if capper.permission_denied:
            assert applied == limits.current_w
            assert not (tmp_path / DEFAULTS_FILE).exists()
        else:
            assert abs(applied - target_w) < 1.0
            now = capper.telemetry.limits(0)
            assert now is not None and abs(now.current_w - target_w) < 1.0
    finally:
        capper.restore_defaults("test over")
    after = capper.telemetry.limits(0)
    assert after is not None and abs(after.current_w - limits.current_w) < 1.0
    capper.telemetry.close()


def test_restore_one_device_only_when_gridshift_changed_it(
    fake_nvml: FakeNvml, tmp_path: Path
) -> None:
    fake_nvml.state.change(1, power_limit_w=600.0)  # an admin's limit, not gridshift's
    capper, _ = make(tmp_path)
    capper.set_limit(0, 400.0, "dirty")
    assert capper.restore(1, "signal lost") is False
    assert limit_mw(fake_nvml, 1) == 600_000  # left alone
    assert capper.restore(0, "signal lost") is True
    assert limit_mw(fake_nvml, 0) == 700_000
    assert capper.restore(0, "again") is False
