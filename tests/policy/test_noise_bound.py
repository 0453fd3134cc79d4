"""The noise-bound benchmark's planners on the real traces: with a nearly exact forecast
they keep the whole of the oracle's saving (so the window sums over a job's length and the
oracle agree), and with 10 % noise on a flat grid they keep clearly less."""

from __future__ import annotations

import pytest

from tests.bench.bench_noise_bound import PRIORS, capture


def test_a_nearly_exact_forecast_keeps_the_oracles_saving_on_jobs_of_many_hours(shared_carbon):
    for once in (False, True):
        share = capture("us-bpat", PRIORS[0], 0, once, 2, 24, "ml", error=0.001)
        assert share == pytest.approx(1.0, abs=0.002)


def test_a_nearly_exact_forecast_keeps_the_oracles_saving_on_nightly_jobs(shared_carbon):
    share = capture("us-bpat", PRIORS[0], 0, False, 7, 24, "nightly", error=0.0001)
    assert share == pytest.approx(1.0, abs=0.002)


def test_noise_costs_part_of_the_saving_on_a_flat_grid(shared_carbon):
    exact = capture("us-soco", PRIORS[0], 0, False, 28, 24, "nightly", error=0.0001)
    noisy = capture("us-soco", PRIORS[0], 0, False, 28, 24, "nightly", error=0.10)
    assert noisy < exact - 0.1
