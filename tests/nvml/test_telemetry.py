"""NvmlTelemetry against the fake NVML (everywhere) and a real GPU (with -m gpu)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from gridshift.scheduler.clock import FakeClock, SystemClock
from gridshift.scheduler.errors import NotFound, TelemetryError
from gridshift.scheduler.telemetry.nvml import (
    NVML_ERRORS,
    GpuLost,
    NvmlNotSupported,
    NvmlPermissionDenied,
    NvmlTelemetry,
    NvmlUnavailable,
)
from tests.nvml.conftest import FakeNvml, real_gpu_present


@pytest.fixture
def telemetry(backend: str):
    t = NvmlTelemetry(SystemClock())
    yield t
    t.close()


def test_devices_report_identity_and_limits(backend: str, telemetry: NvmlTelemetry) -> None:
    devices = telemetry.devices()
    assert devices, "NVML reports no device"
    assert [d.index for d in devices] == list(range(len(devices)))
    for d in devices:
        assert d.uuid.startswith(("GPU-", "MIG-"))
        assert d.name
        assert d.mig_enabled in (True, False, None)
        if d.limits is not None:
            assert 0 < d.limits.min_w <= d.limits.current_w <= d.limits.max_w
            assert d.limits.min_w <= d.limits.default_w <= d.limits.max_w
    if backend == "fake":
        assert devices[0].uuid == "GPU-00000000-0000-4000-8000-000000000000"
        assert devices[0].limits is not None
        assert devices[0].limits.max_w == 700.0
        assert devices[0].limits.min_w == 200.0


def test_sample_reads_power_energy_limit_and_utilisation(
    backend: str, telemetry: NvmlTelemetry
) -> None:
    samples = telemetry.sample()
    assert len(samples) == len(telemetry.devices())
    for s in samples:
        assert s.power_w >= 0
        if s.max_limit_w is not None:
            assert s.power_w <= s.max_limit_w * 1.5  # a draw beyond 1.5x the max is nonsense
        if s.power_limit_w is not None and s.min_limit_w is not None:
            assert s.min_limit_w <= s.power_limit_w
        if s.utilization_pct is not None:
            assert 0 <= s.utilization_pct <= 100
    if backend == "fake":
        assert [s.power_w for s in samples] == [400.0, 350.0]
        assert [s.power_avg_w for s in samples] == [400.0, 350.0]
        assert samples[0].power_limit_w == 700.0
        assert samples[0].utilization_pct == 90.0


def test_energy_counter_is_monotonic_and_in_joules(backend: str, request) -> None:
    clock = FakeClock()
    t = NvmlTelemetry(clock, energy_every_s=0)  # the counter in every sample
    try:
        first = t.sample()
        if backend == "fake":
            fake: FakeNvml = request.getfixturevalue("fake_nvml")
            fake.state.advance(10.0)
        else:
            import time

            time.sleep(1.5)
        second = t.sample()
    finally:
        t.close()
    for a, b in zip(first, second, strict=True):
        if a.energy_j is None:
            continue
        assert b.energy_j is not None
        assert b.energy_j >= a.energy_j
    if backend == "fake":
        # 10 s at 400 W and 350 W: 4000 J and 3500 J (mJ from NVML converted to J)
        assert second[0].energy_j - first[0].energy_j == pytest.approx(4000.0)
        assert second[1].energy_j - first[1].energy_j == pytest.approx(3500.0)


def test_limits_and_processes(backend: str, telemetry: NvmlTelemetry, request) -> None:
    if backend == "fake":
        fake: FakeNvml = request.getfixturevalue("fake_nvml")
        fake.state.change(0, procs={4242: 3 * 2**30, 4343: 2**30})
    limits = telemetry.limits(0)
    procs = telemetry.processes(0)
    assert all(p.pid > 0 for p in procs)
    if backend == "fake":
        assert limits is not None
        assert (limits.current_w, limits.default_w, limits.min_w, limits.max_w) == (
            700.0,
            700.0,
            200.0,
            700.0,
        )
        assert [(p.pid, p.used_memory_bytes) for p in procs] == [
            (4242, 3 * 2**30),
            (4343, 2**30),
        ]
        assert telemetry.processes(1) == []
    with pytest.raises(NotFound):
        telemetry.limits(len(telemetry.devices()) + 3)


def test_sampling_stays_off_the_slow_calls(fake_nvml: FakeNvml) -> None:
    t = NvmlTelemetry(SystemClock())
    try:
        t.sample()
        before = {
            name: fake_nvml.calls(name)
            for name in (
                "nvmlDeviceGetComputeRunningProcesses_v3",
                "nvmlDeviceGetFieldValues",
                "nvmlDeviceGetTotalEnergyConsumption",
                "nvmlDeviceGetPowerManagementLimitConstraints",
                "nvmlDeviceGetName",
            )
        }
        for _ in range(10):
            t.sample()
        after = {name: fake_nvml.calls(name) for name in before}
    finally:
        t.close()
    # 10 rounds on 2 GPUs: one field-value call per GPU per round (power, limit, energy)...
    assert after["nvmlDeviceGetFieldValues"] - before["nvmlDeviceGetFieldValues"] == 20
    # ...and no slow counter call (the field carries it), process list, name or limit range.
    for name in (
        "nvmlDeviceGetTotalEnergyConsumption",
        "nvmlDeviceGetComputeRunningProcesses_v3",
        "nvmlDeviceGetPowerManagementLimitConstraints",
        "nvmlDeviceGetName",
    ):
        assert after[name] == before[name], name


def test_init_is_lazy(fake_nvml: FakeNvml) -> None:
    inits = fake_nvml.calls("nvmlInitWithFlags")
    t = NvmlTelemetry(SystemClock())
    assert fake_nvml.calls("nvmlInitWithFlags") == inits
    assert not t.initialised
    t.sample()
    assert t.initialised
    assert fake_nvml.calls("nvmlInitWithFlags") == inits + 1
    t.close()


def test_no_driver_raises_telemetry_error(
    fake_nvml: FakeNvml, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_NVML_STATE", str(tmp_path / "no-such-state"))
    t = NvmlTelemetry(SystemClock())
    with pytest.raises(NvmlUnavailable, match="driver is not loaded") as info:
        t.sample()
    assert isinstance(info.value, TelemetryError)
    assert not t.initialised


def test_no_library_at_all_raises_telemetry_error(tmp_path: Path) -> None:
    """A host without libnvidia-ml: the real loader path of pynvml, in a clean process."""
    if real_gpu_present():
        pytest.skip("this host has a real NVML library")
    code = (
        "from gridshift.scheduler.clock import SystemClock\n"
        "from gridshift.scheduler.telemetry.nvml import NvmlTelemetry, NvmlUnavailable\n"
        "try:\n"
        "    NvmlTelemetry(SystemClock()).sample()\n"
        "except NvmlUnavailable as exc:\n"
        "    print('UNAVAILABLE', exc)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert "UNAVAILABLE" in out.stdout, out.stderr
    assert "libnvidia-ml.so.1 was not found" in out.stdout


def test_lost_gpu_is_left_out_and_comes_back(fake_nvml: FakeNvml) -> None:
    t = NvmlTelemetry(SystemClock())
    try:
        assert len(t.sample()) == 2
        fake_nvml.state.change(1, lost=1)
        samples = t.sample()
        assert [s.index for s in samples] == [0]
        with pytest.raises(GpuLost, match="fell off the bus"):
            t.set_power_limit_w(1, 300)
        fake_nvml.state.change(1, lost=0)
        assert [s.index for s in t.sample()] == [0, 1]
    finally:
        t.close()


def test_unsupported_readings_fall_back(fake_nvml: FakeNvml) -> None:
    fake_nvml.state.change(0, energy_supported=0, fields_supported=0, ripple_w=30.0)
    t = NvmlTelemetry(SystemClock(), energy_every_s=0)
    try:
        s0 = t.sample()[0]
        assert s0.energy_j is None  # no counter: the attribution integrates power
        assert s0.power_avg_w is None  # no field values: power from nvmlDeviceGetPowerUsage
        assert s0.power_w > 0
        assert s0.power_limit_w == 700.0  # read with the classic call instead
        calls = fake_nvml.calls("nvmlDeviceGetTotalEnergyConsumption")
        t.sample()
        # remembered per device: the unsupported counter is not asked again (and GPU 1
        # reads its counter through the field-value call)
        assert fake_nvml.calls("nvmlDeviceGetTotalEnergyConsumption") == calls
        s1 = t.sample()[1]
        assert s1.energy_j is not None
        assert s1.power_avg_w is not None
    finally:
        t.close()


def test_power_usage_instant_vs_average(fake_nvml: FakeNvml) -> None:
    """With a ripple, the field-value instant reading differs from the 1 s average."""
    fake_nvml.state.change(0, ripple_w=50.0, ripple_period_s=4.0)
    fake_nvml.state.advance(1.0)  # sin(2 pi * t / 4) at a quarter period: instant at a peak
    t = NvmlTelemetry(SystemClock())
    try:
        s = t.sample()[0]
    finally:
        t.close()
    assert s.power_avg_w is not None
    assert s.power_w != pytest.approx(s.power_avg_w, abs=1.0)
    assert 350.0 <= s.power_w <= 450.0
    assert 350.0 <= s.power_avg_w <= 450.0


def test_permission_error_is_translated(fake_nvml: FakeNvml) -> None:
    fake_nvml.state.change(0, set_limit_rc=4)
    t = NvmlTelemetry(SystemClock())
    try:
        with pytest.raises(NvmlPermissionDenied, match="CAP_SYS_ADMIN"):
            t.set_power_limit_w(0, 300)
        with pytest.raises(TelemetryError, match="outside what the device accepts"):
            t.set_power_limit_w(1, 50)
    finally:
        t.close()


def test_error_table_names_pynvml_classes() -> None:
    import pynvml

    for name in NVML_ERRORS:
        assert hasattr(pynvml, name), f"pynvml has no {name}"
    assert NVML_ERRORS["NVMLError_NotSupported"].error is NvmlNotSupported


def test_concurrent_sampling_is_safe(fake_nvml: FakeNvml) -> None:
    t = NvmlTelemetry(SystemClock())
    errors: list[BaseException] = []
    results: list[int] = []

    def work() -> None:
        try:
            for _ in range(50):
                results.append(len(t.sample()))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for th in threads:
        th.start()
    # meanwhile the state file changes under the library
    for i in range(20):
        fake_nvml.state.change(i % 2, demand_w=300.0 + i)
    for th in threads:
        th.join()
    t.close()
    assert not errors
    assert results == [2] * 200


def test_energy_from_the_classic_call_where_the_field_is_missing(fake_nvml: FakeNvml) -> None:
    """Drivers without NVML_FI_DEV_ENERGY: the counter comes from the classic call."""
    fake_nvml.state.change(0, fields_supported=0)
    t = NvmlTelemetry(SystemClock(), energy_every_s=0)
    try:
        before = fake_nvml.calls("nvmlDeviceGetTotalEnergyConsumption")
        first = t.sample()[0]
        fake_nvml.state.advance(5.0)
        second = t.sample()[0]
    finally:
        t.close()
    assert fake_nvml.calls("nvmlDeviceGetTotalEnergyConsumption") == before + 2
    assert first.energy_j is not None and second.energy_j is not None
    assert second.energy_j - first.energy_j == pytest.approx(2000.0)  # 5 s at 400 W


def test_energy_counter_read_every_energy_every_s(fake_nvml: FakeNvml) -> None:
    """The counter is slow on real drivers: read with the power fields only every 10 s."""
    clock = FakeClock()
    t = NvmlTelemetry(clock, energy_every_s=10)
    classic = fake_nvml.calls("nvmlDeviceGetTotalEnergyConsumption")
    got = []
    try:
        for _ in range(25):
            got.append(t.sample()[0].energy_j)
            fake_nvml.state.advance(1.0)
            clock.advance(1.0)
    finally:
        t.close()
    read_at = [i for i, e in enumerate(got) if e is not None]
    assert read_at == [0, 10, 20]
    assert got[10] == pytest.approx(4000.0)  # 10 s at 400 W
    # the field-value call carried it
    assert fake_nvml.calls("nvmlDeviceGetTotalEnergyConsumption") == classic
