"""The agent's GPU side: sample power, export GPU metrics, attribute measured energy to jobs.

`GpuAccounting` is what the agent's `sample_power` task calls every `nvml.sample_interval_s`.
It keeps the hot path in memory: each round's increments are added to pending totals, which
`flush` writes to the store (every `flush_every_s`, and when the agent stops), so a 1 Hz
sampler does not commit to the database every second.

Without a driver the first sample says "GPU telemetry is off" once (warning) and the agent
carries on; it tries again quietly every `retry_s`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry

from ..clock import monotonic_s
from ..errors import GridshiftError, TelemetryError
from ..interfaces import PowerSource
from ..models import Job, JobState, PowerSample
from .attribution import EnergyAttributor, JobHolding, JobIncrement
from .metrics import GpuCollector

log = logging.getLogger(__name__)

IntensityAt = Callable[[str, datetime], float | None]


class GpuAccounting:
    def __init__(
        self,
        source: PowerSource,
        registry: CollectorRegistry,
        *,
        metrics: Any = None,
        flush_every_s: float = 10.0,
        retry_s: float = 300.0,
        jobs_refresh_s: float = 1.0,
    ) -> None:
        self.source = source
        self.collector = GpuCollector(registry)
        self.metrics = metrics  # AgentMetrics, for the job energy/emissions counters
        self.attributor = EnergyAttributor()
        self.flush_every_s = flush_every_s
        self.retry_s = retry_s
        self.jobs_refresh_s = jobs_refresh_s
        self.latest: list[PowerSample] = []
        self.telemetry_off: str | None = None
        self._off_since = 0.0
        self._pending: dict[str, JobIncrement] = {}
        self._measured: set[str] = set()
        self._last_flush = monotonic_s()
        self._jobs: list[Job] = []
        self._jobs_at = -1e18
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        """True while samples arrive (measured energy replaces estimates)."""
        return self.telemetry_off is None and bool(self.latest)

    def measures(self, job: Job) -> bool:
        """Whether this job's energy is measured here (so estimates must not be added)."""
        return self.active and bool(job.gpus_assigned)

    def sample(
        self,
        list_running: Callable[[], Sequence[Job]],
        intensity_at: IntensityAt,
        regions: Iterable[str],
        default_region: str,
    ) -> list[PowerSample]:
        """One sampling round. Never raises for a missing driver (says so once)."""
        with self._lock:
            now_mono = monotonic_s()
            if self.telemetry_off is not None and now_mono - self._off_since < self.retry_s:
                return []
            try:
                samples = self.source.sample()
            except TelemetryError as exc:
                if self.telemetry_off is None:
                    log.warning(
                        "GPU telemetry is off: %s. Scheduling goes on; job energy is estimated.",
                        exc,
                    )
                self.telemetry_off = str(exc)
                self._off_since = now_mono
                self.latest = []
                return []
            if self.telemetry_off is not None:
                log.info("GPU telemetry is back: %d GPU(s)", len(samples))
                self.telemetry_off = None
            self.latest = samples
            self.collector.update(samples)
            if now_mono - self._jobs_at >= self.jobs_refresh_s:
                self._jobs = [j for j in list_running() if j.state == JobState.RUNNING]
                self._jobs_at = now_mono
            at = samples[0].at if samples else None
            if at is not None:
                for region in regions:
                    value = intensity_at(region, at)
                    if value is not None:
                        self.attributor.history.record(region, at, value)
            holdings = []
            for job in self._jobs:
                if not job.gpus_assigned:
                    continue
                self.attributor.seed_run_offset(job.id, job.run_s)
                holdings.append(
                    JobHolding(
                        job.id, job.gpus_assigned, job.submitted_at, job.region or default_region
                    )
                )
            result = self.attributor.add(samples, holdings, intensity_at)
            for job_id, inc in result.jobs.items():
                acc = self._pending.setdefault(job_id, JobIncrement())
                acc.energy_j += inc.energy_j
                acc.emissions_g += inc.emissions_g
                acc.counterfactual_g += inc.counterfactual_g
                acc.unpriced_j += inc.unpriced_j
                if self.metrics is not None:
                    self.metrics.job_energy.inc(inc.energy_j)
                    self.metrics.job_emissions.inc(inc.emissions_g)
            return samples

    def due(self) -> bool:
        return monotonic_s() - self._last_flush >= self.flush_every_s

    def flush(self, store: Any) -> None:
        """Add pending increments to the jobs in the store (energy, emissions, counterfactual).

        The first measured flush of a job replaces the counterfactual estimated at submission
        with the measured one (and marks the saving as measured)."""
        with self._lock:
            pending, self._pending = self._pending, {}
            self._last_flush = monotonic_s()
        for job_id, inc in pending.items():
            try:
                job = store.get_job(job_id)
                fields: dict[str, Any] = {
                    "energy_j": job.energy_j + inc.energy_j,
                    "emissions_g": job.emissions_g + inc.emissions_g,
                }
                if job_id not in self._measured and job.saving_is_estimate:
                    fields["counterfactual_g"] = inc.counterfactual_g
                    fields["saving_is_estimate"] = False
                else:
                    fields["counterfactual_g"] = (
                        job.counterfactual_g or 0.0
                    ) + inc.counterfactual_g
                store.update(job_id, **fields)
                self._measured.add(job_id)
                if job.state.terminal:
                    self.attributor.forget(job_id)
            except GridshiftError as exc:
                log.warning("could not record GPU energy of job %s: %s", job_id, exc)
