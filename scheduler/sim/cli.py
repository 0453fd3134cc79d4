"""`gridshift simulate`: replay a carbon trace and a job trace through the planner and the
baselines with a fake clock, and write a report (table + PNG plots).

    gridshift simulate TRACE.csv --scenario ml-interruptible --forecast noise10 --out report/
    gridshift simulate de --data-dir ../traces --days 14
    gridshift simulate de gb no --data-dir ../traces --scenario ml --capacity 48

TRACE is a CSV file in any layout the replay provider reads, a region name matched against
the files in --data-dir (e.g. `de` finds de_2023_...csv, the most recent one), or `bundled`
(the trace shipped with gridshift). With several traces (of the same period), every job may
run in any of their regions: gridshift relocates it, the baselines run it in its home
region (the regions taken in turn), and --capacity applies to each region.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from ..errors import ConfigError
from .jobs import SCENARIOS

FORECASTS = ("perfect", "noise5", "noise10", "noise20", "realistic", "historical")


def _at_least(low: float, kind: type[int] | type[float] = int) -> Callable[[str], int | float]:
    """An argparse type: a number of `kind` no smaller than `low`."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not value >= low:  # NaN too
            raise argparse.ArgumentTypeError(f"{text} must be at least {low:g}")
        return value

    return parse


def _share(text: str) -> float:
    value = _at_least(0, float)(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text} must be between 0 and 1")
    return value


def _gpu_mix(text: str) -> tuple[int, ...]:
    try:
        mix = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: GPU counts separated by commas") from None
    if any(g < 0 for g in mix):
        raise argparse.ArgumentTypeError(f"{text!r}: GPU counts cannot be negative")
    return mix


def _option(dest: str) -> str:
    """The command-line spelling of an argument's name: gpu_mix -> --gpu-mix."""
    return "--" + dest.replace("_", "-")


