"""`gridshift signals [REGION]`: the grid signal in use per region, where it comes from, how
old it is, and its forecast (a table and a small chart in the terminal; `--png FILE` writes a
chart image when matplotlib is installed; `--json` prints the raw signals).

It builds the signal hub from the configuration (YAML file and GRIDSHIFT_* variables),
with what an agent on the same state_dir has learnt (read from its store, which is not
written), refreshes the regions asked for once, and prints what an agent with that
configuration would use. It needs no running agent. Exit status: 0 when at least one
region has a fresh signal, 3 when none has (every region would fail open).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from typing import TextIO

from ..errors import GridshiftError, NotFound
from ..models import Forecast, RegionSignal

BARS = "▁▂▃▄▅▆▇█"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("region", nargs="?", help="one configured region (default: all)")
    parser.add_argument("--config", help="YAML config file (or GRIDSHIFT_CONFIG)")
    parser.add_argument(
        "--hours", type=float, default=24.0, help="forecast hours to show (default 24)"
    )
    parser.add_argument("--json", action="store_true", help="print the signals as JSON")
    parser.add_argument("--png", metavar="FILE", help="also write a chart of the forecasts")


def run(args: argparse.Namespace) -> int:
    from ..agent import HISTORY_KEY, SKILL_KEY, clock_kind, make_clock
    from ..config import load_settings
    from ..store import peek_meta, peek_meta_json
    from . import build_hub

    settings = load_settings(args.config)
    clock = make_clock(settings)
    hub = build_hub(settings, clock)
    agents_clock = peek_meta(settings.db_url, "clock")
    if agents_clock is not None and agents_clock != clock_kind(settings):
        # its measured values and forecast errors are on the other clock's timeline
        print(
            f"note: the agent on {settings.state_dir} runs on a {agents_clock} clock and this "
            f"command on a {clock_kind(settings)} one, so what it has learnt is not shown; "
            "give this command the agent's clock settings (GRIDSHIFT_CLOCK_SPEED, "
            "GRIDSHIFT_CLOCK_ORIGIN, GRIDSHIFT_CLOCK_START) to see its view",
            file=sys.stderr,
        )
    else:
        # what an agent on this state_dir has learnt: each forecast's error, and the values
        # it measured (its own forecast where no provider gives one)
        for key, restore in ((SKILL_KEY, hub.restore_skill), (HISTORY_KEY, hub.restore_history)):
            saved = peek_meta_json(settings.db_url, key)
            if isinstance(saved, dict):
                restore(saved)
    regions = [args.region] if args.region else hub.regions
    unknown = [r for r in regions if r not in hub.regions]
    if unknown:
        raise NotFound(
            f"region {unknown[0]!r} is not configured; configured regions: "
            f"{', '.join(hub.regions) or 'none'}"
        )
    for region in regions:
        hub.refresh(region)
    signals = {region: hub.region_signal(region) for region in regions}
    now = clock.now()
    if args.json:
        payload = {
            "now": now.isoformat(),
            "regions": {r: s.model_dump(mode="json") for r, s in signals.items()},
        }
        print(json.dumps(payload, indent=2))
    else:
        render(signals, now, args.hours, sys.stdout)
    if args.png:
        write_png(signals, now, args.hours, args.png)
        if not args.json:
            print(f"\nchart written to {args.png}")
    return 0 if any(s.fresh for s in signals.values()) else 3


# ---------------------------------------------------------------------------------------------
# Text


def _age(age_s: float | None) -> str:
    if age_s is None:
        return "-"
    if age_s < 90:
        return f"{age_s:.0f} s"
    if age_s < 90 * 60:
        return f"{age_s / 60:.0f} min"
    return f"{age_s / 3600:.1f} h"


def hourly(forecast: Forecast, now: datetime, hours: float) -> list[tuple[datetime, float]]:
    """Time-weighted mean per clock hour from now's hour to now + hours."""
    end = now + timedelta(hours=hours)
    first = now.replace(minute=0, second=0, microsecond=0)
    rows: list[tuple[datetime, float]] = []
    hour = first
    while hour < end:
        h_end = hour + timedelta(hours=1)
        weight = total = 0.0
        for p in forecast.points:
            overlap = (min(p.end, h_end) - max(p.start, hour)).total_seconds()
            if overlap > 0:
                weight += overlap
                total += overlap * p.intensity_g_per_kwh
        if weight > 0:
            rows.append((hour, total / weight))
        hour = h_end
    return rows


