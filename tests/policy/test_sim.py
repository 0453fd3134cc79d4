"""The simulator's parts: traces on a slot grid, forecast models, job scenarios, accounting;
and gridshift on a real trace."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from gridshift.scheduler.errors import ConfigError
from gridshift.scheduler.policy.baselines import RunNow
from gridshift.scheduler.policy.planner import CarbonPlanner, CarbonPlannerConfig
from gridshift.scheduler.sim.engine import Progress, simulate
from gridshift.scheduler.sim.jobs import (
    generated_jobs,
    ml_jobs,
    nightly_jobs,
    scenario_jobs,
    spread_home_regions,
)
from gridshift.scheduler.sim.suite import make_policy, run_suite
from gridshift.scheduler.sim.traces import (
    DAY_S,
    NoisyForecast,
    PastDataForecast,
    RegionTrace,
    aligned_windows,
    make_forecast,
    region_trace,
)

from .helpers import HOUR, T0, job, traces


def test_region_trace_averages_onto_slots(tmp_path):
    p = tmp_path / "x_trace.csv"
    rows = ["time,X"] + [
        f"2024-01-01 {h:02d}:{m:02d}:00,{v}" for h in range(3) for m, v in ((0, 100), (30, 200))
    ]
    p.write_text("\n".join(rows) + "\n")
    tr = region_trace(p, 3600)
    assert len(tr) == 3 and np.allclose(tr.values, 150)
    assert tr.time_of(1) == datetime(2024, 1, 1, 1, tzinfo=UTC)


def test_forecast_models_keep_the_measured_value_now():
    vals = 200 + 50 * np.sin(np.arange(24 * 10) / 3.8)
    tr = RegionTrace("r", T0.timestamp(), HOUR, vals)
    for kind in ("perfect", "noise10", "realistic"):
        f = make_forecast(kind, tr).values(24 * 8, 48)
        assert f.shape == (48,) and f[0] == vals[24 * 8]
    noisy = NoisyForecast(tr, 0.10, seed=1).values(24 * 8, 200)
    err = noisy[1:] - vals[24 * 8 + 1 : 24 * 8 + 200]
    assert 0.05 * vals.mean() < err.std() < 0.15 * vals.mean()
    # a daily pattern is learnt from the past days
    past = PastDataForecast(tr).values(24 * 8, 48)
    assert np.abs(past[24:] - vals[24 * 9 : 24 * 10]).mean() < 10
    with pytest.raises(ConfigError, match="historical"):
        make_forecast("historical", tr)


def test_job_scenarios_follow_the_published_setups():
    start = datetime(2024, 6, 3, tzinfo=UTC)  # a Monday
    nightly = nightly_jobs(start, 5, ["r"])
    assert len(nightly) == 4  # the first window would open before the start
    assert all(j.deadline - j.submitted_at == timedelta(hours=16, minutes=30) for j in nightly)
    ml = ml_jobs(start, 7, ["r"], interruptible=True, seed=3)
    for j in ml:
        assert j.submitted_at.weekday() < 5 and 9 <= j.submitted_at.hour <= 17
        latest = j.deadline - timedelta(seconds=j.spec.expected_duration_s)
        assert latest.hour == 9 and latest.weekday() < 5 and latest > j.submitted_at
        assert 4 * 3600 <= j.spec.expected_duration_s <= 90 * 3600
    gen = generated_jobs(start, 2, ["a", "b"], per_hour=3, seed=1)
    assert 80 < len(gen) < 220
    assert {g for j in gen for g in j.spec.allowed_regions} == {"a", "b"}


def test_accounting_is_energy_times_intensity():
    tr, fc = traces({"a": np.array([100.0, 200, 300, 400])})
    res = simulate(RunNow(slot_s=HOUR), tr, fc, [job("a", 1.5, 4, gpus=2)])
    assert res.jobs[0].energy_kwh == pytest.approx(0.9)
    # 2 GPUs x 300 W: 0.6 kWh in hour 0, 0.3 kWh in the half of hour 1
    assert res.emissions_g == pytest.approx(0.6 * 100 + 0.3 * 200)
    assert res.jobs[0].end_s == T0.timestamp() + 1.5 * HOUR and res.missed == 0


def test_the_delay_of_the_finish_counts_the_wait_the_pauses_and_the_checkpoints():
    tr, fc = traces(
        {
            "a": np.array([100.0, 500, 500, 120, 500, 500, 500, 500]),
            "b": np.array([500.0, 500, 500, 100, 100, 500, 500, 500]),
        }
    )
    paused = job("p", 2, 5, interruptible=True, checkpoint_cost_s=360, min_run_s=HOUR)
    held = job("h", 2, 6, regions=["b"])  # cleanest window: hours 3-4
    planner = CarbonPlanner(CarbonPlannerConfig(slot_s=HOUR, denoise=False))  # exact forecast
    res = simulate(planner, tr, fc, [paused, held])
    by = {j.job_id: j for j in res.jobs}
    # runs hour 0, pauses hours 1-2, resumes at 3 and pays its 6-minute checkpoint
    assert by["p"].wait_s == 0 and by["p"].suspensions == 1
    assert by["p"].delay_s == pytest.approx(2 * HOUR + 360)
    assert by["h"].wait_s == by["h"].delay_s == pytest.approx(3 * HOUR)
    assert res.mean_delay_h == pytest.approx((5 * HOUR + 360) / 2 / HOUR)
    now = simulate(RunNow(slot_s=HOUR), tr, fc, [paused, held])
    assert now.mean_wait_h == now.mean_delay_h == 0


def test_gridshift_on_a_real_trace_captures_the_oracle(shared_carbon):
    full = region_trace(shared_carbon / "de_2023_electricitymaps_hourly.csv", HOUR, "de")
    start = full.origin_s + 8 * DAY_S
    tr = full.window(start - 8 * DAY_S, 8 + 14 + 2)
    jobs = nightly_jobs(datetime.fromtimestamp(start, UTC), 14, ["de"])
    pols = ["gridshift", "wait-awhile"]
    perfect = run_suite(
        {"de": tr}, {"de": make_forecast("perfect", tr)}, jobs, pols, forecast_name="perfect"
    )
    assert perfect.oracle_exact
    assert perfect.capture("gridshift") >= 0.95
    assert perfect.results["gridshift"].missed == 0
    noisy = run_suite(
        {"de": tr},
        {"de": make_forecast("noise10", tr)},
        jobs,
        pols,
        forecast_name="noise10",
        with_oracle=False,
    )
    noisy.oracle_g = perfect.oracle_g
    assert noisy.saving("gridshift") > 0
    assert noisy.saving("gridshift") >= noisy.saving("wait-awhile")


class _Recorder:
    """A planner that starts everything at once and remembers the measured forecast error
    it was shown."""

    def __init__(self) -> None:
        self.seen: list[float | None] = []
        self.inner = RunNow(slot_s=HOUR)

    def plan(self, snapshot):
        self.seen.append(snapshot.regions["a"].forecast_error_g_per_kwh)
        return self.inner.plan(snapshot)


@pytest.mark.parametrize(("kind", "expected"), [("perfect", 0.0), ("noise10", 0.1)])
def test_the_simulator_scores_each_forecast_as_the_agent_does(kind, expected):
    vals = 200 + 50 * np.sin(np.arange(24 * 12) / 3.8)
    tr, _ = traces({"a": vals})
    start = T0 + timedelta(days=8)
    jobs = [job("a", 1, 30, submitted=start + timedelta(hours=h)) for h in range(0, 48, 6)]
    rec = _Recorder()
    simulate(rec, tr, {"a": make_forecast(kind, tr["a"])}, jobs)
    # two days of warm-up before the first job: the error is known from the first tick
    assert rec.seen and all(e is not None for e in rec.seen)
    assert rec.seen[-1] == pytest.approx(expected * float(np.mean(vals)), rel=0.2, abs=1e-9)
    cold = _Recorder()
    simulate(cold, tr, {"a": make_forecast(kind, tr["a"])}, jobs, warmup_s=0)
    assert cold.seen[0] is None


def test_relocating_interruptible_jobs_under_shared_capacity_meets_every_deadline(shared_carbon):
    # Five balancing areas of 2022, 48 GPUs each, Let's Wait Awhile's interruptible ML jobs
    # allowed everywhere: the cleanest region (BPAT, hydro) cannot take them all, so plans
    # compete for GPUs and paused jobs must find them again before their deadlines.
    regions = ["us-ciso", "us-miso", "us-bpat", "us-soco", "us-azps"]
    fulls = {
        r: region_trace(shared_carbon / f"{r}_2022_eia930-hpe_hourly.csv", HOUR, r) for r in regions
    }
    start = max(f.origin_s for f in fulls.values()) + 8 * DAY_S
    tr = aligned_windows(fulls, start - 8 * DAY_S, 8 + 5 + 8)
    jobs = spread_home_regions(
        scenario_jobs("ml-interruptible", datetime.fromtimestamp(start, UTC), 5, regions, HOUR),
        regions,
    )
    res = simulate(
        CarbonPlanner(CarbonPlannerConfig(slot_s=HOUR)),
        tr,
        {r: make_forecast("perfect", t) for r, t in tr.items()},
        jobs,
        capacity_gpus=dict.fromkeys(regions, 48),
    )
    assert res.missed == 0, [o.job_id for o in res.jobs if o.missed]
    assert res.capacity_refusals == 0
    assert {o.region for o in res.jobs} > {"us-bpat"}  # the clean region alone is too small


def test_progress_in_a_log_is_a_line_a_quarter(capsys):
    # standard error is not a terminal here, as in a log or a CI job
    bar = Progress("gridshift / perfect")
    for pct in range(100):
        bar.show(float(pct))
    bar.done()
    lines = capsys.readouterr().err.splitlines()
    assert "\r" not in "".join(lines)
    assert lines == [
        "  gridshift / perfect:   0.0%",
        "  gridshift / perfect:  25.0%",
        "  gridshift / perfect:  50.0%",
        "  gridshift / perfect:  75.0%",
        "  gridshift / perfect: done",
    ]


def test_the_simulators_planner_waits_for_its_exact_plan_far_longer_than_a_live_tick():
    # The live agent falls back to the one-by-one plan when the joint exact plan is not
    # proven optimal within its tick's time; a simulation gives it far more, so that its
    # figures do not depend on the speed or load of the machine that runs it.
    planner = make_policy("gridshift", 3600.0, 0.0)
    assert isinstance(planner, CarbonPlanner)
    live = CarbonPlannerConfig().exact_time_limit_s
    assert planner.config.exact_time_limit_s >= 20 * live
