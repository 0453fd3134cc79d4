"""The offline oracle: the least-emission schedule with perfect knowledge of the intensity,
under the same releases, deadlines, regions and GPU capacity as the online policies.

Solved exactly as a mixed-integer programme with scipy's HiGHS (`scipy.optimize.milp`):

- a non-interruptible job picks one (region, start) with a binary per option; its cost is
  the energy over its run at the actual intensity, a partly used last slot counted pro rata;
- an interruptible job picks a region (binary z), slots it runs in (binary y) and how much
  of each it uses (x = y but for one partly used slot); every run after the first pays
  the job's checkpoint cost as extra run time and energy: sum(x) = work + overhead x
  (runs - 1), with run starts u >= y[t] - y[t-1];
- capacity: in every (region, slot) the GPUs of the jobs running there fit.

Jobs that cannot compete for capacity (no region can ever be full) are solved one by one,
which is exact and much faster; otherwise one programme couples them all.

`solve_online` is the same programme solved again at every release with only the jobs
released so far: the best that exact planning reaches knowing the intensity perfectly but
not the jobs to come, the reference for a planner that sees jobs as they arrive.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

from ..errors import ValidationError

_EPS = 1e-9


@dataclass
class OracleJob:
    """One job in slot units of the intensity grid."""

    job_id: str
    release: int  # first slot it may use
    duration: float  # work, in slots
    deadline: float  # must finish by this (fractional) slot time
    gpus: int
    energy_kwh_per_slot: float
    regions: list[int]
    interruptible: bool = False
    overhead: float = 0.0  # checkpoint cost, in slots
    # interruptible, already started: every start pays the checkpoint (none is the first)
    resumes: bool = False
    # interruptible, ran in the slot before its release: running on is not a start
    running: bool = False


@dataclass
class OracleResult:
    emissions_g: float  # the best schedule found (nan if the time limit came first)
    per_job_g: dict[str, float]
    status: str
    exact: bool
    schedule: dict[str, list[tuple[int, int, float]]] = field(default_factory=dict)
    # proven lower bound on the least emissions: equal to emissions_g when exact, the
    # solver's bound when its time limit stopped it
    bound_g: float = float("nan")


class _Model:
    def __init__(self) -> None:
        self.cost: list[float] = []
        self.integ: list[int] = []
        self.ub: list[float] = []
        self.rows: list[tuple[dict[int, float], float, float]] = []

    def var(self, cost: float, integer: bool, ub: float = 1.0) -> int:
        self.cost.append(cost)
        self.integ.append(1 if integer else 0)
        self.ub.append(ub)
        return len(self.cost) - 1

    def row(self, coefs: dict[int, float], lo: float, hi: float) -> None:
        self.rows.append((coefs, lo, hi))

    def solve(
        self, time_limit_s: float, node_limit: int | None
    ) -> tuple[np.ndarray | None, str, int, float]:
        """The solution (None if none was found), the solver's message, scipy's status (0
        optimal, 2 infeasible; any other: stopped early, at a time or node limit) and the
        bound on the optimum."""
        n = len(self.cost)
        r, c, v, lo, hi = [], [], [], [], []
        for i, (coefs, a, b) in enumerate(self.rows):
            for j, val in coefs.items():
                r.append(i)
                c.append(j)
                v.append(val)
            lo.append(a)
            hi.append(b)
        cons = []
        if self.rows:
            a_mat = coo_matrix((v, (r, c)), shape=(len(self.rows), n)).tocsr()
            cons = [LinearConstraint(a_mat, np.array(lo), np.array(hi))]
        res = milp(
            np.array(self.cost),
            constraints=cons,
            integrality=np.array(self.integ),
            bounds=Bounds(np.zeros(n), np.array(self.ub)),
            options={
                "time_limit": time_limit_s,
                "mip_rel_gap": 1e-6,
                "disp": False,
                **({} if node_limit is None else {"node_limit": node_limit}),
            },
        )
        dual = getattr(res, "mip_dual_bound", None)
        bound = float(res.fun) if res.status == 0 else float(np.nan if dual is None else dual)
        if res.status == 2:  # infeasible: no bound, no schedule
            bound = np.nan
        return (res.x if res.x is not None else None), str(res.message), res.status, bound


def _window_cost(row: np.ndarray, s: int, d: float) -> float:
    full = math.floor(d + _EPS)
    frac = d - full
    out = float(row[s : s + full].sum())
    if frac > _EPS:
        out += frac * float(row[s + full])
    return out


def _add_job(m: _Model, job: OracleJob, inten: np.ndarray, occupancy: dict) -> list:
    """Add one job's variables; record its capacity use; return how to read its schedule."""
    n_t = inten.shape[1]
    e = job.energy_kwh_per_slot
    if not job.interruptible:
        ls = math.floor(job.deadline - job.duration + _EPS)
        ls = min(ls, n_t - math.ceil(job.duration - _EPS))
        opts = []
        for r in job.regions:
            for s in range(job.release, ls + 1):
                j = m.var(e * _window_cost(inten[r], s, job.duration), True)
                opts.append((j, r, s))
                for t in range(s, s + max(1, math.ceil(job.duration - _EPS))):
                    occupancy.setdefault((r, t), {})[j] = job.gpus
        if not opts:
            raise ValidationError(
                f"job {job.job_id} cannot finish between slot {job.release} and its deadline "
                f"{job.deadline:.2f} within the trace; lengthen the trace or the deadline"
            )
        m.row({j: 1.0 for j, _, _ in opts}, 1.0, 1.0)
        return [("fixed", opts)]
    dl = min(math.floor(job.deadline + _EPS), n_t)
    zs = {}
    parts = []
    total_x: dict[int, float] = {}
    starts: dict[int, float] = {}
    partial: dict[int, float] = {}
    for r in job.regions:
        z = m.var(0.0, True)
        zs[r] = z
        prev_y = None
        prev_f = None
        for t in range(job.release, dl):
            y = m.var(0.0, True)
            x = m.var(e * float(inten[r, t]), False)
            u = m.var(0.0, False)
            w = m.var(0.0, True)
            f = m.var(0.0, False)  # 1 once the partly used slot has passed: the job is done
            partial[w] = 1.0
            m.row({x: 1.0, y: -1.0}, -np.inf, 0.0)  # x <= y
            m.row({x: 1.0, y: -1.0, w: 1.0}, 0.0, np.inf)  # x >= y - w: full unless partial
            m.row({y: 1.0, z: -1.0}, -np.inf, 0.0)  # y <= z
            coefs = {u: 1.0, y: -1.0}
            if prev_y is not None:
                coefs[prev_y] = 1.0
            if prev_y is not None or not job.running:  # y[release - 1] = 1 when running
                m.row(coefs, 0.0, np.inf)  # u >= y[t] - y[t-1]
            # A slot is used in part only when the job finishes in it, as jobs run on a
            # slot clock: no slot after a partly used one.
            m.row({f: 1.0, w: -1.0}, 0.0, np.inf)  # f[t] >= w[t] (f <= 1 by its bound)
            if prev_f is not None:
                m.row({f: 1.0, prev_f: -1.0}, 0.0, np.inf)  # f[t] >= f[t-1]
                m.row({y: 1.0, prev_f: 1.0}, -np.inf, 1.0)  # y[t] <= 1 - f[t-1]
            total_x[x] = 1.0
            starts[u] = 1.0
            occupancy.setdefault((r, t), {})[y] = job.gpus
            parts.append((r, t, x))
            prev_y = y
            prev_f = f
    m.row(dict.fromkeys(zs.values(), 1.0), 1.0, 1.0)
    m.row(partial, 0.0, 1.0)  # at most one partly used slot (the last one)
    if not job.resumes:
        m.row(dict(starts), 1.0, np.inf)  # it starts at least once
    # sum x - overhead * sum u = work - overhead (the first start is free, unless the job
    # has started before)
    coefs = dict(total_x)
    for u in starts:
        coefs[u] = -job.overhead
    free_start = 0.0 if job.resumes else job.overhead
    m.row(coefs, job.duration - free_start, job.duration - free_start)
    if dl - job.release < job.duration - _EPS:
        raise ValidationError(
            f"interruptible job {job.job_id} needs {job.duration:.2f} slots but has "
            f"{dl - job.release} before its deadline"
        )
    return [("flex", parts)]


