"""Prometheus metrics. Every collector is registered on the registry passed in, so tests and
several agents in one process never share global state.

Names carry their units; counters end in _total; no label takes unbounded values on a
high-frequency series (job ids appear only in the bounded per-job families, if at all).
"""

from __future__ import annotations

import re

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)

from . import __version__
from .models import JobState

# Label values known before anything happens. Their series are created at 0 up front, so a
# dashboard shows 0 rather than "no data" and increase() in an alert counts the first event.
ADAPTER_OPERATIONS = ("start", "hold", "suspend", "resume", "relocate", "list", "reconcile")
FETCH_OUTCOMES = ("ok", "error")
SAVING_BASES = ("estimate", "measured")

_CAUSE_CUT = re.compile(r"[:\d(;]")


def decision_cause(reason: str) -> str:
    """A bounded label value for a free-text decision reason: its leading words, cut before
    the first figure, time, colon or parenthesis (where the unbounded detail starts).

    "latest start 2026-06-01 12:00Z has passed: ..." -> "latest start";
    "waiting until 2026-06-01 13:00Z: ..." -> "waiting until".
    """
    head = " ".join(_CAUSE_CUT.split(reason, maxsplit=1)[0].split())
    return head[:60].strip(" ,.-") or "other"


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        r = registry

        self.build_info = Info("gridshift_build", "gridshift version", registry=r)
        self.build_info.info({"version": __version__})
        # The agent's own health: process_* (CPU seconds, resident memory, open fds, start
        # time) and python_info, read from /proc at scrape time.
        self.process = ProcessCollector(registry=r)
        self.platform = PlatformCollector(registry=r)

        # Grid signals
        self.intensity = Gauge(
            "gridshift_grid_carbon_intensity_grams_per_kwh",
            "Grid carbon intensity in use for a region (gCO2eq/kWh)",
            ["region", "provider", "kind"],
            registry=r,
        )
        self.forecast_min = Gauge(
            "gridshift_grid_carbon_intensity_forecast_min_grams_per_kwh",
            "Lowest forecast intensity within the horizon (gCO2eq/kWh)",
            ["region", "horizon"],
            registry=r,
        )
        self.forecast_next = Gauge(
            "gridshift_grid_carbon_intensity_forecast_grams_per_kwh",
            "Forecast intensity at a lead time from now (gCO2eq/kWh)",
            ["region", "lead"],
            registry=r,
        )
        self.forecast_error = Gauge(
            "gridshift_grid_carbon_intensity_forecast_error_grams_per_kwh",
            "Root mean square error of the region's recent forecasts 1-24 h ahead, measured "
            "against the values that followed (gCO2eq/kWh)",
            ["region"],
            registry=r,
        )
        self.signal_age = Gauge(
            "gridshift_signal_age_seconds",
            "Age of the intensity value in use for a region",
            ["region"],
            registry=r,
        )
        self.signal_fresh = Gauge(
            "gridshift_signal_fresh",
            "1 if the region has a signal younger than the staleness limit, else 0 (fail open)",
            ["region"],
            registry=r,
        )
        self.signal_provider = Gauge(
            "gridshift_signal_provider_in_use",
            "1 for the provider whose value is in use for a region",
            ["region", "provider"],
            registry=r,
        )
        self.signal_fetches = Counter(
            "gridshift_signal_fetches_total",
            "Calls to carbon-intensity providers",
            ["provider", "outcome"],
            registry=r,
        )
        self.signal_errors = Counter(
            "gridshift_signal_fetch_errors_total",
            "Failed provider calls by reason",
            ["provider", "reason"],
            registry=r,
        )
        self.signal_switches = Counter(
            "gridshift_signal_provider_switches_total",
            "Times a region changed the provider it uses (failover or recovery)",
            ["region"],
            registry=r,
        )

        # Jobs and decisions
        self.jobs = Gauge("gridshift_jobs", "Jobs by state", ["state"], registry=r)
        for state in JobState:
            self.jobs.labels(state=state.value).set(0)
        self.jobs_at_risk = Gauge(
            "gridshift_jobs_deadline_at_risk",
            "Jobs not running whose latest start is within the next tick or already past",
            registry=r,
        )
        self.decisions = Counter(
            "gridshift_decisions_total",
            "Planner decisions applied, by action and cause",
            ["action", "cause"],
            registry=r,
        )
        self.job_wait = Histogram(
            "gridshift_job_wait_seconds",
            "Time from submission to first start",
            buckets=(60, 300, 900, 1800, 3600, 7200, 14400, 28800, 57600, 86400, 172800),
            registry=r,
        )
        self.job_energy = Counter(
            "gridshift_job_energy_joules_total",
            "GPU energy attributed to jobs",
            registry=r,
        )
        self.job_emissions = Counter(
            "gridshift_job_emissions_grams_total",
            "Emissions attributed to jobs (energy x intensity at the time)",
            registry=r,
        )
        self.carbon_saved = Counter(
            "gridshift_carbon_saved_grams_total",
            "Emissions avoided against running each job at submission, unthrottled",
            ["basis"],
            registry=r,
        )
        for basis in SAVING_BASES:
            self.carbon_saved.labels(basis=basis)
        self.job_placements = Counter(
            "gridshift_job_placements_total",
            "Jobs started, by the region (cluster) they were placed in",
            ["region"],
            registry=r,
        )

        # The agent itself
        self.tick_duration = Histogram(
            "gridshift_tick_duration_seconds",
            "Wall time of one planning tick (snapshot, plan, apply)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.planner_duration = Histogram(
            "gridshift_planner_duration_seconds",
            "Wall time of the pure planning step",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
            registry=r,
        )
        self.last_tick = Gauge(
            "gridshift_last_tick_timestamp_seconds",
            "Unix time of the last completed planning tick",
            registry=r,
        )
        self.leader = Gauge(
            "gridshift_leader",
            "1 while this agent acts on the jobs of its database; 0 while it stands by "
            "(another agent on the same database acts) or cannot reach it",
            ["database"],
            registry=r,
        )
        self.adapter_errors = Counter(
            "gridshift_adapter_errors_total",
            "Engine actions that failed",
            ["adapter", "operation"],
            registry=r,
        )
        self.tick_errors = Counter(
            "gridshift_tick_errors_total",
            "Periodic tasks that raised",
            ["task"],
            registry=r,
        )

    # Declaring the label values a running agent will use (series at 0 from the start).

    def declare_adapter(self, adapter: str) -> None:
        for operation in ADAPTER_OPERATIONS:
            self.adapter_errors.labels(adapter=adapter, operation=operation)

    def declare_provider(self, provider: str) -> None:
        for outcome in FETCH_OUTCOMES:
            self.signal_fetches.labels(provider=provider, outcome=outcome)

    def declare_task(self, task: str) -> None:
        self.tick_errors.labels(task=task)

    def declare_region(self, region: str) -> None:
        self.job_placements.labels(region=region)
