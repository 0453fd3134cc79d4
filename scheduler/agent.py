"""The agent: snapshot, plan, apply; and keep the store, the engines and the metrics in step.

    refresh_signals   every signal_refresh_s: the hub asks its providers (network at the edge)
    reconcile         every reconcile_s: engines -> store (outcomes, GPUs), store -> engines
                      (intent: a job recorded as running is running), adoption of opted-in jobs
    tick              every tick_s: Snapshot -> planner.plan (pure) -> apply decisions
    sample_power      every nvml.sample_interval_s, when a GPU power source is present

Every state change is written to the store before the engine is asked to act, and every
engine action is idempotent, so a crash at any point is repaired by the next reconcile:
a job recorded as running whose process never started is started (once), a held job
stays held, a suspended job stays suspended.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from importlib.metadata import entry_points
from typing import Any

from prometheus_client import CollectorRegistry

from .clock import Clock, ScaledClock, SystemClock, monotonic_s
from .config import Settings
from .errors import AdapterError, ConfigError, GridshiftError, ValidationError
from .interfaces import (
    ENGINE_TO_JOB_STATE,
    Adapter,
    ChecksSpecs,
    EngineState,
    EngineStatus,
    Planner,
    PowerCapper,
    PowerSource,
    Relocatable,
    Suspendable,
)
from .metrics import AgentMetrics, decision_cause
from .models import (
    Action,
    Decision,
    Job,
    JobSpec,
    JobState,
    Snapshot,
    new_job_id,
)
from .policy.planner import CarbonPlanner, CarbonPlannerConfig
from .policy.powercap import plan_caps
from .policy.window import StepSeries, WindowPlanner, expected_power_w, spec_power_w
from .signals import SignalHub, build_hub
from .store import Store, open_store
from .telemetry.accounting import GpuAccounting
from .telemetry.nvml import NvmlTelemetry

log = logging.getLogger(__name__)

# store meta key holding each region's forecast skill, per provider (signals/skill.py)
SKILL_KEY = "forecast_skill"
# store meta key holding each region's measured values of the last days (signals/history.py)
HISTORY_KEY = "measured_history"
ACTIVE_STATES = [JobState.PENDING, JobState.HELD, JobState.RUNNING, JobState.SUSPENDED]


def load_plugins(group: str, settings: Settings, clock: Clock) -> dict[str, Any]:
    """Build every plugin registered under an entry-point group; a builder may return None
    (not configured)."""
    built: dict[str, Any] = {}
    for ep in entry_points(group=group):
        try:
            factory: Callable[[Settings, Clock], Any] = ep.load()
        except ImportError as exc:
            log.warning("%s plugin %s is not available: %s", group, ep.name, exc)
            continue
        instance = factory(settings, clock)
        if instance is not None:
            built[ep.name] = instance
    return built


def make_clock(settings: Settings) -> Clock:
    if settings.clock_speed == 1.0 and settings.clock_start is None:
        return SystemClock()
    origin = settings.clock_origin
    if origin is None:
        raise ConfigError(
            "clock_speed != 1 and clock_start need clock_origin (a fixed UTC instant)"
        )
    return ScaledClock(origin, settings.clock_speed, settings.clock_start)


def clock_kind(settings: Settings) -> str:
    """ "wall", or "simulated" for a demo's fast or shifted clock (as a store records it)."""
    return "wall" if settings.clock_speed == 1.0 and settings.clock_start is None else "simulated"


def _check_store_clock(store: Store, settings: Settings) -> None:
    """A store's times are on the clock that wrote them: the simulated days of a fast-clock
    demo and the hours of a real agent must not meet in one store (a demo job's deadline
    days ahead would hold a real agent's plans, a real job's would be long past on the
    demo's)."""
    mine = clock_kind(settings)
    theirs = store.get_meta("clock")
    if theirs is None:
        store.set_meta("clock", mine)
    elif theirs != mine:
        raise ConfigError(
            f"{store.name} was written by an agent on a {theirs} clock and this one runs on a "
            f"{mine} clock (clock_speed, clock_start); their times do not mix. Give this agent "
            "its own state_dir (GRIDSHIFT_STATE_DIR) or database_url, or remove "
            f"{store.name} to start afresh"
        )