def solve(
    jobs: list[OracleJob],
    intensity: np.ndarray,
    capacity: np.ndarray | None = None,
    time_limit_s: float = 120.0,
    node_limit: int | None = None,
) -> OracleResult:
    """The least-emission feasible schedule. `intensity` is (regions, slots) in g/kWh;
    `capacity` GPUs per region (regions,) or per region and slot (regions, slots), inf for
    unlimited. The solver stops at `time_limit_s`, or after `node_limit` branch-and-bound
    nodes (a stop that does not depend on the machine's speed); stopped early, the result
    is not exact and carries the solver's bound."""
    inten = np.atleast_2d(np.asarray(intensity, dtype=float))
    n_r, n_t = inten.shape
    cap = np.full(n_r, np.inf) if capacity is None else np.asarray(capacity, dtype=float)
    if cap.ndim == 1:
        cap = np.repeat(cap[:, None], n_t, axis=1)
    if cap.shape != inten.shape:
        raise ValidationError(
            f"capacity has shape {cap.shape}; expected ({n_r},) or the intensity's {inten.shape}"
        )
    demand = np.zeros(n_r)
    for j in jobs:
        for r in j.regions:
            demand[r] += j.gpus
    coupled = bool(np.any(demand > cap.min(axis=1)))
    groups = [jobs] if coupled else [[j] for j in jobs]
    per_job: dict[str, float] = {}
    schedule: dict[str, list[tuple[int, int, float]]] = {}
    exact = True
    status = "optimal"
    bound_g = 0.0
    found = True
    for group in groups:
        if not coupled and not group[0].interruptible:
            j = group[0]  # one non-interruptible job: enumerate its options
            best = (math.inf, -1, -1)
            ls = math.floor(j.deadline - j.duration + _EPS)
            ls = min(ls, inten.shape[1] - math.ceil(j.duration - _EPS))
            for r in j.regions:
                for s in range(j.release, ls + 1):
                    c = j.energy_kwh_per_slot * _window_cost(inten[r], s, j.duration)
                    if c < best[0]:
                        best = (c, r, s)
            if best[1] < 0:
                raise ValidationError(
                    f"job {j.job_id} cannot finish before its deadline within the trace"
                )
            per_job[j.job_id] = best[0]
            schedule[j.job_id] = [(best[1], best[2], j.duration)]
            bound_g += best[0]
            continue
        m = _Model()
        occupancy: dict[tuple[int, int], dict[int, float]] = {}
        readers = [(j, _add_job(m, j, inten, occupancy)) for j in group]
        if coupled:
            for (r, t), coefs in occupancy.items():
                if math.isfinite(cap[r, t]):
                    m.row(coefs, -np.inf, float(cap[r, t]))
        x, msg, code, bound = m.solve(time_limit_s, node_limit)
        bound_g += bound
        if x is None and not math.isfinite(bound):
            if code == 2:
                raise ValidationError(f"the oracle found no feasible schedule: {msg}")
            raise ValidationError(
                f"the oracle stopped before it found a schedule or a bound ({msg}); "
                f"allow it more time than {time_limit_s:g} s"
                + ("" if node_limit is None else f" or more nodes than {node_limit}")
            )
        if code != 0:
            exact = False
            status = msg
        if x is None:  # stopped before any schedule was found: only the bound is known
            found = False
            continue
        for j, reader in readers:
            kind, items = reader[0]
            if kind == "fixed":
                chosen = max(items, key=lambda it: x[it[0]])
                per_job[j.job_id] = float(m.cost[chosen[0]])
                schedule[j.job_id] = [(chosen[1], chosen[2], j.duration)]
            else:
                per_job[j.job_id] = float(sum(m.cost[xi] * x[xi] for _, _, xi in items))
                schedule[j.job_id] = [(r, t, float(x[xi])) for r, t, xi in items if x[xi] > 1e-6]
    return OracleResult(
        emissions_g=float(sum(per_job.values())) if found else float("nan"),
        per_job_g=per_job,
        status=status,
        exact=exact,
        schedule=schedule,
        bound_g=bound_g,
    )


