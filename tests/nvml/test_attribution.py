"""Energy attribution: pure accounting, and the counter/integration agreement on the fake."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gridshift.scheduler.clock import FakeClock
from gridshift.scheduler.models import PowerSample
from gridshift.scheduler.telemetry.attribution import (
    EnergyAttributor,
    IntensityHistory,
    JobHolding,
    device_energy_j,
    split_shares,
    weights_from_processes,
)
from gridshift.scheduler.telemetry.nvml import NvmlTelemetry
from tests.nvml.conftest import FakeNvml

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def ps(index: int, t_s: float, power_w: float, energy_j: float | None) -> PowerSample:
    return PowerSample(
        index=index,
        uuid=f"GPU-{index}",
        at=T0 + timedelta(seconds=t_s),
        power_w=power_w,
        energy_j=energy_j,
    )


def flat(value: float):
    return lambda region, when: value


def test_counter_difference_preferred_then_trapezoid() -> None:
    assert device_energy_j(ps(0, 0, 100, 1000.0), ps(0, 2, 300, 1500.0), 30) == 500.0
    # no counter: trapezoid of power
    assert device_energy_j(ps(0, 0, 100, None), ps(0, 2, 300, None), 30) == 400.0
    # counter went backwards (GPU reset): trapezoid
    assert device_energy_j(ps(0, 0, 100, 9000.0), ps(0, 2, 300, 10.0), 30) == 400.0
    # a long gap without a counter is not guessed
    assert device_energy_j(ps(0, 0, 100, None), ps(0, 60, 300, None), 30) is None
    # a long gap with a counter is exact
    assert device_energy_j(ps(0, 0, 100, 0.0), ps(0, 60, 300, 9000.0), 30) == 9000.0


def test_shared_gpu_split_rule() -> None:
    assert split_shares([], None) == {}
    assert split_shares(["a"], {"a": 0.0}) == {"a": 1.0}
    assert split_shares(["a", "b"], None) == {"a": 0.5, "b": 0.5}
    assert split_shares(["a", "b"], {"a": 3.0, "b": 1.0}) == {"a": 0.75, "b": 0.25}
    # a holder without a weight gets the mean of the known weights
    shares = split_shares(["a", "b", "c"], {"a": 4.0, "b": 2.0})
    assert shares == pytest.approx({"a": 4 / 9, "b": 2 / 9, "c": 3 / 9})
    assert sum(shares.values()) == pytest.approx(1.0)


def test_weights_from_processes() -> None:
    weights = weights_from_processes(
        {0: [(10, 3 * 2**30), (11, 2**30), (99, 5)], 1: [(12, None)]},
        {10: "a", 11: "b", 12: "a"},
    )
    assert weights == {0: {"a": 3 * 2**30, "b": 2**30}, 1: {"a": 1.0}}


def test_energy_emissions_and_idle() -> None:
    att = EnergyAttributor()
    jobs = [
        JobHolding("a", [0], T0, "r"),
        JobHolding("b", [1, 2], T0, "r"),
    ]
    att.add(
        [ps(0, 0, 0, 0.0), ps(1, 0, 0, 0.0), ps(2, 0, 0, 0.0), ps(3, 0, 0, 0.0)], jobs, flat(400)
    )
    r = att.add(
        [ps(0, 10, 0, 3.6e6), ps(1, 10, 0, 1.8e6), ps(2, 10, 0, 1.8e6), ps(3, 10, 0, 7e5)],
        jobs,
        flat(400),
    )
    assert r.jobs["a"].energy_j == pytest.approx(3.6e6)
    assert r.jobs["a"].emissions_g == pytest.approx(400.0)  # 1 kWh at 400 g/kWh
    assert r.jobs["b"].energy_j == pytest.approx(3.6e6)  # sum over its two GPUs
    assert r.idle_j == pytest.approx(7e5)  # GPU 3 holds no job
    assert r.device_j == pytest.approx({0: 3.6e6, 1: 1.8e6, 2: 1.8e6, 3: 7e5})


def test_shared_gpu_by_weights_in_a_round() -> None:
    att = EnergyAttributor()
    jobs = [JobHolding("a", [0], T0, "r"), JobHolding("b", [0], T0, "r")]
    att.add([ps(0, 0, 0, 0.0)], jobs, flat(100))
    r = att.add([ps(0, 1, 0, 1000.0)], jobs, flat(100), weights={0: {"a": 1.0, "b": 3.0}})
    assert r.jobs["a"].energy_j == pytest.approx(250.0)
    assert r.jobs["b"].energy_j == pytest.approx(750.0)
    # a job seen only through the process list (weights) is a holder too
    only_weights = [JobHolding("c", [], T0, "r")]
    r = att.add([ps(0, 2, 0, 2000.0)], only_weights, flat(100), weights={0: {"c": 5.0}})
    assert r.jobs["c"].energy_j == pytest.approx(1000.0)


def test_unknown_intensity_counts_energy_not_grams() -> None:
    att = EnergyAttributor()
    jobs = [JobHolding("a", [0], T0, "r")]
    att.add([ps(0, 0, 0, 0.0)], jobs, flat(100))
    r = att.add([ps(0, 1, 0, 500.0)], jobs, lambda region, when: None)
    assert r.jobs["a"].energy_j == 500.0
    assert r.jobs["a"].emissions_g == 0.0
    assert r.jobs["a"].unpriced_j == 500.0


def test_counterfactual_prices_at_submission_time() -> None:
    """A job held for an hour from a dirty hour into a clean one: the counterfactual prices
    its energy at the intensity from its submission onwards."""

    def intensity(region: str, when: datetime) -> float:
        return 500.0 if when < T0 + timedelta(hours=1) else 100.0

    att = EnergyAttributor()
    submitted = T0
    jobs = [JobHolding("a", [0], submitted, "r")]
    start = 3600.0
    # the agent records the intensities it saw while the job waited
    for t in range(0, 3600, 600):
        when = T0 + timedelta(seconds=t)
        att.history.record("r", when, intensity("r", when))
    att.add([ps(0, start, 0, 0.0)], jobs, intensity)
    total_g = total_cf = 0.0
    for k in range(1, 31):  # 30 minutes at 1 kW, sampled every 60 s
        r = att.add([ps(0, start + 60 * k, 0, 60_000.0 * k)], jobs, intensity)
        total_g += r.jobs["a"].emissions_g
        total_cf += r.jobs["a"].counterfactual_g
    kwh = 0.5
    assert total_g == pytest.approx(kwh * 100.0)
    assert total_cf == pytest.approx(kwh * 500.0)
    assert att.totals.jobs["a"].saved_g == pytest.approx(kwh * 400.0)
    assert att.run_offset_s("a") == pytest.approx(1800.0)


def test_intensity_history_step_function() -> None:
    h = IntensityHistory()
    h.record("r", T0, 100)
    h.record("r", T0 + timedelta(minutes=30), 200)
    h.record("r", T0 + timedelta(minutes=10), 999)  # out of order: ignored
    assert h.at("r", T0 - timedelta(seconds=1)) is None
    assert h.at("r", T0 + timedelta(minutes=29)) == 100
    assert h.at("r", T0 + timedelta(hours=5)) == 200
    h.prune_before(T0 + timedelta(hours=1))
    assert h.at("r", T0 + timedelta(hours=2)) == 200
    assert h.at("other", T0) is None


def test_counter_and_integrated_power_agree_on_steady_load(fake_nvml: FakeNvml) -> None:
    """Per-job energy from the counter and from integrated (1 s average) power agree within
    2 % on the fake's steady loads, with a ripple on top and a cap change half-way. A third
    accounting reads the counter only every 10 s (as the agent does) and integrates between:
    it matches the counter at each reading."""
    state = fake_nvml.state
    state.change(0, demand_w=420.0, ripple_w=35.0, ripple_period_s=7.3)
    state.change(1, demand_w=250.0, ripple_w=15.0, ripple_period_s=3.1)
    clock = FakeClock(T0)
    every_sample = NvmlTelemetry(clock, energy_every_s=0)
    every_10s = NvmlTelemetry(clock, energy_every_s=10)
    jobs = [JobHolding("big", [0], T0, "r"), JobHolding("small", [1], T0, "r")]
    by_counter = EnergyAttributor()
    by_power = EnergyAttributor()
    by_sparse_counter = EnergyAttributor()
    sparse_readings = 0
    try:
        for second in range(601):
            if second == 300:
                every_sample.set_power_limit_w(0, 330.0)  # GPU 0's load now follows the cap
                state.sync_from_file()
            samples = every_sample.sample()
            by_counter.add(samples, jobs, flat(300))
            stripped = [s.model_copy(update={"energy_j": None}) for s in samples]
            by_power.add(stripped, jobs, flat(300))
            sparse = every_10s.sample()
            sparse_readings += sparse[0].energy_j is not None
            by_sparse_counter.add(sparse, jobs, flat(300))
            state.advance(1.0)
            clock.advance(1.0)
    finally:
        every_sample.close()
        every_10s.close()
    assert sparse_readings == 61  # the counter was read every 10 s, not every second
    for job in ("big", "small"):
        counted = by_counter.totals.jobs[job].energy_j
        integrated = by_power.totals.jobs[job].energy_j
        sparse_j = by_sparse_counter.totals.jobs[job].energy_j
        assert counted > 0
        assert abs(integrated - counted) / counted < 0.02, (job, counted, integrated)
        # 600 s is a whole number of 10 s windows: the sparse counter gives the same total
        assert sparse_j == pytest.approx(counted, rel=1e-6), (job, counted, sparse_j)
        grams = by_sparse_counter.totals.jobs[job].emissions_g
        assert grams == pytest.approx(sparse_j / 3.6e6 * 300, rel=1e-6)
    # and the counter matches the fake's model: 300 s at ~420 W then 300 s at ~330 W
    assert by_counter.totals.jobs["big"].energy_j == pytest.approx(300 * 420 + 300 * 330, rel=0.01)


def test_sparse_counter_correction_is_shared_by_the_windows_holders() -> None:
    """Job a holds the GPU for the first half of a counter window, job b for the second;
    power says 100 W throughout but the counter says 300 W on average: both are scaled x3."""
    att = EnergyAttributor()
    a = [JobHolding("a", [0], T0, "r")]
    b = [JobHolding("b", [0], T0, "r")]
    att.add([ps(0, 0, 100, 0.0)], a, flat(100))
    for t in range(1, 6):
        att.add([ps(0, t, 100, None)], a, flat(100))
    for t in range(6, 10):
        att.add([ps(0, t, 100, None)], b, flat(100))
    att.add([ps(0, 10, 100, 3000.0)], b, flat(100))
    jobs = att.totals.jobs
    assert jobs["a"].energy_j == pytest.approx(1500.0)
    assert jobs["b"].energy_j == pytest.approx(1500.0)
    assert att.totals.device_j[0] == pytest.approx(3000.0)