class Agent:
    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        store: Store,
        hub: SignalHub,
        adapters: dict[str, Adapter],
        planner: Planner,
        metrics: AgentMetrics,
        *,
        power_source: PowerSource | None = None,
        capper: PowerCapper | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.store = store
        self.hub = hub
        self.adapters = adapters
        self.planner = planner
        self.metrics = metrics
        self.power_source = power_source
        self.capper = capper
        # GPU power: sampling, GPU metrics, measured energy per job (telemetry/accounting.py)
        self.gpu = (
            GpuAccounting(power_source, metrics.registry, metrics=metrics)
            if power_source is not None
            else None
        )
        self._lock = threading.RLock()
        self._accounted_at: dict[str, datetime] = {}
        self._scheduler: Any = None
        self._leading: bool | None = None
        # Series at 0 for the label values known now (dashboards and increase() need them).
        for name in adapters:
            metrics.declare_adapter(name)
        for region, chain in hub.chains.items():
            metrics.declare_region(region)
            for provider_name, _ in chain:
                metrics.declare_provider(provider_name)

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        clock: Clock | None = None,
        registry: CollectorRegistry | None = None,
    ) -> Agent:
        """Compose an agent from settings. Opens the store; makes no network call."""
        clock = clock or make_clock(settings)
        metrics = AgentMetrics(registry if registry is not None else CollectorRegistry())
        store = open_store(settings.db_url, clock)
        try:
            _check_store_clock(store, settings)
        except ConfigError:
            store.close()
            raise
        hub = build_hub(settings, clock, metrics)
        adapters = load_plugins("gridshift.adapters", settings, clock)
        if not adapters:
            raise ConfigError("no engine adapter is installed; reinstall gridshift")
        lookahead_s = settings.tick_s * settings.clock_speed + settings.start_slack_s
        planner: Planner
        if settings.planner == "carbon":
            planner = CarbonPlanner(
                CarbonPlannerConfig(
                    slot_s=settings.planner_slot_s,
                    exact_max_jobs=settings.planner_exact_max_jobs,
                    repair_max_jobs=settings.planner_repair_max_jobs,
                    straight_relocatable=settings.planner_straight_relocatable,
                )
            )
        else:
            planner = WindowPlanner(lookahead_s=lookahead_s)
        power_source = (
            NvmlTelemetry(clock, energy_every_s=settings.nvml.energy_interval_s)
            if settings.nvml.enabled
            else None
        )
        actuators = load_plugins("gridshift.actuators", settings, clock)
        capper = actuators.get("powercap")
        return cls(
            settings,
            clock,
            store,
            hub,
            adapters,
            planner,
            metrics,
            power_source=power_source,
            capper=capper,
        )

    # ------------------------------------------------------------------------------------
    # What users ask for

    def submit(self, spec: JobSpec, *, deadline_in_s: float | None = None) -> Job:
        """Validate and record a job, then plan it at once. Bad input changes nothing."""
        now = self.clock.now()
        if spec.engine not in self.adapters:
            raise ValidationError(
                f"engine {spec.engine!r} is not available; choose one of "
                f"{', '.join(sorted(self.adapters))}"
            )
        adapter = self.adapters[spec.engine]
        if isinstance(adapter, ChecksSpecs):
            adapter.check_spec(spec)
        unknown = [r for r in spec.allowed_regions if r not in self.settings.regions]
        if unknown:
            raise ValidationError(
                f"unknown region(s) {', '.join(unknown)}; configured regions: "
                f"{', '.join(sorted(self.settings.regions))}"
            )
        if deadline_in_s is not None:
            if spec.deadline is not None or spec.max_delay_s is not None:
                raise ValidationError("give one of deadline, deadline_in and max_delay_s")
            if deadline_in_s <= 0:
                raise ValidationError("deadline_in must be positive")
            deadline = now + timedelta(seconds=deadline_in_s)
        else:
            deadline = spec.resolve_deadline(now, self.settings.default_max_delay_s)
        if deadline <= now:
            raise ValidationError(
                f"the deadline {deadline:%Y-%m-%dT%H:%M:%S}Z is in the past (now "
                f"{now:%Y-%m-%dT%H:%M:%S}Z)"
            )
        window_s = (deadline - now).total_seconds()
        if spec.expected_duration_s > window_s:
            raise ValidationError(
                f"the job needs {spec.expected_duration_s:.0f}s but only {window_s:.0f}s remain "
                "before its deadline; extend the deadline or shorten the expected duration"
            )
        if spec.engine == "local" and spec.gpus > self.settings.local.gpus:
            raise ValidationError(
                f"the job asks {spec.gpus} GPU{'' if spec.gpus == 1 else 's'} but this box "
                f"gives jobs {self.settings.local.gpus} (local.gpus, or GRIDSHIFT_LOCAL__GPUS); "
                "set it to the GPUs jobs may use, or submit with --gpus 0"
            )
        regions = spec.allowed_regions or [self.settings.default_region]
        capacities = [self._capacity().get(r) for r in regions]
        if all(c is not None and c < spec.gpus for c in capacities):
            raise ValidationError(
                f"the job asks {spec.gpus} GPUs but no allowed region has that many "
                f"({', '.join(f'{r}: {c}' for r, c in zip(regions, capacities, strict=True))})"
            )
        job = Job(
            id=new_job_id(),
            spec=spec,
            submitted_at=now,
            deadline=deadline,
            updated_at=now,
            counterfactual_g=self._expected_emissions_g(spec, regions[0], now),
        )
        with self._lock:
            self.store.add_job(job, "submitted")
            log.info("job %s submitted: %s, deadline %s", job.id, spec.name, deadline)
            self.tick()
        return self.store.get_job(job.id)

    def cancel(self, job_id: str, reason: str = "cancelled by the user") -> Job:
        with self._lock:
            job = self.store.get_job(job_id)
            if job.state.terminal:
                raise ValidationError(f"job {job_id} already ended ({job.state.value})")
            job = self.store.transition(
                job_id, JobState.CANCELLED, reason, ended_at=self.clock.now()
            )
            if job.engine_ref is not None or job.started_at is not None:
                try:
                    self.adapters[job.spec.engine].cancel(job)
                except AdapterError as exc:
                    # Recorded as cancelled; reconcile keeps asking the engine to stop it.
                    self._adapter_error(job, "cancel", exc)
            return job

    def explain(self, job_id: str) -> dict[str, Any]:
        job = self.store.get_job(job_id)
        decisions = self.store.decisions(job_id, limit=20)
        region = job.region or (job.spec.allowed_regions or [self.settings.default_region])[0]
        signal = self.hub.region_signal(region) if region in self.settings.regions else None
        return {
            "job": job.model_dump(mode="json"),
            # a paused job's latest resume; once started otherwise, the latest start it had
            "latest_start": (
                job.latest_start
                if job.started_at is None or job.state == JobState.SUSPENDED
                else job.deadline - timedelta(seconds=job.spec.expected_duration_s)
            ).isoformat(),
            "region": region,
            "signal": signal.model_dump(mode="json", exclude={"forecast"}) if signal else None,
            "decisions": [d.model_dump(mode="json") for d in decisions],
            "events": [e.model_dump(mode="json") for e in self.store.events(job_id)],
            "summary": self._summary(job),
        }

    def _summary(self, job: Job) -> str:
        if job.state == JobState.HELD and job.planned_start:
            saving = (
                f"; expected saving {job.expected_saving_g:.1f} g CO2eq against running now"
                + (" (estimate)" if job.saving_is_estimate else "")
                if job.expected_saving_g
                else ""
            )
            return f"held until {job.planned_start:%Y-%m-%d %H:%M}Z: {job.reason}{saving}"
        if job.state == JobState.RUNNING:
            return f"running since {job.started_at:%Y-%m-%d %H:%M}Z: {job.reason}"
        if job.state.terminal:
            saved = (
                job.counterfactual_g - job.emissions_g if job.counterfactual_g is not None else None
            )
            extra = (
                f"; saved {saved:.1f} g against running at submission"
                if saved is not None and abs(saved) >= 0.05
                else ""
            )
            return (
                f"{job.state.value} (exit code {job.exit_code}); emitted "
                f"{job.emissions_g:.1f} g{extra}"
            )
        return f"{job.state.value}: {job.reason or 'waiting for the next planning tick'}"

    # ------------------------------------------------------------------------------------
    # Periodic work

    @property
    def acting(self) -> bool:
        """Whether this agent acted at its last check (`leads`), without asking again."""
        return bool(self._leading)

    def leads(self) -> bool:
        """Whether this agent acts: always with SQLite; with a database that several agents
        share, only the one holding its leader lock (the others stand by, see store.py).
        Raises StoreError, acting no more, while the database cannot be reached."""
        try:
            leading = self.store.lead()
        except GridshiftError:
            self._leading = False
            self.metrics.leader.labels(self.store.scope).set(0)
            raise
        if leading != self._leading:
            if leading:
                log.info("this agent acts on the jobs in %s", self.store.name)
            else:
                log.warning(
                    "another agent acts on the jobs in %s; this one stands by until that one stops",
                    self.store.name,
                )
            self._leading = leading
            self.metrics.leader.labels(self.store.scope).set(1 if leading else 0)
        return leading

    def refresh_signals(self) -> None:
        self.hub.refresh()
        if not self.leads():  # the acting agent keeps what is learnt; this one stays warm
            return
        # What the hub has learnt of each forecast's error, and the values it measured (its
        # own forecast where providers give none), survive a restart.
        self.store.set_json(SKILL_KEY, self.hub.skill_state())
        self.store.set_json(HISTORY_KEY, self.hub.history_state())

    def _restore_signals(self) -> None:
        for key, what, restore in (
            (SKILL_KEY, "forecast skill", self.hub.restore_skill),
            (HISTORY_KEY, "measured history", self.hub.restore_history),
        ):
            try:
                saved = self.store.get_json(key)
            except ValueError as exc:  # not JSON: start afresh
                log.warning("%s in the store is unreadable (%s); relearning it", what, exc)
                continue
            if isinstance(saved, dict):
                restore(saved)

    def tick(self) -> list[Decision]:
        """One planning round. Returns the decisions that changed something."""
        started = monotonic_s()
        if not self.leads():
            self._stand_by()
            return []
        with self._lock:
            now = self.clock.now()
            # The planner sees each job as of `now`: a running job's current stretch counts
            # as work done (the store keeps completed stretches in run_s).
            jobs = [
                j.model_copy(
                    update={"run_s": j.run_s + self._stretch_s(j, now), "running_since": now}
                )
                if j.state == JobState.RUNNING and j.running_since is not None
                else j
                for j in self.store.list_jobs(ACTIVE_STATES)
            ]
            snapshot = Snapshot(
                now=now,
                jobs=jobs,
                regions=self.hub.snapshot(),
                default_region=self.settings.default_region,
                capacity_gpus=self._capacity(),
                gpus=self.gpu.latest if self.gpu is not None else [],
            )
            t0 = monotonic_s()
            decisions = self.planner.plan(snapshot)
            if self.capper is not None and self.settings.nvml.capping:
                decisions += plan_caps(snapshot, self.settings.nvml.curve)
            self.metrics.planner_duration.observe(monotonic_s() - t0)
            applied = [d for d in decisions if self._apply(d)]
            self.store.record_decisions(applied)
            self._export_jobs(now)
        self.metrics.tick_duration.observe(monotonic_s() - started)
        self.metrics.last_tick.set_to_current_time()
        self.hub.export_ages()
        return applied

    def _apply(self, d: Decision) -> bool:
        if d.action in (Action.CAP, Action.UNCAP):
            return self._apply_cap(d)
        assert d.job_id is not None
        job = self.store.get_job(d.job_id)
        adapter = self.adapters[job.spec.engine]
        cause = decision_cause(d.reason)
        try:
            if d.action == Action.START and job.state in (JobState.PENDING, JobState.HELD):
                job = self._ensure_submitted(job, adapter, d.region)
                job = self.store.transition(
                    job.id,
                    JobState.RUNNING,
                    d.reason,
                    region=d.region or job.region,
                    started_at=d.at,
                    running_since=d.at,
                    planned_start=d.at,
                )
                self._accounted_at[job.id] = d.at
                self.metrics.job_wait.observe((d.at - job.submitted_at).total_seconds())
                self.metrics.job_placements.labels(
                    region=job.region or self.settings.default_region
                ).inc()
                adapter.release(job)
            elif d.action == Action.HOLD and job.state in (JobState.PENDING, JobState.HELD):
                if (
                    job.state == JobState.HELD
                    and job.planned_start == d.planned_start
                    and job.region == (d.region or job.region)
                ):
                    return False
                job = self._ensure_submitted(job, adapter, d.region)
                job = self.store.transition(
                    job.id,
                    JobState.HELD,
                    d.reason,
                    planned_start=d.planned_start,
                    region=d.region or job.region,
                    expected_saving_g=d.expected_saving_g,
                    saving_is_estimate=d.saving_is_estimate,
                )
                adapter.hold(job)
            elif d.action == Action.SUSPEND and job.state == JobState.RUNNING:
                if not isinstance(adapter, Suspendable) or not job.spec.interruptible:
                    return False
                run_s = job.run_s + self._stretch_s(job, d.at)
                job = self.store.transition(
                    job.id, JobState.SUSPENDED, d.reason, run_s=run_s, running_since=None,
                    planned_start=d.planned_start,
                )  # fmt: skip
                adapter.suspend(job)
            elif d.action == Action.RESUME and job.state == JobState.SUSPENDED:
                if not isinstance(adapter, Suspendable):
                    return False
                job = self.store.transition(job.id, JobState.RUNNING, d.reason, running_since=d.at)
                self._accounted_at[job.id] = d.at
                adapter.resume(job)
            elif d.action == Action.RELOCATE and job.state in (JobState.PENDING, JobState.HELD):
                if d.region is None or d.region == job.region:
                    return False
                job = self.store.update(job.id, region=d.region, reason=d.reason)
                if job.engine_ref is not None and isinstance(adapter, Relocatable):
                    adapter.relocate(job, d.region)
            else:
                return False
        except AdapterError as exc:
            self._adapter_error(job, d.action.value, exc)
            return True
        except GridshiftError as exc:
            log.warning("decision %s for job %s not applied: %s", d.action, d.job_id, exc)
            return False
        self.metrics.decisions.labels(action=d.action.value, cause=cause).inc()
        log.info("job %s: %s (%s)", job.id, d.action.value, d.reason)
        return True

    def _apply_cap(self, d: Decision) -> bool:
        if self.capper is None or d.device_index is None:
            return False
        try:
            restore = getattr(self.capper, "restore", None)
            if d.action == Action.UNCAP and restore is not None:
                # back to the limit recorded before capping; nothing recorded: nothing to do
                if not restore(d.device_index, d.reason):
                    return False
            elif d.action == Action.UNCAP:
                self.capper.restore_defaults(d.reason)
            elif d.power_limit_w is not None:
                applied = self.capper.set_limit(d.device_index, d.power_limit_w, d.reason)
                if abs(applied - d.power_limit_w) >= 1.0:
                    return False  # rate-limited, dry run or not permitted: nothing changed
        except GridshiftError as exc:
            log.warning("GPU %s: power limit not changed: %s", d.device_index, exc)
            return False
        self.metrics.decisions.labels(action=d.action.value, cause="power").inc()
        return True

    def _ensure_submitted(self, job: Job, adapter: Adapter, region: str | None) -> Job:
        if job.engine_ref is not None:
            return job
        if region and region != job.region:
            job = self.store.update(job.id, region=region)
        ref = adapter.submit(job)
        return self.store.update(job.id, engine_ref=ref)

    def reconcile(self) -> None:
        """Bring the store and the engines into agreement; adopt opted-in native jobs."""
        if not self.leads():
            return
        with self._lock:
            for name, adapter in self.adapters.items():
                try:
                    managed = adapter.list_managed()
                except AdapterError as exc:
                    self.metrics.adapter_errors.labels(adapter=name, operation="list").inc()
                    log.warning("cannot list %s jobs (will retry): %s", name, exc)
                    continue
                self._adopt(name, managed)
            for job in self.store.list_jobs(ACTIVE_STATES):
                if job.engine_ref is None:
                    continue
                engine = self.adapters.get(job.spec.engine)
                if engine is None:
                    log.error(
                        "job %s uses engine %s, which is not installed", job.id, job.spec.engine
                    )
                    continue
                try:
                    self._reconcile_job(job, engine, engine.status(job))
                except GridshiftError as exc:
                    # One job's trouble (engine down, job unknown) must not stop the others.
                    self._adapter_error(job, "reconcile", exc)
            self._export_jobs(self.clock.now())

    def _reconcile_job(self, job: Job, adapter: Adapter, st: EngineStatus) -> None:
        now = self.clock.now()
        if st.state in (EngineState.SUCCEEDED, EngineState.FAILED, EngineState.CANCELLED):
            self._finish(job, st, now)
            return
        if job.state == JobState.RUNNING:
            if st.state in (EngineState.HELD, EngineState.MISSING):
                log.warning("job %s is recorded as running but is not: starting it", job.id)
                if st.state == EngineState.MISSING:
                    job = self.store.update(job.id, engine_ref=adapter.submit(job))
                adapter.release(job)
            elif st.state == EngineState.SUSPENDED and isinstance(adapter, Suspendable):
                adapter.resume(job)
            if st.gpus and st.gpus != job.gpus_assigned:
                job = self.store.update(job.id, gpus_assigned=st.gpus)
            self._account(job, now)
        elif job.state == JobState.SUSPENDED:
            if st.state == EngineState.RUNNING and isinstance(adapter, Suspendable):
                adapter.suspend(job)
        elif job.state in (JobState.PENDING, JobState.HELD):
            if st.state == EngineState.RUNNING:
                self.store.transition(
                    job.id, JobState.RUNNING, "started outside gridshift",
                    started_at=now, running_since=now,
                )  # fmt: skip
            elif st.state == EngineState.MISSING:
                log.warning("engine lost held job %s: submitting it again", job.id)
                self.store.update(job.id, engine_ref=adapter.submit(job))

    def _finish(self, job: Job, st: EngineStatus, now: datetime) -> None:
        target = ENGINE_TO_JOB_STATE[st.state]
        if job.state == JobState.CANCELLED:
            return
        job = self._account(job, now)
        run_s = job.run_s + self._stretch_s(job, now)
        counterfactual_g = job.counterfactual_g
        if counterfactual_g is not None and job.saving_is_estimate:
            # estimated for the declared run time at submission; the job ran for run_s
            counterfactual_g *= run_s / job.spec.expected_duration_s
        job = self.store.transition(
            job.id,
            target,
            st.message or f"ended with exit code {st.exit_code}",
            exit_code=st.exit_code,
            ended_at=now,
            run_s=run_s,
            running_since=None,
            counterfactual_g=counterfactual_g,
        )
        self._accounted_at.pop(job.id, None)
        if job.counterfactual_g is not None:
            saved = job.counterfactual_g - job.emissions_g
            basis = "estimate" if job.saving_is_estimate else "measured"
            if saved > 0:
                self.metrics.carbon_saved.labels(basis=basis).inc(saved)
        log.info("job %s %s (exit code %s)", job.id, target.value, st.exit_code)

    def _account(self, job: Job, now: datetime) -> Job:
        """Estimated energy and emissions of a running job since the last account (until
        measured GPU energy is attributed)."""
        if job.state != JobState.RUNNING or job.running_since is None:
            return job
        since = self._accounted_at.get(job.id) or job.running_since
        dt_s = (now - since).total_seconds()
        if dt_s <= 0:
            return job
        self._accounted_at[job.id] = now
        if self.gpu is not None and self.gpu.measures(job):
            return job  # measured GPU energy is attributed by sample_power instead
        energy_j = expected_power_w(job) * dt_s
        region = job.region or self.settings.default_region
        intensity = self.hub.intensity_at(region, now) if region in self.hub.chains else None
        grams = energy_j / 3.6e6 * intensity if intensity is not None else 0.0
        self.metrics.job_energy.inc(energy_j)
        self.metrics.job_emissions.inc(grams)
        return self.store.update(
            job.id, energy_j=job.energy_j + energy_j, emissions_g=job.emissions_g + grams
        )

    def _adopt(self, engine: str, managed: list[EngineStatus]) -> None:
        for st in managed:
            if st.job_id is not None or st.adopt_spec is None:
                if st.job_id is not None:
                    self._relink(engine, st)
                continue
            if self.store.find_by_engine_ref(engine, st.ref) is not None:
                continue
            try:
                spec = JobSpec.model_validate({"engine": engine, **st.adopt_spec})
            except Exception as exc:
                log.warning("cannot adopt %s job %s: %s", engine, st.ref, exc)
                continue
            now = self.clock.now()
            state = ENGINE_TO_JOB_STATE.get(st.state, JobState.HELD)
            if state.terminal:
                continue
            job = Job(
                id=new_job_id(),
                spec=spec,
                state=JobState.HELD if state == JobState.HELD else JobState.RUNNING,
                submitted_at=now,
                deadline=spec.resolve_deadline(now, self.settings.default_max_delay_s),
                engine_ref=st.ref,
                region=st.region,
                updated_at=now,
                started_at=now if state != JobState.HELD else None,
                running_since=now if state != JobState.HELD else None,
                counterfactual_g=self._expected_emissions_g(spec, st.region, now),
            )
            self.store.add_job(job, f"adopted from {engine} ({st.ref})")
            log.info("adopted %s job %s as %s", engine, st.ref, job.id)

    def _relink(self, engine: str, st: EngineStatus) -> None:
        """A job submitted to the engine just before a crash, whose ref was never stored."""
        assert st.job_id is not None
        try:
            job = self.store.get_job(st.job_id)
        except GridshiftError:
            return
        if job.engine_ref is None and job.spec.engine == engine and not job.state.terminal:
            self.store.update(job.id, engine_ref=st.ref)

    def sample_power(self) -> None:
        if self.gpu is None:
            return
        self.gpu.sample(
            lambda: self.store.list_jobs([JobState.RUNNING]),
            self.hub.intensity_at,
            self.hub.chains,
            self.settings.default_region,
        )
        if self.gpu.due():
            with self._lock:
                self.gpu.flush(self.store)

    # ------------------------------------------------------------------------------------
    # Helpers

    def _capacity(self) -> dict[str, int | None]:
        capacity: dict[str, int | None] = {
            name: region.capacity_gpus for name, region in self.settings.regions.items()
        }
        for adapter in self.adapters.values():
            if isinstance(adapter, Relocatable):
                for region, gpus in adapter.regions().items():
                    if capacity.get(region) is None:
                        capacity[region] = gpus
        return capacity

    def _expected_emissions_g(
        self, spec: JobSpec, region: str | None, start: datetime
    ) -> float | None:
        """Emissions had the job run at `start` (the counterfactual), from the forecast."""
        region = region or self.settings.default_region
        if region not in self.hub.chains:
            return None
        signal = self.hub.region_signal(region)
        if not signal.fresh or signal.forecast is None or not signal.forecast.points:
            return None
        t0 = start.timestamp()
        mean = StepSeries(signal.forecast).mean(t0, t0 + spec.expected_duration_s)
        if mean is None:
            return None
        return mean * spec_power_w(spec) * spec.expected_duration_s / 3.6e6

    @staticmethod
    def _stretch_s(job: Job, now: datetime) -> float:
        if job.running_since is None:
            return 0.0
        return max(0.0, (now - job.running_since).total_seconds())

    def _adapter_error(self, job: Job, operation: str, exc: Exception) -> None:
        self.metrics.adapter_errors.labels(adapter=job.spec.engine, operation=operation).inc()
        log.warning(
            "job %s: %s on %s failed (will retry): %s", job.id, operation, job.spec.engine, exc
        )

    def _stand_by(self) -> None:
        """A standby's tick: the acting agent reports the jobs (so sums over agents count
        each job once); this one reports none, and that it is alive."""
        for state in JobState:
            self.metrics.jobs.labels(state=state.value).set(0)
        self.metrics.jobs_at_risk.set(0)
        self.metrics.last_tick.set_to_current_time()

    def _export_jobs(self, now: datetime) -> None:
        for state, n in self.store.count_by_state().items():
            self.metrics.jobs.labels(state=state.value).set(n)
        horizon = now + timedelta(seconds=self.settings.tick_s * self.settings.clock_speed)
        waiting = self.store.list_jobs([JobState.PENDING, JobState.HELD])
        self.metrics.jobs_at_risk.set(sum(1 for j in waiting if j.latest_start <= horizon))

    # ------------------------------------------------------------------------------------
    # Lifecycle

    def startup(self) -> None:
        """Re-adopt what the store and the engines know, fetch signals, plan once."""
        if self.capper is not None:  # limits left capped by a run that died (SIGKILL, crash)
            try:
                self.capper.restore_defaults("agent starting: limits left by an earlier run")
            except GridshiftError as exc:
                log.error("could not restore GPU power limits at start-up: %s", exc)
        self.sample_power()
        self.reconcile()
        self._restore_signals()
        self.refresh_signals()
        self.tick()

    def start_background(self) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        s = self.settings
        scheduler = BackgroundScheduler(
            timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1}
        )
        tasks: list[tuple[str, Callable[[], Any], float]] = [
            ("refresh_signals", self.refresh_signals, s.signal_refresh_s),
            ("reconcile", self.reconcile, s.reconcile_s),
            ("tick", self.tick, s.tick_s),
        ]
        if self.power_source is not None:
            tasks.append(("sample_power", self.sample_power, s.nvml.sample_interval_s))
        for name, fn, every_s in tasks:
            self.metrics.declare_task(name)
            scheduler.add_job(self._guarded(name, fn), "interval", seconds=every_s, id=name)
        scheduler.start()
        self._scheduler = scheduler

    def _guarded(self, name: str, fn: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except Exception:
                self.metrics.tick_errors.labels(task=name).inc()
                log.exception("periodic task %s failed; it will run again", name)

        return run

    def stop(self) -> None:
        """Drain: stop the periodic work (waiting for a task in flight), restore power caps,
        close the store. Jobs keep running; a restarted agent re-adopts them."""
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        if self.capper is not None:
            try:
                self.capper.restore_defaults("agent stopping")
            except GridshiftError as exc:
                log.error("could not restore GPU power limits: %s", exc)
        with self._lock:
            if self.gpu is not None:
                self.gpu.flush(self.store)
            self.store.close()
