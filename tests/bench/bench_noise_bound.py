"""How much of the oracle's saving can a planner keep on nightly jobs when the forecast
carries 10 % independent noise? Not a test: it prints figures.

    .venv/bin/python -m tests.bench.bench_noise_bound              # the four flattest grids
    .venv/bin/python -m tests.bench.bench_noise_bound de gb --seeds 0 1 2

For each nightly job (30 minutes, anywhere within +/-8 h of 01:00 UTC, hourly slots) a
family of Bayesian planners reads the forecast (actual + N(0, (0.1 x mean)^2) per target
slot, the slot now measured) through a Gaussian-process prior: a smooth part (squared
exponential) plus a daily part (periodic, fading over days), with the noise variance
known. The process is also observed, nearly exactly, in the hours measured before now
(`--history-h`, default 72; 0 reads the forecast alone, as gridshift does), so the daily
part can carry the last days' measured shape forward. Two decision rules: re-decide every
hour and start when nothing later is expected cleaner than now (as gridshift does), or
pick the expected-cleanest slot once at submission. Priors are swept over the weight of
the daily part, the time scale and the fading. The figure is the share of the oracle's
saving (perfect knowledge) kept, summed over the jobs; the best member of the family is an
estimate of what reading the forecast this way can give, to compare with gridshift's
figure in the benchmark.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

import numpy as np

from gridshift.scheduler.sim.jobs import nightly_jobs
from gridshift.scheduler.sim.traces import DAY_S, NoisyForecast, region_trace

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


def capture(
    region: str, prior: tuple[float, ...], seed: int, once: bool, days: int, history_h: int
) -> float:
    full = region_trace(CARBON / REGIONS[region], SLOT_S, region)
    start_s = full.origin_s + HISTORY_DAYS * DAY_S
    trace = full.window(start_s - HISTORY_DAYS * DAY_S, HISTORY_DAYS + days + 2)
    actual = trace.values
    eps = NoisyForecast(trace, 0.10, seed).eps
    sd = 0.10 * float(actual.mean())
    var = float(actual.var())
    run_now = oracle = chosen = 0.0
    for job in nightly_jobs(datetime.fromtimestamp(start_s, UTC), days, [region]):
        first = trace.slot_of(job.submitted_at.timestamp())
        last = trace.slot_of(job.deadline.timestamp() - job.spec.expected_duration_s)
        t = first
        while t < last:
            ahead = np.arange(t + 1, min(t + 24, len(actual)))
            past = np.arange(max(0, t - history_h), t)
            times = np.concatenate([past, [t], ahead]).astype(float)
            seen = np.concatenate([actual[past], [actual[t]], actual[ahead] + eps[ahead]])
            level = float(actual[max(0, t - 168) : t].mean())
            k = kernel(times, times, prior, var)
            # measured hours: a small nugget for what the prior's shape does not capture
            measured = np.full(past.size + 1, 0.01 * var)
            measured[-1] = 1e-6
            k[np.diag_indices_from(k)] += np.concatenate([measured, np.full(ahead.size, sd**2)])
            cand = np.arange(t + 1, last + 1)
            post = level + kernel(cand.astype(float), times, prior, var) @ np.linalg.solve(
                k, seen - level
            )
            if once:
                t = int(cand[np.argmin(post)]) if post.min() < actual[t] else t
                break
            if actual[t] <= post.min():
                break
            t += 1
        run_now += actual[first]
        oracle += actual[first : last + 1].min()
        chosen += actual[t]
    return float((run_now - chosen) / (run_now - oracle))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("regions", nargs="*", default=["us-soco", "us-bpat", "us-cal-ciso", "us-azps"])
    ap.add_argument("--seeds", nargs="*", type=int, default=[0])
    ap.add_argument("--days", type=int, default=28)
    ap.add_argument("--history-h", type=int, default=72, help="measured hours before now (0: none)")
    args = ap.parse_args(argv)
    for region in args.regions:
        for seed in args.seeds:
            cells = []
            best = -np.inf
            for prior in PRIORS:
                every, once = (
                    capture(region, prior, seed, once, args.days, args.history_h)
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
