"""Text tables and PNG plots (matplotlib, Agg backend) of simulation results."""

from __future__ import annotations

import csv
import io
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from .suite import SuiteResult
from .traces import RegionTrace


def table(suite: SuiteResult, title: str = "") -> str:
    ref = suite.results[suite.reference]
    lines = []
    if title:
        lines.append(title)
    lines.append(
        f"{'policy':28s} {'emissions kg':>12s} {'saving %':>9s} {'of oracle':>9s} "
        f"{'wait h':>7s} {'delay h':>7s} {'missed':>6s} {'suspends':>8s}"
    )
    for name, res in suite.results.items():
        cap = suite.capture(name)
        lines.append(
            f"{name:28s} {res.emissions_g / 1000:12.2f} {suite.saving_pct(name):9.2f} "
            f"{'' if math.isnan(cap) else f'{100 * cap:8.1f}%':>9s} {res.mean_wait_h:7.2f} "
            f"{res.mean_delay_h:7.2f} {res.missed:6d} {sum(j.suspensions for j in res.jobs):8d}"
        )
    base = ref.emissions_g
    if not math.isnan(suite.oracle_g) or not math.isnan(suite.oracle_bound_g):
        best = suite.oracle_best_g
        pct = 100 * (base - best) / base if base else 0.0
        pct = 0.0 if abs(pct) < 0.005 else pct  # the solver's tolerance, not "-0.00"
        if suite.oracle_exact:
            lines.append(
                f"{'oracle (MILP, perfect)':28s} {best / 1000:12.2f} {pct:9.2f} {'100.0%':>9s}"
            )
        else:
            found = (
                "none found"
                if math.isnan(suite.oracle_g)
                else f"best found {suite.oracle_g / 1000:.2f} kg"
            )
            lines.append(
                f"{'oracle bound (MILP, perfect)':28s} {best / 1000:12.2f} {pct:9.2f} "
                f"{'100.0%':>9s}  (time limit: {found}; shares of the bound are lower bounds)"
            )
    if not math.isnan(suite.online_g):
        pct = suite.online_saving_pct
        share = "" if math.isnan(suite.online_capture) else f"{100 * suite.online_capture:8.1f}%"
        lines.append(
            f"{'online optimum (MILP)':28s} {suite.online_g / 1000:12.2f} {pct:9.2f} "
            f"{share:>9s}  (exact at each arrival, perfect intensity, jobs to come unknown"
            f"{'' if suite.online_exact else '; some solves stopped at their time limit'})"
        )
    lines.extend(suite.notes)
    return "\n".join(lines)


JOB_COLUMNS = (
    "policy",
    "job_id",
    "region",
    "submitted",
    "first_start",
    "end",
    "deadline",
    "wait_h",
    "delay_h",
    "energy_kwh",
    "emissions_g",
    "saving_g",
    "suspensions",
    "missed",
)


def jobs_csv(suite: SuiteResult) -> str:
    """Every job under every policy, one row each: where and when it ran, its emissions and
    its saving against the reference policy (running at submission) for the same job."""
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(JOB_COLUMNS)
    ref = {j.job_id: j.emissions_g for j in suite.results[suite.reference].jobs}

    def iso(ts: float | None) -> str:
        return "" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%MZ")

    for name, res in suite.results.items():
        for j in res.jobs:
            out.writerow(
                (
                    name,
                    j.job_id,
                    j.region or "",
                    iso(j.submitted_s),
                    iso(j.first_start_s),
                    iso(j.end_s),
                    iso(j.deadline_s),
                    f"{j.wait_s / 3600:.2f}",
                    f"{j.delay_s / 3600:.2f}",
                    f"{j.energy_kwh:.4f}",
                    f"{j.emissions_g:.1f}",
                    f"{ref[j.job_id] - j.emissions_g:.1f}" if j.job_id in ref else "",
                    j.suspensions,
                    int(j.missed),
                )
            )
    return buf.getvalue()


def plots(
    suite: SuiteResult, traces: dict[str, RegionTrace], out_dir: Path, stem: str
) -> list[Path]:
    """intensity with job placements (gridshift and run-now), and savings by policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    names = list(traces)
    fig, axes = plt.subplots(len(names), 1, figsize=(12, 3.2 * len(names)), squeeze=False)
    for ax, name in zip(axes[:, 0], names, strict=True):
        tr = traces[name]
        hours = np.arange(len(tr)) * tr.slot_s / 3600
        ax.plot(hours, tr.values, color="0.3", lw=1, label=f"{name} intensity")
        for pol, color, off in (("run-now", "tab:red", 0.97), ("gridshift", "tab:green", 0.9)):
            res = suite.results.get(pol)
            if res is None:
                continue
            used = np.zeros(len(tr))
            for j in res.jobs:
                for r, t in j.run_slots:
                    if r == name and t < len(tr):
                        used[t] += 1
            top = float(np.max(tr.values)) * off
            ys = np.where(used > 0, top, np.nan)
            ax.plot(hours, ys, "|", color=color, ms=8, label=f"{pol} running")
        ax.set_ylabel("g/kWh")
        ax.legend(loc="lower right", fontsize=8)
    axes[-1, 0].set_xlabel("hours from the start of the trace")
    fig.tight_layout()
    p = out_dir / f"{stem}_placements.png"
    fig.savefig(p, dpi=90)
    plt.close(fig)
    written.append(p)
    fig, ax = plt.subplots(figsize=(8, 4))
    pols = [n for n in suite.results if n != suite.reference]
    vals = [suite.saving_pct(n) for n in pols]
    bars = ax.bar(pols, vals, color=["tab:green" if n == "gridshift" else "tab:gray" for n in pols])
    if not math.isnan(suite.oracle_best_g):
        base = suite.results[suite.reference].emissions_g
        label = "oracle" if suite.oracle_exact else "oracle (solver bound)"
        ax.axhline(100 * (base - suite.oracle_best_g) / base, color="k", ls="--", label=label)
    if not math.isnan(suite.online_g):
        ax.axhline(suite.online_saving_pct, color="k", ls=":", label="online optimum")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    ax.bar_label(bars, fmt="%.1f")
    ax.set_ylabel("saving vs run-at-submission, %")
    ax.set_title(f"{stem} ({suite.forecast} forecast)")
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig.tight_layout()
    p = out_dir / f"{stem}_savings.png"
    fig.savefig(p, dpi=90)
    plt.close(fig)
    written.append(p)
    return written
