"""Benchmark: the agent's GPU sampling against CodeCarbon's tracker, on the same fake GPUs.

Both run as separate processes that load the fake NVML library (tests/nvml/fake_nvml.c,
built here with gcc) through LD_LIBRARY_PATH, over the same state file of N GPUs whose power
follows a load with a ripple. Each samples every `--interval-s` for `--duration-s`:

- the agent's path: an APScheduler interval job (as in the agent) calling GpuAccounting.sample
  (NvmlTelemetry.sample over every GPU, the Prometheus GPU collector, attribution of energy to
  one job per GPU with emissions and counterfactual);
- CodeCarbon: OfflineEmissionsTracker(measure_power_secs=interval), which also tracks CPU and
  RAM power, as it does by default.

Printed per process: CPU time (user + system) while sampling, as a share of one core; CPU
time including start-up; peak resident memory (ru_maxrss); and CodeCarbon / agent ratios.
Targets for the agent: under 1 % of one core and under 80 MiB.

CodeCarbon is not a gridshift dependency. Install it in a throwaway virtual environment:

    python3 -m venv /tmp/codecarbon-venv
    /tmp/codecarbon-venv/bin/pip install codecarbon

and pass `--codecarbon-python /tmp/codecarbon-venv/bin/python` (or set CODECARBON_PYTHON).
Without it, only the agent is measured. CodeCarbon decides whether a host has NVIDIA GPUs by
running `nvidia-smi --help`; the benchmark puts a stub `nvidia-smi` (which only exits 0) on
its PATH so that CodeCarbon goes on to read the fake GPUs through NVML like the agent.

    python tests/bench/bench_nvml.py --duration-s 60 --gpus 8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.nvml.fakenvml import FakeGpu, FakeNvmlState, build  # noqa: E402

AGENT_CODE = r"""
import json, resource, sys, time
from datetime import UTC, datetime
from prometheus_client import CollectorRegistry
from apscheduler.schedulers.background import BackgroundScheduler
from gridshift.scheduler.clock import SystemClock
from gridshift.scheduler.models import Job, JobSpec, JobState
from gridshift.scheduler.telemetry.accounting import GpuAccounting
from gridshift.scheduler.telemetry.nvml import NvmlTelemetry

duration_s, interval_s, gpus = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
now = datetime.now(UTC)
jobs = [
    Job(id=f"j{i}", spec=JobSpec(command=["train"], expected_duration_s=3600, gpus=1),
        state=JobState.RUNNING, submitted_at=now, deadline=now, gpus_assigned=[i],
        updated_at=now)
    for i in range(gpus)
]
acct = GpuAccounting(NvmlTelemetry(SystemClock()), CollectorRegistry())
rounds = []
def task():
    rounds.append(len(acct.sample(lambda: jobs, lambda r, t: 350.0, ["local"], "local")))
