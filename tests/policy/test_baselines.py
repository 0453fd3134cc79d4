"""Baseline policies in the simulator, on hand-made traces where the right answer is known."""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from gridshift.scheduler.models import Action
from gridshift.scheduler.policy.baselines import (
    GaiaCarbonTime,
    GaiaLowestSlot,
    RunNow,
    SdkWindow,
    Threshold,
    WaitAwhile,
)
from gridshift.scheduler.sim.engine import simulate

from .helpers import HOUR, T0, job, signal, snapshot, traces


def first_start(res, job_id="a"):
    o = next(j for j in res.jobs if j.job_id == job_id)
    return (o.first_start_s - T0.timestamp()) / HOUR


def run(policy, values, jobs):
    tr, fc = traces({"a": np.asarray(values, float)})
    return simulate(policy, tr, fc, jobs)


VALUES = [300, 250, 260, 90, 400, 80, 500, 500, 300, 300, 300, 300]


def test_run_now_starts_at_submission():
    res = run(RunNow(slot_s=HOUR), VALUES, [job("a", 2, 10)])
    assert first_start(res) == 0 and res.missed == 0


def test_threshold_waits_for_a_clean_hour_but_not_past_the_latest_start():
    assert first_start(run(Threshold(100, slot_s=HOUR), VALUES, [job("a", 1, 10)])) == 3
    late = run(Threshold(10, slot_s=HOUR), VALUES, [job("a", 2, 6)])
    assert first_start(late) == 4 and late.missed == 0


def test_wait_awhile_takes_the_lowest_mean_window():
    res = run(WaitAwhile(slot_s=HOUR), VALUES, [job("a", 3, 10)])
    # 3-hour windows: 3-5 = 90+400+80 = 570 is the lowest
    assert first_start(res) == 3


def test_sdk_window_only_sees_its_forecast_horizon():
    values = [300] * 30 + [10] * 5
    res = run(SdkWindow(forecast_horizon_s=24 * HOUR, slot_s=HOUR), values, [job("a", 1, 34)])
    assert first_start(res) < 24
    full = run(WaitAwhile(slot_s=HOUR), values, [job("a", 1, 34)])
    assert first_start(full) == 30


def test_gaia_lowest_slot_starts_in_the_single_lowest_slot():
    res = run(GaiaLowestSlot(slot_s=HOUR), VALUES, [job("a", 3, 10)])
    assert first_start(res) == 5


def test_gaia_carbon_time_trades_saving_against_delay():
    values = [300, 200, 300, 300, 300, 300, 300, 300, 190, 300, 300, 300]
    res = run(GaiaCarbonTime(slot_s=HOUR), values, [job("a", 1, 11)])
    # slot 1 saves 100 for 2 h of completion time; slot 8 saves 110 for 9 h
    assert first_start(res) == 1


def test_wait_awhile_interruptible_runs_in_the_cheapest_slots_and_meets_deadlines():
    pol = WaitAwhile(interruptible=True, slot_s=HOUR)
    res = run(pol, VALUES, [job("a", 3, 10, interruptible=True)])
    o = res.jobs[0]
    assert sorted(t for _, t in o.run_slots) == [1, 3, 5]
    assert o.suspensions == 2 and res.missed == 0


def test_baselines_start_at_latest_start_without_signal():
    ds = WaitAwhile(slot_s=HOUR).plan(
        snapshot([job("a", 1, 10)], {"a": signal("a", [900, 1, 1, 1], fresh=False)})
    )
    assert ds[0].action == Action.START


def test_holds_carry_the_chosen_start():
    ds = WaitAwhile(slot_s=HOUR).plan(snapshot([job("a", 1, 8)], {"a": signal("a", VALUES)}))
    assert ds[0].action == Action.HOLD
    assert ds[0].planned_start == T0 + timedelta(hours=5)
