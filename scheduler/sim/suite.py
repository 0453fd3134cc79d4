"""Run several policies and the oracle on the same trace and jobs, and compare them."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import ValidationError
from ..interfaces import Planner
from ..models import Job
from ..policy import oracle
from ..policy.baselines import (
    GaiaCarbonTime,
    GaiaLowestSlot,
    RunNow,
    SdkWindow,
    Threshold,
    WaitAwhile,
)
from ..policy.planner import CarbonPlanner, CarbonPlannerConfig
from ..policy.window import expected_power_w
from .engine import Progress, SimResult, simulate
from .traces import ForecastModel, RegionTrace

POLICIES = (
    "gridshift",
    "run-now",
    "threshold",
    "carbon-aware-sdk",
    "wait-awhile",
    "wait-awhile-interruptible",
    "gaia-carbon-time",
    "gaia-lowest-slot",
)


# The live agent gives the joint exact plan under capacity 2 s a tick, and falls back to
# the one-by-one plan when it is not proven optimal by then; the exact plans of the
# benchmark's weeks take up to 1.7 s on a 2-core machine. A simulation allows far more, so that its
# figures do not depend on the machine's speed or load.
SIM_EXACT_TIME_LIMIT_S = 60.0


def make_policy(name: str, slot_s: float, threshold_g_per_kwh: float | dict[str, float]) -> Planner:
    if name == "gridshift":
        return CarbonPlanner(
            CarbonPlannerConfig(slot_s=slot_s, exact_time_limit_s=SIM_EXACT_TIME_LIMIT_S)
        )
    if name == "run-now":
        return RunNow(slot_s=slot_s)
    if name == "threshold":
        return Threshold(threshold_g_per_kwh=threshold_g_per_kwh, slot_s=slot_s)
    if name == "carbon-aware-sdk":
        return SdkWindow(slot_s=slot_s)
    if name == "wait-awhile":
        return WaitAwhile(interruptible=False, slot_s=slot_s)
    if name == "wait-awhile-interruptible":
        return WaitAwhile(interruptible=True, slot_s=slot_s)
    if name == "gaia-carbon-time":
        return GaiaCarbonTime(slot_s=slot_s)
    if name == "gaia-lowest-slot":
        return GaiaLowestSlot(slot_s=slot_s)
    raise ValueError(f"unknown policy {name!r}; use one of {', '.join(POLICIES)}")


def oracle_jobs(jobs: list[Job], traces: dict[str, RegionTrace]) -> list[oracle.OracleJob]:
    names = list(traces)
    first = traces[names[0]]
    slot_s, origin = first.slot_s, first.origin_s
    out = []
    for j in jobs:
        allowed = j.spec.allowed_regions or [j.region or names[0]]
        out.append(
            oracle.OracleJob(
                job_id=j.id,
                release=max(0, int(np.ceil((j.submitted_at.timestamp() - origin) / slot_s - 1e-9))),
                duration=j.spec.expected_duration_s / slot_s,
                deadline=(j.deadline.timestamp() - origin) / slot_s,
                gpus=j.spec.gpus,
                energy_kwh_per_slot=expected_power_w(j) * slot_s / 3.6e6,
                regions=[names.index(r) for r in allowed if r in names],
                interruptible=j.spec.interruptible,
                overhead=j.spec.checkpoint_cost_s / slot_s,
            )
        )
    return out


@dataclass
class SuiteResult:
    forecast: str
    results: dict[str, SimResult]
    oracle_g: float
    oracle_exact: bool
    reference: str = "run-now"
    notes: list[str] = field(default_factory=list)
    # proven lower bound on the least emissions (= oracle_g when exact)
    oracle_bound_g: float = float("nan")
    # the online optimum (oracle.solve_online): exact planning that knows the intensity
    # but not the jobs to come
    online_g: float = float("nan")
    online_exact: bool = False

    def saving(self, policy: str) -> float:
        base = self.results[self.reference].emissions_g
        return base - self.results[policy].emissions_g

    def saving_pct(self, policy: str) -> float:
        base = self.results[self.reference].emissions_g
        return 100.0 * self.saving(policy) / base if base else 0.0

    @property
    def oracle_best_g(self) -> float:
        """The least emissions any schedule could reach, as far as is proven: the oracle's
        when it was solved exactly, else the solver's bound (so capture is a lower bound)."""
        if self.oracle_exact or not math.isfinite(self.oracle_bound_g):
            return self.oracle_g
        return self.oracle_bound_g

    @property
    def oracle_saving(self) -> float:
        return self.results[self.reference].emissions_g - self.oracle_best_g

    def capture(self, policy: str) -> float:
        o = self.oracle_saving
        return self.saving(policy) / o if o > 1e-9 else float("nan")

    @property
    def online_saving_pct(self) -> float:
        """The online optimum's saving, in % of the reference's emissions (nan without one)."""
        base = self.results[self.reference].emissions_g
        return 100.0 * (base - self.online_g) / base if base else 0.0

    @property
    def online_capture(self) -> float:
        """The share of the oracle's saving the online optimum reaches (nan without one)."""
        o = self.oracle_saving
        base = self.results[self.reference].emissions_g
        return (base - self.online_g) / o if o > 1e-9 else float("nan")

    def capture_online(self, policy: str) -> float:
        """The share of the online optimum's saving a policy reaches (nan without one)."""
        o = self.results[self.reference].emissions_g - self.online_g
        return self.saving(policy) / o if o > 1e-9 else float("nan")