GENERATOR = {
    "arrivals_per_hour": "per_hour",
    "mean_duration_h": "mean_duration_h",
    "max_delay_h": "max_delay_h",
    "interruptible_share": "interruptible_share",
    "gpu_mix": "gpu_mix",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "trace", nargs="+", help="CSV file, region name (with --data-dir) or 'bundled'"
    )
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("GRIDSHIFT_TRACE_DIR"),
        help="folder of traces to look region names up in (env GRIDSHIFT_TRACE_DIR)",
    )
    parser.add_argument(
        "--scenario", choices=SCENARIOS, default=None, help="generated jobs (default: nightly)"
    )
    parser.add_argument(
        "--jobs",
        type=Path,
        default=None,
        help="a job trace instead of a scenario: jobs as `gridshift list --json` prints them "
        "(JSON array or JSON Lines), moved by whole days to --start-day",
    )
    gen = parser.add_argument_group("the 'mixed' scenario's generator")
    gen.add_argument(
        "--arrivals-per-hour", type=_at_least(1e-3, float), help="mean arrivals (Poisson; 2)"
    )
    gen.add_argument(
        "--mean-duration-h", type=_at_least(0.01, float), help="mean duration (exponential; 3)"
    )
    gen.add_argument(
        "--max-delay-h",
        type=_at_least(0, float),
        help="delay allowed past the duration, drawn uniformly up to this (12)",
    )
    gen.add_argument("--interruptible-share", type=_share, help="share of interruptible jobs (0.3)")
    gen.add_argument(
        "--gpu-mix", type=_gpu_mix, help="GPU counts drawn from, e.g. 1,1,2,4,8 (the default)"
    )
    parser.add_argument("--forecast", choices=FORECASTS, default="perfect")
    parser.add_argument(
        "--forecast-archive", help="issued forecasts (request_time,forecast_time,value)"
    )
    parser.add_argument("--policies", nargs="*", default=None, help="default: all")
    parser.add_argument(
        "--days", type=_at_least(1), default=None, help="days of job submissions (14)"
    )
    parser.add_argument(
        "--start-day",
        type=_at_least(0),
        default=8,
        help="days after the trace start (history before)",
    )
    parser.add_argument(
        "--slot-s", type=_at_least(60, float), default=3600.0, help="simulation resolution"
    )
    parser.add_argument("--capacity", type=_at_least(1), default=None, help="GPUs in each region")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-oracle", action="store_true", help="skip the MILP oracle")
    parser.add_argument(
        "--online-optimum",
        action="store_true",
        help="also solve the online optimum: exact at each arrival, jobs to come unknown",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for report.txt, jobs.csv and PNGs"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def resolve_trace(name: str, data_dir: str | None) -> Path:
    path = Path(name)
    if path.is_file():
        return path
    if path.suffix.lower() in (".csv", ".gz") or "/" in name:
        raise ConfigError(f"{name}: no such file")
    if name == "bundled":
        from ..signals.replay import bundled_trace_path

        return bundled_trace_path()
    if data_dir:
        if not Path(data_dir).is_dir():
            raise ConfigError(f"--data-dir {data_dir}: no such folder")
        matches = sorted(
            p
            for p in Path(data_dir).glob(f"{name.lower()}_*")
            if p.suffix in (".csv", ".gz") and "forecast" not in p.name
        )
        if matches:
            return matches[-1]
    raise ConfigError(
        f"no trace {name!r}: give a CSV path, 'bundled', or a region name with --data-dir "
        "(or GRIDSHIFT_TRACE_DIR) pointing at a folder of traces"
    )


def run(args: argparse.Namespace) -> int:
    import numpy as np

    generator_flags = [flag for flag in GENERATOR if getattr(args, flag) is not None]
    generator = {GENERATOR[flag]: getattr(args, flag) for flag in generator_flags}
    if args.jobs is not None:
        given = [
            _option(flag)
            for flag in ("scenario", "days", *GENERATOR)
            if getattr(args, flag) is not None
        ]
        if given:
            raise ConfigError(
                f"{', '.join(given)}: not with --jobs (the job trace is the scenario)"
            )
        if not args.jobs.is_file():
            raise ConfigError(f"--jobs {args.jobs}: no such file")
    else:
        args.scenario = args.scenario or "nightly"
        args.days = args.days or 14
        if generator and args.scenario != "mixed":
            flags = ", ".join(_option(f) for f in generator_flags)
            raise ConfigError(f"{flags}: only with --scenario mixed (the generated jobs)")
    try:
        from .jobs import load_jobs, scenario_jobs, spread_home_regions
        from .report import jobs_csv, plots, table
        from .suite import POLICIES, run_suite
        from .traces import DAY_S, RegionTrace, aligned_windows, make_forecast, region_trace
    except ImportError as exc:  # scipy (the oracle) or matplotlib (the plots) missing
        raise ConfigError(
            f"gridshift simulate needs the 'sim' extra ({exc.name} is missing): "
            "pip install 'gridshift[sim]'"
        ) from None

    paths = [resolve_trace(name, args.data_dir) for name in args.trace]
    fulls: dict[str, RegionTrace] = {}
    for path in paths:
        name = path.name.split("_")[0].split(".")[0]
        if name in fulls:
            raise ConfigError(f"region {name} is given twice")
        fulls[name] = region_trace(path, args.slot_s, name)
    regions = list(fulls)
    start_s = max(t.origin_s for t in fulls.values()) + args.start_day * DAY_S
    start = datetime.fromtimestamp(start_s, UTC)
    if args.jobs is not None:
        jobs, shift_d = load_jobs(args.jobs, start, regions, args.slot_s)
        end_s = max(j.deadline.timestamp() for j in jobs)
        # the trace must reach the last deadline
        args.days = max(1, math.ceil((end_s - start_s) / DAY_S))
        span_d = args.start_day + args.days
        scenario = f"{args.jobs.name} (moved {shift_d:+d} days)"
    else:
        jobs = scenario_jobs(
            args.scenario,
            start,
            args.days,
            regions,
            args.slot_s,
            seed=args.seed,
            generator=generator,
        )
        span_d = args.start_day + args.days + 8
        scenario = args.scenario
    needed_d = args.start_day + args.days
    if len(fulls) == 1:
        full = fulls[regions[0]]
        traces = {regions[0]: full.window(start_s - args.start_day * DAY_S, span_d)}
        if len(traces[regions[0]]) * args.slot_s < needed_d * DAY_S:
            raise ConfigError(
                f"{paths[0].name} covers {len(full) * args.slot_s / DAY_S:.1f} days; it needs "
                f"{needed_d} ("
                + (
                    "the job trace runs that long after --start-day"
                    if args.jobs is not None
                    else "use fewer --days or a smaller --start-day"
                )
                + ")"
            )
    else:
        traces = aligned_windows(fulls, start_s - args.start_day * DAY_S, span_d)
    archive = Path(args.forecast_archive) if args.forecast_archive else None
    models = {}
    for i, (region, trace) in enumerate(traces.items()):
        found = archive
        if args.forecast == "historical" and found is None and args.data_dir:
            matches = sorted(Path(args.data_dir).glob(f"{region}_*forecast*.csv"))
            found = matches[-1] if matches else None
        models[region] = make_forecast(args.forecast, trace, seed=args.seed + i, archive=found)
    if len(regions) > 1 and args.jobs is None:
        jobs = spread_home_regions(jobs, regions)
    if not jobs:
        hint = (
            " (a nightly job is submitted at 17:00 the evening before its night, so the first "
            "day has none)"
            if args.scenario == "nightly"
            else ""
        )
        raise ConfigError(f"the scenario produced no jobs in that period; use more --days{hint}")
    policies = list(args.policies or POLICIES)
    week = int(7 * DAY_S / args.slot_s)
    thresholds = {}
    for region, full in fulls.items():
        at = full.slot_of(start_s)
        thresholds[region] = float(np.median(full.values[max(0, at - week) : at]))
    t0 = time.perf_counter()
    suite = run_suite(
        traces,
        models,
        jobs,
        policies,
        forecast_name=args.forecast,
        capacity_gpus={region: args.capacity for region in regions},
        threshold_g_per_kwh=thresholds,
        with_oracle=not args.no_oracle,
        progress=not args.quiet,
        with_online=args.online_optimum,
    )
    levels = ", ".join(f"{r} {v:.0f}" for r, v in thresholds.items())
    title = (
        f"{', '.join(p.name for p in paths)}: {scenario}, {len(jobs)} "
        f"job{'' if len(jobs) == 1 else 's'} over {args.days} day{'' if args.days == 1 else 's'}, "
        f"{args.forecast} forecast, threshold {levels} g/kWh"
        f"{'' if args.capacity is None else f', {args.capacity} GPUs per region'} "
        f"({time.perf_counter() - t0:.1f} s)"
    )
    text = table(suite, title)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "report.txt").write_text(text + "\n", encoding="utf-8")
        (args.out / "jobs.csv").write_text(jobs_csv(suite), encoding="utf-8")
        try:
            stem = args.scenario or args.jobs.stem
            written = plots(suite, traces, args.out, f"{'-'.join(regions)}_{stem}")
        except ImportError:
            raise ConfigError(
                "the plots need matplotlib: pip install 'gridshift[sim]' "
                "(report.txt and jobs.csv are written)"
            ) from None
        for p in written:
            print(f"wrote {p}", file=sys.stderr)
    return 0
