"""The oracle against brute force on small cases, and as a lower bound of every policy."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridshift.scheduler.errors import ValidationError
from gridshift.scheduler.policy.oracle import OracleJob, solve, solve_online


def fixed(job_id, release, duration, deadline, gpus=1, regions=(0,)):
    return OracleJob(job_id, release, duration, deadline, gpus, 1.0, list(regions))


def test_single_job_takes_the_cheapest_window():
    inten = np.array([[5, 4, 1, 1, 6, 0.5, 9, 9.0]])
    res = solve([fixed("a", 0, 2, 6)], inten)
    # windows of 2 ending by slot 6: best is slots 2-3 (sum 2); 4-5 sums 6.5
    assert res.per_job_g["a"] == pytest.approx(2.0)
    assert res.schedule["a"] == [(0, 2, 2)]
    assert res.exact


def test_fractional_duration_counts_the_last_slot_pro_rata():
    inten = np.array([[10, 2, 4, 10.0]])
    res = solve([fixed("a", 0, 1.5, 4)], inten)
    assert res.per_job_g["a"] == pytest.approx(2 + 0.5 * 4)


def test_capacity_couples_two_jobs_like_brute_force():
    inten = np.array([[9, 1, 3, 8, 2, 7.0]])
    jobs = [fixed("a", 0, 2, 6, gpus=2), fixed("b", 0, 2, 6, gpus=1)]
    res = solve(jobs, inten, capacity=np.array([2.0]))
    best = np.inf
    for sa, sb in itertools.product(range(5), range(5)):
        if len({sa, sa + 1} & {sb, sb + 1}) == 0:  # 2 + 1 GPUs never fit together
            cost = 2 * 0 + inten[0, sa : sa + 2].sum() + inten[0, sb : sb + 2].sum()
            best = min(best, cost)
    assert res.emissions_g == pytest.approx(best)
    assert not (
        set(range(res.schedule["a"][0][1], res.schedule["a"][0][1] + 2))
        & set(range(res.schedule["b"][0][1], res.schedule["b"][0][1] + 2))
    )


def test_capacity_per_slot_keeps_a_job_out_of_the_slots_already_taken():
    inten = np.array([[1, 1, 5, 5, 9.0]])
    taken = np.array([[1.0, 1.0, 2.0, 2.0, 2.0]])  # 2 GPUs, one busy in slots 0-1
    res = solve([fixed("a", 0, 2, 5, gpus=2)], inten, capacity=taken)
    assert res.schedule["a"] == [(0, 2, 2)]
    assert res.per_job_g["a"] == pytest.approx(10.0)
    assert solve([fixed("a", 0, 2, 5, gpus=1)], inten, capacity=taken).schedule["a"] == [(0, 0, 2)]
    with pytest.raises(ValidationError, match="capacity has shape"):
        solve([fixed("a", 0, 2, 5)], inten, capacity=np.ones((1, 3)))


def _coupled_case() -> tuple[list[OracleJob], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    inten = rng.uniform(50, 500, size=(3, 24))
    jobs = [
        OracleJob(f"j{i}", int(rng.integers(0, 6)), float(rng.integers(3, 8)), 23.0,
                  int(rng.integers(1, 4)), 1.0, [0, 1, 2])
        for i in range(12)
    ]  # fmt: skip
    return jobs, inten, np.array([3.0, 3.0, 3.0])


def test_an_oracle_stopped_early_reports_a_bound_below_what_it_found():
    jobs, inten, cap = _coupled_case()
    exact = solve(jobs, inten, capacity=cap)
    assert exact.exact and exact.bound_g == pytest.approx(exact.emissions_g)
    # one branch-and-bound node: a stop that does not depend on the machine's speed
    cut = solve(jobs, inten, capacity=cap, node_limit=1)
    assert not cut.exact and "limit" in cut.status.lower()
    # what it found is no better than the optimum, and its bound is below that
    assert cut.bound_g < exact.emissions_g - 1.0
    assert cut.emissions_g >= exact.emissions_g - 1e-6


def test_an_oracle_stopped_before_anything_was_found_says_so():
    jobs, inten, cap = _coupled_case()
    with pytest.raises(ValidationError, match="stopped before it found a schedule or a bound"):
        solve(jobs, inten, capacity=cap, time_limit_s=1e-6)


def test_interruptible_takes_cheapest_slots_without_checkpoint_cost():
    inten = np.array([[5, 1, 9, 2, 8, 3, 7.0]])
    job = OracleJob("a", 0, 3, 7, 1, 1.0, [0], interruptible=True, overhead=0.0)
    res = solve([job], inten)
    assert res.emissions_g == pytest.approx(1 + 2 + 3)


def test_checkpoint_cost_is_paid_per_resume_and_can_keep_a_job_whole():
    inten = np.array([[1, 9, 1, 9, 1, 2, 9, 9.0]])
    free = solve([OracleJob("a", 0, 3, 8, 1, 1.0, [0], True, 0.0)], inten).emissions_g
    cheap = solve([OracleJob("a", 0, 3, 8, 1, 1.0, [0], True, 0.5)], inten).emissions_g
    dear = solve([OracleJob("a", 0, 3, 8, 1, 1.0, [0], True, 5.0)], inten).emissions_g
    assert free == pytest.approx(3.0)
    # two resumes: one slot of extra work, cheapest at 2 g (slots 0, 2, 4 and 5)
    assert cheap == pytest.approx(1 + 1 + 1 + 2)
    assert dear == pytest.approx(1 + 9 + 1)  # one block of three beats paying 5 slots


def test_a_slot_is_used_in_part_only_when_the_job_finishes_in_it():
    # Jobs run on the slot clock: 0.5 slot of a 9 g slot between two runs (slots 0, 1/2, 2
    # then 4) cannot be executed; the best executable plan is one block 0-2.
    inten = np.array([[1, 9, 1, 9, 1, 9, 9, 9.0]])
    res = solve([OracleJob("a", 0, 3, 8, 1, 1.0, [0], True, 0.5)], inten)
    assert res.emissions_g == pytest.approx(1 + 9 + 1)
    used = sorted((t, f) for _, t, f in res.schedule["a"])
    assert all(f == pytest.approx(1.0) for _, f in used[:-1])


def test_relocation_picks_the_cleaner_region():
    inten = np.array([[5, 5, 5.0], [1, 9, 9.0]])
    res = solve([fixed("a", 0, 1, 3, regions=(0, 1))], inten)
    assert res.schedule["a"][0][:2] == (1, 0)


def test_infeasible_job_is_a_clear_error():
    with pytest.raises(ValidationError, match="cannot finish"):
        solve([fixed("a", 0, 5, 3)], np.ones((1, 8)))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    inten=st.lists(st.floats(1, 500), min_size=10, max_size=10),
    specs=st.lists(
        st.tuples(st.integers(0, 4), st.integers(1, 3), st.integers(0, 4), st.integers(1, 2)),
        min_size=1,
        max_size=3,
    ),
    cap=st.integers(2, 3),
)
def test_capacity_coupled_oracle_matches_enumeration(inten, specs, cap):
    arr = np.array([inten])
    jobs = [
        fixed(f"j{i}", rel, dur, min(rel + dur + slack, 10), gpus=g)
        for i, (rel, dur, slack, g) in enumerate(specs)
    ]
    options = [range(j.release, int(j.deadline - j.duration) + 1) for j in jobs]
    best = np.inf
    for starts in itertools.product(*options):
        use = np.zeros(10)
        for j, s in zip(jobs, starts, strict=True):
            use[s : s + int(j.duration)] += j.gpus
        if np.all(use <= cap):
            best = min(
                best,
                sum(
                    arr[0, s : s + int(j.duration)].sum() for j, s in zip(jobs, starts, strict=True)
                ),
            )
    if not np.isfinite(best):
        with pytest.raises(ValidationError):
            solve(jobs, arr, capacity=np.array([float(cap)]))
        return
    res = solve(jobs, arr, capacity=np.array([float(cap)]))
    assert res.emissions_g == pytest.approx(best, rel=1e-6)


def test_a_started_job_pays_the_checkpoint_on_every_start_and_not_to_run_on():
    inten = np.array([[1, 1, 9, 9, 9.0]])
    paused = OracleJob("a", 0, 2, 5, 1, 1.0, [0], True, 0.5, resumes=True)
    running = OracleJob("a", 0, 2, 5, 1, 1.0, [0], True, 0.5, resumes=True, running=True)
    fresh = OracleJob("a", 0, 2, 5, 1, 1.0, [0], True, 0.5)
    # running on through slots 0 and 1 is free, as is a fresh job's first start
    assert solve([running], inten).emissions_g == pytest.approx(2.0)
    assert solve([fresh], inten).emissions_g == pytest.approx(2.0)
    # a paused job pays the checkpoint to resume: 2.5 slots of work
    assert solve([paused], inten).emissions_g == pytest.approx(1 + 1 + 0.5 * 9)


def test_the_online_optimum_pays_for_not_knowing_the_jobs_to_come():
    # Region 0 is clean with one GPU. The first job takes it at once; the second, which
    # needs it for five slots from slot 1, has to go to the dirty region. Knowing both,
    # the oracle gives region 0 to the long one.
    inten = np.array([[1, 1, 2, 2, 2, 2.0], [10, 10, 10, 10, 10, 10.0]])
    jobs = [fixed("a", 0, 2, 6, regions=(0, 1)), fixed("b", 1, 5, 6, regions=(0, 1))]
    cap = np.array([1.0, 1.0])
    offline = solve(jobs, inten, cap)
    seen = []
    online = solve_online(jobs, inten, cap, progress=lambda *a: seen.append(a))
    assert seen == [(1, 2), (2, 2)]  # one solve per release
    assert offline.emissions_g == pytest.approx(9 + 20)
    assert online.emissions_g == pytest.approx(2 + 50)
    assert online.schedule["a"] == [(0, 0, 2)] and online.schedule["b"] == [(1, 1, 5)]
    assert online.exact and "2 solves" in online.status


def _check_online(jobs, inten, cap, res):
    """Every job does its work (a checkpoint per resume), in one region, between its
    release and its deadline; no slot holds more GPUs than its region has."""
    use = np.zeros_like(inten)
    for j in jobs:
        parts = res.schedule[j.job_id]
        assert len({r for r, _, _ in parts}) == 1
        if not j.interruptible:
            ((r, s, d),) = parts
            assert j.release <= s and s + d <= j.deadline + 1e-6 and d == j.duration
            use[r, s : s + int(np.ceil(d - 1e-9))] += j.gpus
            continue
        slots = sorted(s for _, s, _ in parts)
        runs = 1 + sum(b > a + 1 for a, b in itertools.pairwise(slots))
        done = sum(x for _, _, x in parts)
        assert done == pytest.approx(j.duration + j.overhead * (runs - 1), abs=1e-6)
        assert j.release <= slots[0] and slots[-1] < j.deadline
        for r, s, _ in parts:
            use[r, s] += j.gpus
        cost = sum(x * inten[r, s] for r, s, x in parts) * j.energy_kwh_per_slot
        assert res.per_job_g[j.job_id] == pytest.approx(cost)
    assert np.all(use <= cap[:, None] + 1e-9)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    inten=st.lists(st.floats(1, 500), min_size=24, max_size=24),
    specs=st.lists(
        st.tuples(
            st.integers(0, 5), st.integers(1, 4), st.integers(2, 6), st.integers(1, 2),
            st.booleans(),
        ),
        min_size=1,
        max_size=4,
    ),
    same_release=st.booleans(),
)  # fmt: skip
def test_the_online_optimum_is_feasible_and_never_beats_the_oracle(inten, specs, same_release):
    arr = np.array([inten[:12], inten[12:]])
    cap = np.array([2.0, 2.0])
    jobs = [
        OracleJob(
            f"j{i}", 0 if same_release else rel, float(dur), float(min(rel + dur + slack, 12)),
            g, 1.0, [0, 1], interruptible, 0.25 if interruptible else 0.0,
        )
        for i, (rel, dur, slack, g, interruptible) in enumerate(specs)
    ]  # fmt: skip
    jobs = [j for j in jobs if j.deadline - j.release >= j.duration + 1]
    if not jobs:
        return
    try:
        online = solve_online(jobs, arr, cap)
    except ValidationError:  # what ran first left no room for a later job's deadline
        assert not same_release
        return
    offline = solve(jobs, arr, cap)
    _check_online(jobs, arr, cap, online)
    assert online.emissions_g >= offline.emissions_g * (1 - 1e-6)  # solver tolerance
    if same_release:  # nothing to come: the online optimum is the oracle
        assert online.emissions_g == pytest.approx(offline.emissions_g, rel=1e-6)