task()  # first round initialises NVML and discovers the devices
r0 = resource.getrusage(resource.RUSAGE_SELF)
sched = BackgroundScheduler(timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1})
sched.add_job(task, "interval", seconds=interval_s)
sched.start()
time.sleep(duration_s)
sched.shutdown(wait=True)
r1 = resource.getrusage(resource.RUSAGE_SELF)
energy_j = sum(v.energy_j for v in acct.attributor.totals.jobs.values())
print(json.dumps({
    "loop_cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
    "total_cpu_s": r1.ru_utime + r1.ru_stime,
    "maxrss_kib": r1.ru_maxrss,
    "rounds": len(rounds), "gpus_per_round": max(rounds), "energy_j": energy_j,
}))
"""

CODECARBON_CODE = r"""
import json, logging, resource, sys, time
duration_s, interval_s = float(sys.argv[1]), float(sys.argv[2])
from codecarbon import OfflineEmissionsTracker
tracker = OfflineEmissionsTracker(
    country_iso_code="USA", measure_power_secs=interval_s, save_to_file=False,
    log_level="error",
)
tracker.start()
r0 = resource.getrusage(resource.RUSAGE_SELF)
time.sleep(duration_s)
r1 = resource.getrusage(resource.RUSAGE_SELF)
tracker.stop()
data = tracker.final_emissions_data
print(json.dumps({
    "loop_cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
    "total_cpu_s": r1.ru_utime + r1.ru_stime,
    "maxrss_kib": r1.ru_maxrss,
    "gpu_count": tracker._conf.get("gpu_count"),
    "gpu_energy_kwh": data.gpu_energy,
}))
"""


def run_child(python: str, code: str, args: list[str], env: dict[str, str]) -> dict:
    out = subprocess.run(
        [python, "-c", code, *args], env=env, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise SystemExit(f"{python} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=float, default=60.0)
    parser.add_argument("--interval-s", type=float, default=1.0)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument(
        "--codecarbon-python",
        default=os.environ.get("CODECARBON_PYTHON"),
        help="python of a venv with codecarbon installed (see the module docstring)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-nvml-") as tmp_name:
        tmp = Path(tmp_name)
        lib = build(tmp)
        gpus = [
            FakeGpu(demand_w=300.0 + 40 * i, ripple_w=25.0, ripple_period_s=5.0 + i)
            for i in range(args.gpus)
        ]
        state = FakeNvmlState(tmp / "state", gpus, clock_s=None)
        stub = tmp / "bin"
        stub.mkdir()
        (stub / "nvidia-smi").write_text("#!/bin/sh\nexit 0\n")
        (stub / "nvidia-smi").chmod(0o755)
        env = {
            **os.environ,
            "LD_LIBRARY_PATH": str(lib.parent),
            "FAKE_NVML_STATE": str(state.path),
            "PATH": f"{stub}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(REPO),
        }
        common = [str(args.duration_s), str(args.interval_s)]
        print(
            f"sampling {args.gpus} fake GPUs every {args.interval_s:g} s for "
            f"{args.duration_s:g} s in each process...",
            flush=True,
        )
        agent = run_child(sys.executable, AGENT_CODE, [*common, str(args.gpus)], env)
        cc = None
        if args.codecarbon_python:
            cc = run_child(args.codecarbon_python, CODECARBON_CODE, common, env)
        else:
            print(
                "CodeCarbon not measured: install it in a throwaway venv "
                "(python3 -m venv /tmp/codecarbon-venv && "
                "/tmp/codecarbon-venv/bin/pip install codecarbon) and pass "
                "--codecarbon-python /tmp/codecarbon-venv/bin/python"
            )

    def pct(r: dict) -> float:
        return 100.0 * r["loop_cpu_s"] / args.duration_s

    def mib(r: dict) -> float:
        return r["maxrss_kib"] / 1024.0

    rows = [
        ("CPU while sampling (s)", lambda r: f"{r['loop_cpu_s']:.3f}", "loop_cpu_s"),
        ("  share of one core (%)", lambda r: f"{pct(r):.3f}", None),
        ("CPU incl. start-up (s)", lambda r: f"{r['total_cpu_s']:.3f}", "total_cpu_s"),
        ("peak RSS (MiB)", lambda r: f"{mib(r):.1f}", "maxrss_kib"),
    ]
    print()
    print(f"{'':26}{'agent':>12}{'codecarbon':>14}{'cc / agent':>12}")
    for label, fmt, key in rows:
        line = f"{label:26}{fmt(agent):>12}"
        if cc is not None:
            line += f"{fmt(cc):>14}"
            a_val = agent[key] if key else pct(agent)
            c_val = cc[key] if key else pct(cc)
            line += f"{(c_val / a_val if a_val else float('inf')):>11.1f}x"
        print(line)
    print()
    print(
        f"agent: {agent['rounds']} rounds of {agent['gpus_per_round']} GPUs, "
        f"{agent['energy_j'] / 1000:.1f} kJ attributed to {args.gpus} jobs"
    )
    if cc is not None:
        print(
            f"codecarbon: {cc['gpu_count']} GPUs tracked, "
            f"{cc['gpu_energy_kwh'] * 3600:.1f} kJ of GPU energy"
        )
    ok_cpu = pct(agent) < 1.0
    ok_mem = mib(agent) < 80.0
    print(
        f"target (under 1 % of one core, under 80 MiB): CPU {'met' if ok_cpu else 'MISSED'}, "
        f"memory {'met' if ok_mem else 'MISSED'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