def solve_online(
    jobs: list[OracleJob],
    intensity: np.ndarray,
    capacity: np.ndarray | None = None,
    time_limit_s: float = 60.0,
    progress: Callable[[int, int], None] | None = None,
) -> OracleResult:
    """The online optimum: what exact planning reaches knowing the intensity perfectly but
    not the jobs to come. At every release the least-emission schedule of the jobs released
    so far is solved exactly, with what has already run kept (a started job stays in its
    region, a non-interruptible one runs to its end, a paused one pays its checkpoint to
    resume), and carried out until the next release.

    The offline oracle's lead over it is what knowing the future jobs is worth. `exact` is
    true when every solve was; `bound_g` is not a bound here (nan). `progress(done, total)`
    is called after each solve."""
    inten = np.atleast_2d(np.asarray(intensity, dtype=float))
    releases = sorted({j.release for j in jobs})
    work = {j.job_id: j.duration for j in jobs}  # interruptible: work left, in slots
    ends: dict[str, float] = {}  # non-interruptible, started: the slot time it ends
    region: dict[str, int] = {}  # where a started job runs
    running: set[str] = set()  # interruptible jobs that ran in the slot before
    per_job = dict.fromkeys(work, 0.0)
    schedule: dict[str, list[tuple[int, int, float]]] = {j.job_id: [] for j in jobs}
    exact = True
    for k, t in enumerate(releases):
        until = releases[k + 1] if k + 1 < len(releases) else math.inf
        known: list[OracleJob] = []
        for j in jobs:
            jid = j.job_id
            if j.release > t or work[jid] <= _EPS or ends.get(jid, math.inf) <= t:
                continue
            if jid not in region:
                known.append(replace(j, release=t))
            elif not j.interruptible:  # runs on to its end: only its GPUs matter
                known.append(
                    replace(
                        j,
                        release=t,
                        duration=ends[jid] - t,
                        deadline=ends[jid],
                        regions=[region[jid]],
                    )
                )
            else:
                known.append(
                    replace(
                        j,
                        release=t,
                        duration=work[jid],
                        regions=[region[jid]],
                        resumes=True,
                        running=jid in running,
                    )
                )
        try:
            res = solve(known, inten, capacity, time_limit_s)
        except ValidationError as exc:  # what started earlier leaves no room for a deadline
            msg = f"the online optimum has no schedule at slot {t}: {exc}"
            raise ValidationError(msg) from None
        exact = exact and res.exact
        if math.isnan(res.emissions_g):
            raise ValidationError(
                f"the online optimum found no schedule at slot {t} within {time_limit_s:g} s"
            )
        if progress is not None:
            progress(k + 1, len(releases))
        for j in known:
            jid = j.job_id
            if not j.interruptible:
                r, s, d = res.schedule[jid][0]
                if jid not in region and s < until:  # started: it runs to its end
                    region[jid], ends[jid] = r, s + d
                    per_job[jid] = j.energy_kwh_per_slot * _window_cost(inten[r], s, d)
                    schedule[jid] = [(r, s, d)]
                continue
            parts = sorted((s, r, x) for r, s, x in res.schedule[jid] if s < until)
            if not parts:
                running.discard(jid)
                continue
            runs = 1 + sum(b[0] > a[0] + 1 for a, b in itertools.pairwise(parts))
            resumed = jid in region and not (jid in running and parts[0][0] == t)
            work[jid] -= sum(x for _, _, x in parts) - j.overhead * (runs - 1 + resumed)
            region[jid] = parts[0][1]
            per_job[jid] += j.energy_kwh_per_slot * sum(x * inten[r, s] for s, r, x in parts)
            schedule[jid].extend((r, s, x) for s, r, x in parts)
            if parts[-1][0] == until - 1:
                running.add(jid)
            else:
                running.discard(jid)
    return OracleResult(
        emissions_g=float(sum(per_job.values())),
        per_job_g=per_job,
        status=f"online: {len(releases)} solves"
        + ("" if exact else ", some stopped at their time limit"),
        exact=exact,
        schedule=schedule,
        bound_g=float("nan"),
    )
