"""How much of the oracle's saving can a planner keep when the forecast carries 10 %
independent noise? Not a test: it prints figures.

    .venv/bin/python -m tests.bench.bench_noise_bound              # the four flattest grids
    .venv/bin/python -m tests.bench.bench_noise_bound de gb --seeds 0 1 2
    .venv/bin/python -m tests.bench.bench_noise_bound us-soco us-azps --scenario ml

The jobs are the benchmark's: nightly (30 minutes, anywhere within +/-8 h of 01:00 UTC), or
with `--scenario ml` its ML jobs that cannot be paused (4-89 h, submitted in working hours,
latest start at 09:00 of the next workday, the same draw for the same seed); hourly slots.
For each job a family of Bayesian planners reads the forecast (actual + N(0, (0.1 x
mean)^2) per target slot, the slot now measured) through a Gaussian-process prior: a
smooth part (squared exponential) plus a daily part (periodic, fading over days), with the
noise variance known. The process is also observed, nearly exactly, in the hours measured
before now (`--history-h`, default 72; 0 reads the forecast alone, as gridshift does), so
the daily part can carry the last days' measured shape forward. Two decision rules:
re-decide every hour and start when no later start is expected cleaner over the job's
length than now (as gridshift does), or pick the expected-cleanest start once at
submission; neither has a margin or a minimum gain. Priors are swept over the weight of
the daily part, the time scale and the fading. The figure is the share of the oracle's
saving (perfect knowledge, the cleanest start of each job) kept, summed over the jobs and
weighted by their GPUs; the best member of the family is an estimate of what reading the
forecast this way can give, to compare with gridshift's figure in the benchmark.
"""

from __future__ import annotations

import argparse
import math
from datetime import UTC, datetime
from functools import cache

import numpy as np

from gridshift.scheduler.sim.jobs import scenario_jobs
from gridshift.scheduler.sim.traces import DAY_S, NoisyForecast, RegionTrace, region_trace

from .bench_policies import CARBON, HISTORY_DAYS, REGIONS, SLOT_S

PRIORS = [  # (weight of the smooth part, of the daily part, time scale h, fading h)
    (0.5, 0.5, 3.0, 72.0),
    (0.3, 0.7, 3.0, 72.0),
    (0.5, 0.5, 2.0, 48.0),
    (0.2, 0.8, 4.0, 120.0),
    (0.5, 0.5, 3.0, 1e9),
]


def kernel(ti: np.ndarray, tj: np.ndarray, prior: tuple[float, ...], var: float) -> np.ndarray:
    w_se, w_day, scale_h, fade_h = prior
    d = ti[:, None] - tj[None, :]
    smooth = w_se * np.exp(-0.5 * (d / scale_h) ** 2)
    daily = w_day * np.exp(-2 * np.sin(np.pi * d / 24) ** 2) * np.exp(-0.5 * (d / fade_h) ** 2)
    out: np.ndarray = var * (smooth + daily)
    return out


@cache
def _trace(region: str) -> RegionTrace:
    """A region's whole trace, read once (each member of the family takes a window of it)."""
    return region_trace(CARBON / REGIONS[region], SLOT_S, region)


def capture(
    region: str,
    prior: tuple[float, ...],
    seed: int,
    once: bool,
    days: int,
    history_h: int,
    scenario: str = "nightly",
    error: float = 0.10,
) -> float:
    """Share of the oracle's saving kept by one member of the family (`prior`, `once`) on
    one region's jobs, with forecast errors of sd `error` x the trace's mean."""
    full = _trace(region)
    start_s = full.origin_s + HISTORY_DAYS * DAY_S
    tail = 2 if scenario == "nightly" else 8  # ML deadlines run up to a week past submission
    trace = full.window(start_s - HISTORY_DAYS * DAY_S, HISTORY_DAYS + days + tail)
    actual = trace.values
    eps = NoisyForecast(trace, error, seed).eps
    sd = error * float(actual.mean())
    var = float(actual.var())
    jobs = scenario_jobs(
        scenario, datetime.fromtimestamp(start_s, UTC), days, [region], SLOT_S, seed
    )
    run_now = oracle = chosen = 0.0
    for job in jobs:
        first = trace.slot_of(job.submitted_at.timestamp())
        last = trace.slot_of(job.deadline.timestamp() - job.spec.expected_duration_s)
        # the job's weight on each slot it runs in (a part of the last one), times its GPUs
        length = job.spec.expected_duration_s / SLOT_S
        w = np.ones(math.ceil(length))
        w[-1] = length - (w.size - 1)
        w *= max(1, job.spec.gpus)

        def cost(row: np.ndarray, s: int, w: np.ndarray = w) -> float:
            return float(row[s : s + w.size] @ w)

        t = first
        while t < last:
            # the forecast a day ahead at least, as far as the job could run
            ahead = np.arange(t + 1, min(max(t + 24, last + w.size), len(actual)))
            past = np.arange(max(0, t - history_h), t)
            times = np.concatenate([past, [t], ahead]).astype(float)
            seen = np.concatenate([actual[past], [actual[t]], actual[ahead] + eps[ahead]])
            level = float(actual[max(0, t - 168) : t].mean())
            k = kernel(times, times, prior, var)
            # measured hours: a small nugget for what the prior's shape does not capture
            measured = np.full(past.size + 1, 0.01 * var)
            measured[-1] = 1e-6
            k[np.diag_indices_from(k)] += np.concatenate([measured, np.full(ahead.size, sd**2)])
            post = level + kernel(ahead.astype(float), times, prior, var) @ np.linalg.solve(
                k, seen - level
            )
            row = np.concatenate([actual[: t + 1], post])  # slot t measured, then expected
            later = [cost(row, c) for c in range(t + 1, last + 1)]
            now = cost(row, t)
            if once:
                t = t + 1 + int(np.argmin(later)) if min(later) < now else t
                break
            if now <= min(later):
                break
            t += 1
        run_now += cost(actual, first)
        oracle += min(cost(actual, s) for s in range(first, last + 1))
        chosen += cost(actual, t)
    return float((run_now - chosen) / (run_now - oracle))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("regions", nargs="*", default=["us-soco", "us-bpat", "us-cal-ciso", "us-azps"])
    ap.add_argument("--seeds", nargs="*", type=int, default=[0])
    ap.add_argument(
        "--scenario",
        choices=["nightly", "ml"],
        default="nightly",
        help="nightly jobs, or the benchmark's ML jobs that cannot be paused (drawn by --seeds)",
    )
    ap.add_argument("--days", type=int, help="days of jobs (default: 28 nightly, 5 ML)")
    ap.add_argument("--history-h", type=int, default=72, help="measured hours before now (0: none)")
    args = ap.parse_args(argv)
    days = args.days or (28 if args.scenario == "nightly" else 5)
    for region in args.regions:
        for seed in args.seeds:
            cells = []
            best = -np.inf
            for prior in PRIORS:
                every, once = (
                    capture(region, prior, seed, once, days, args.history_h, args.scenario)
                    for once in (False, True)
                )
                best = max(best, every, once)
                cells.append(f"{100 * every:5.1f}/{100 * once:5.1f}")
            print(
                f"{region:12s} seed {seed}: best {100 * best:5.1f} %  "
                f"(per prior, every hour/once: {'  '.join(cells)})",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