def sparkline(values: list[float]) -> str:
    if not values:
        return ""
    lo, hi = min(values), max(values)
    span = hi - lo
    return "".join(
        BARS[0 if span == 0 else min(len(BARS) - 1, int((v - lo) / span * len(BARS)))]
        for v in values
    )


def render(signals: dict[str, RegionSignal], now: datetime, hours: float, out: TextIO) -> None:
    print(f"grid signals at {now.astimezone(UTC):%Y-%m-%d %H:%M}Z", file=out)
    header = f"{'REGION':<12} {'g/kWh':>8}  {'KIND':<18} {'PROVIDER':<14} {'AGE':>8}  STATUS"
    print(header, file=out)
    for region, sig in signals.items():
        if sig.current is not None:
            value = f"{sig.current.intensity_g_per_kwh:8.1f}"
            kind = f"{sig.current.kind.value}/{sig.current.basis.value}"
        else:
            value, kind = f"{'-':>8}", "-"
        status = "fresh" if sig.fresh else "STALE: fail open"
        if sig.current is None:
            status = "UNKNOWN: fail open"
        print(
            f"{region:<12} {value}  {kind:<18} {sig.provider or '-':<14} "
            f"{_age(sig.age_s):>8}  {status}",
            file=out,
        )
        if sig.error:
            print(f"{'':<12} errors: {sig.error}", file=out)
    for region, sig in signals.items():
        print(file=out)
        fc = sig.forecast
        if fc is None or not fc.points:
            print(f"{region}: no forecast in use", file=out)
            continue
        rows = hourly(fc, now, hours)
        issued = f"issued {fc.issued_at:%Y-%m-%d %H:%M}Z"
        print(
            f"{region}: forecast from {fc.provider} ({fc.kind.value}, {issued}), "
            f"next {hours:g} h, hourly means in g/kWh",
            file=out,
        )
        if not rows:
            print("  (no points in that horizon)", file=out)
            continue
        values = [v for _, v in rows]
        low_at = rows[values.index(min(values))][0]
        print(
            f"  {sparkline(values)}  min {min(values):.0f} at {low_at:%H:%M}Z, "
            f"max {max(values):.0f}",
            file=out,
        )
        for i in range(0, len(rows), 6):
            chunk = rows[i : i + 6]
            print("  " + "  ".join(f"{t:%d %H:%M} {v:6.1f}" for t, v in chunk), file=out)


# ---------------------------------------------------------------------------------------------
# Image


def write_png(signals: dict[str, RegionSignal], now: datetime, hours: float, path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.dates as mdates
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise GridshiftError(
            "--png needs matplotlib; install it with: pip install 'gridshift[sim]'"
        ) from exc
    fig, ax = plt.subplots(figsize=(9, 4))
    end = now + timedelta(hours=hours)
    drawn = 0
    for region, sig in signals.items():
        fc = sig.forecast
        if fc is None:
            continue
        pts = [p for p in fc.points if p.end > now and p.start < end]
        if not pts:
            continue
        xs = mdates.date2num([p.start for p in pts] + [pts[-1].end])
        ys = [p.intensity_g_per_kwh for p in pts] + [pts[-1].intensity_g_per_kwh]
        ax.step(xs, ys, where="post", label=f"{region} ({fc.provider}, {fc.kind.value})")
        drawn += 1
    ax.axvline(float(mdates.date2num(now)), color="grey", linestyle=":", linewidth=1)
    ax.xaxis_date()
    ax.set_ylabel("gCO2eq/kWh")
    ax.set_xlabel("UTC")
    ax.set_title("Grid carbon-intensity forecast")
    if drawn:
        ax.legend(loc="best", fontsize="small")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