def _online_progress() -> Callable[[int, int], None]:
    bar = Progress("online optimum")

    def show(done: int, total: int) -> None:
        if done == total:
            bar.done(f"{done}/{total} solves")
        else:
            bar.show(100.0 * done / total, f"{done}/{total} solves")

    return show


def _cap(value: int | None) -> float:
    return np.inf if value is None else float(value)


def run_suite(
    traces: dict[str, RegionTrace],
    forecasts: dict[str, ForecastModel],
    jobs: list[Job],
    policies: list[str],
    *,
    forecast_name: str,
    capacity_gpus: dict[str, int | None] | None = None,
    threshold_g_per_kwh: float | dict[str, float] | None = None,
    horizon_s: float = 8 * 86400.0,
    with_oracle: bool = True,
    progress: bool = False,
    oracle_time_limit_s: float = 120.0,
    with_online: bool = False,
    online_time_limit_s: float = 60.0,
) -> SuiteResult:
    """Every policy (and run-now, the reference) through the simulator on the same traces
    and jobs; then the oracle, and with `with_online` the online optimum (one exact solve
    per release, each within `online_time_limit_s`)."""
    names = list(traces)
    slot_s = traces[names[0]].slot_s
    thr = threshold_g_per_kwh
    if thr is None:  # each region's median
        thr = {n: float(np.median(t.values)) for n, t in traces.items()}
    results: dict[str, SimResult] = {}
    for name in dict.fromkeys(["run-now", *policies]):
        pol = make_policy(name, slot_s, thr)
        results[name] = simulate(
            pol,
            traces,
            forecasts,
            jobs,
            capacity_gpus=capacity_gpus,
            horizon_s=horizon_s,
            policy_name=name,
            forecast_name=forecast_name,
            progress=progress,
        )
    suite = SuiteResult(forecast_name, results, float("nan"), False)
    inten = np.vstack([traces[n].values for n in names])
    caps = capacity_gpus or {}
    cap = np.array([_cap(caps.get(n)) for n in names])
    if with_oracle:
        try:
            res = oracle.solve(oracle_jobs(jobs, traces), inten, cap, oracle_time_limit_s)
        except ValidationError as exc:  # no schedule meets every deadline (or none found)
            suite.notes.append(f"no oracle: {exc}")
        else:
            suite.oracle_g, suite.oracle_exact = res.emissions_g, res.exact
            suite.oracle_bound_g = res.bound_g
    if with_online:
        try:
            res = oracle.solve_online(
                oracle_jobs(jobs, traces),
                inten,
                cap,
                online_time_limit_s,
                _online_progress() if progress else None,
            )
        except ValidationError as exc:
            suite.notes.append(f"no online optimum: {exc}")
        else:
            suite.online_g, suite.online_exact = res.emissions_g, res.exact
    return suite
