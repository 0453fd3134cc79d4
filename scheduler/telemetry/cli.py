"""`gridshift gpus`: the GPUs on this host with power, energy, limits and the job on each.

Reads NVML directly, so it works without a running agent. If the agent's API answers (at
--api, or as for the other client commands), the job running on each GPU is shown too.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import requests

from ..clock import SystemClock
from ..config import default_api_url
from ..errors import TelemetryError
from .nvml import NvmlTelemetry


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    if not any("--api" in a.option_strings for a in parser._actions):
        parser.add_argument(
            "--api",
            default=default_api_url(),
            help="agent URL, to show the job on each GPU (optional)",
        )
    parser.add_argument(
        "--no-api", action="store_true", help="do not ask the agent which job runs where"
    )


def jobs_by_gpu(api: str, timeout_s: float = 1.0) -> dict[int, list[str]]:
    """Running jobs per GPU index from the agent's API; empty if the agent does not answer."""
    try:
        resp = requests.get(
            api.rstrip("/") + "/jobs", params={"state": "running"}, timeout=timeout_s
        )
        resp.raise_for_status()
        jobs = resp.json()
    except (requests.RequestException, ValueError):
        return {}
    out: dict[int, list[str]] = {}
    for job in jobs if isinstance(jobs, list) else []:
        for gpu in job.get("gpus_assigned") or []:
            out.setdefault(int(gpu), []).append(str(job.get("id")))
    return out


def collect(telemetry: NvmlTelemetry, jobs: dict[int, list[str]]) -> list[dict[str, Any]]:
    rows = []
    samples = {s.index: s for s in telemetry.sample()}
    for dev in telemetry.devices():
        s = samples.get(dev.index)
        lim = dev.limits
        rows.append(
            {
                "index": dev.index,
                "uuid": dev.uuid,
                "name": dev.name,
                "mig": dev.mig_enabled,
                "lost": s is None,
                "power_w": s.power_w if s else None,
                "power_avg_w": s.power_avg_w if s else None,
                "energy_j": s.energy_j if s else None,
                "power_limit_w": s.power_limit_w if s else (lim.current_w if lim else None),
                "default_limit_w": lim.default_w if lim else None,
                "min_limit_w": lim.min_w if lim else None,
                "max_limit_w": lim.max_w if lim else None,
                "utilization_pct": s.utilization_pct if s else None,
                "jobs": jobs.get(dev.index, []),
            }
        )
    return rows


def _fmt(value: Any, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def run(args: argparse.Namespace) -> int:
    telemetry = NvmlTelemetry(SystemClock(), energy_every_s=0)
    try:
        jobs = {} if args.no_api else jobs_by_gpu(args.api)
        rows = collect(telemetry, jobs)
    except TelemetryError as exc:
        print(f"GPU telemetry is off on this host: {exc}", file=sys.stderr)
        return 1
    finally:
        telemetry.close()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("NVML sees no GPU on this host.")
        return 0
    header = (
        f"{'GPU':>3}  {'NAME':<24} {'UUID':<40} {'MIG':<3} {'POWER W':>8} {'ENERGY kJ':>10} "
        f"{'LIMIT W':>8} {'DEFAULT W':>9} {'RANGE W':>10} {'UTIL%':>5}  JOB"
    )
    print(header)
    for r in rows:
        energy_kj = r["energy_j"] / 1000 if r["energy_j"] is not None else None
        rng = (
            f"{r['min_limit_w']:.0f}-{r['max_limit_w']:.0f}"
            if r["min_limit_w"] is not None and r["max_limit_w"] is not None
            else "-"
        )
        mig = "-" if r["mig"] is None else ("on" if r["mig"] else "off")
        power = "lost" if r["lost"] else _fmt(r["power_w"], ".1f")
        print(
            f"{r['index']:>3}  {r['name'][:24]:<24} {r['uuid'][:40]:<40} {mig:<3} {power:>8} "
            f"{_fmt(energy_kj, '.1f'):>10} {_fmt(r['power_limit_w']):>8} "
            f"{_fmt(r['default_limit_w']):>9} {rng:>10} {_fmt(r['utilization_pct']):>5}  "
            f"{','.join(r['jobs']) or '-'}"
        )
    return 0
