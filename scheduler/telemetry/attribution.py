"""Attribution of measured GPU energy to jobs, and of emissions to that energy. Pure: no I/O.

Feed `EnergyAttributor.add` each round of power samples, which job holds which GPU, and an
intensity lookup; it returns what each job gained since the previous round (energy in J,
emissions in g, counterfactual emissions in g). The caller adds the increments to the store
and the metrics.

Energy of a device over an interval (between two consecutive samples of it):

- the difference of its cumulative energy counter (mJ in NVML, J here) when both samples
  carry one and the counter did not go backwards (a GPU reset zeroes it);
- otherwise the trapezoid of power over the interval, using the driver's one-second average
  power where reported (it covers the whole second before each reading, so at 1 Hz it misses
  nothing) and the instant reading where not. Gaps longer than `max_gap_s` without a counter
  are not integrated (nobody knows what ran in between); the energy is lost, not guessed.
- The counter may be read less often than power (it is slow on some drivers: see nvml.py).
  Then the samples in between are integrated provisionally, and when the counter is read
  again the energy given out since its previous reading is scaled so that its total equals
  the counter's difference: every holder in that window gets the same relative correction,
  priced at the intensity of the interval that closes the window. Over each window the
  device's energy is the counter's; within it, the split follows the integrated power.

Who gets a device's energy — the shared-GPU rule:

- A job holds a device if the device's index is in the job's GPU list (Job.gpus_assigned,
  which the engine adapter reports), or if the caller's per-device weights name the job (for
  example from NVML's process list: GPU memory used by each job's processes).
- If one job holds the device, it gets all of the interval's energy.
- If several jobs hold it, the energy is split in proportion to their weights when the caller
  gives weights for that device (GPU memory in use is the default proxy: it is what NVML
  reports per process, and compute share is not reported at all), and equally otherwise.
  Weights are normalised among the holders; a holder without a weight gets the mean of the
  others' weights, so a job is never charged nothing because its weight is unknown.
- Energy of a device that no job holds is idle energy: counted in `idle_j`, charged to no job.
- A job's energy on several devices is the sum over them.

Emissions of an interval = energy (kWh) x intensity (g/kWh) of the job's region at the middle
of the interval. Where the lookup knows no intensity, the energy is counted and its grams are
not (reported as `unpriced_j`).

Counterfactual ("had it run at submission, unthrottled"): the interval's energy is priced at
the intensity of the instant `submitted_at + run offset`, the run offset being how long the
job had run (as seen by this attributor) at the middle of the interval. The energy is taken as
measured: a power cap lowers power but lengthens the run, and energy to solution is about the
same or lower under a cap, so this understates (never inflates) what capping saved.
Intensities of past instants come from the history this attributor has recorded (each round
records the intensity it priced at), falling back to the caller's lookup.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..models import PowerSample

J_PER_KWH = 3.6e6

IntensityLookup = Callable[[str, datetime], float | None]
"""(region, instant) -> gCO2eq/kWh, or None when unknown."""


@dataclass(frozen=True)
class JobHolding:
    """What the attributor needs to know about a running job."""

    job_id: str
    gpus: Sequence[int]
    submitted_at: datetime
    region: str


@dataclass
class JobIncrement:
    energy_j: float = 0.0
    emissions_g: float = 0.0
    counterfactual_g: float = 0.0
    unpriced_j: float = 0.0

    @property
    def saved_g(self) -> float:
        return self.counterfactual_g - self.emissions_g


@dataclass
class RoundResult:
    jobs: dict[str, JobIncrement] = field(default_factory=dict)
    device_j: dict[int, float] = field(default_factory=dict)
    idle_j: float = 0.0

    @property
    def saved_g(self) -> float:
        return sum(inc.saved_g for inc in self.jobs.values())


class IntensityHistory:
    """The intensities seen, per region, as a step function of time (bounded)."""

    def __init__(self, max_points: int = 200_000) -> None:
        self.max_points = max_points
        self._times: dict[str, list[float]] = {}
        self._values: dict[str, list[float]] = {}

    def record(self, region: str, at: datetime, intensity_g_per_kwh: float) -> None:
        times = self._times.setdefault(region, [])
        values = self._values.setdefault(region, [])
        t = at.timestamp()
        if times and t <= times[-1]:
            if t == times[-1]:
                values[-1] = intensity_g_per_kwh
            return  # out of order: keep the series monotonic
        if values and values[-1] == intensity_g_per_kwh:
            return  # a step function needs only the changes
        times.append(t)
        values.append(intensity_g_per_kwh)
        if len(times) > self.max_points:
            del times[: len(times) - self.max_points]
            del values[: len(values) - self.max_points]

    def at(self, region: str, when: datetime) -> float | None:
        times = self._times.get(region)
        if not times:
            return None
        i = bisect.bisect_right(times, when.timestamp()) - 1
        if i < 0:
            return None
        return self._values[region][i]

    def prune_before(self, when: datetime) -> None:
        """Forget values older than `when`, keeping the one in force at `when`."""
        t = when.timestamp()
        for region, times in self._times.items():
            i = bisect.bisect_right(times, t) - 1
            if i > 0:
                del times[:i]
                del self._values[region][:i]


def device_energy_j(prev: PowerSample, cur: PowerSample, max_gap_s: float) -> float | None:
    """Energy of one device between two of its samples (see the module docstring)."""
    dt_s = (cur.at - prev.at).total_seconds()
    if dt_s <= 0:
        return None
    if prev.energy_j is not None and cur.energy_j is not None and cur.energy_j >= prev.energy_j:
        return cur.energy_j - prev.energy_j
    if dt_s > max_gap_s:
        return None
    p0 = prev.power_avg_w if prev.power_avg_w is not None else prev.power_w
    p1 = cur.power_avg_w if cur.power_avg_w is not None else cur.power_w
    return (p0 + p1) / 2 * dt_s


def split_shares(holders: Sequence[str], weights: Mapping[str, float] | None) -> dict[str, float]:
    """Fractions of a device's energy for each holder (the shared-GPU rule)."""
    if not holders:
        return {}
    if len(holders) == 1:
        return {holders[0]: 1.0}
    known = {j: max(0.0, float(w)) for j, w in (weights or {}).items() if j in holders}
    if not known or sum(known.values()) <= 0:
        return {j: 1.0 / len(holders) for j in holders}
    mean = sum(known.values()) / len(known)
    raw = {j: known.get(j, mean) for j in holders}
    total = sum(raw.values())
    return {j: w / total for j, w in raw.items()}


def weights_from_processes(
    processes: Mapping[int, Iterable[tuple[int, int | None]]], job_of_pid: Mapping[int, str]
) -> dict[int, dict[str, float]]:
    """Per-device job weights from NVML process lists: {gpu: [(pid, used bytes)]} and a
    pid -> job map (from the engine adapter) give {gpu: {job: bytes}}. A process with
    unknown memory counts one byte, so its job is still a holder."""
    out: dict[int, dict[str, float]] = {}
    for gpu, procs in processes.items():
        for pid, used in procs:
            job = job_of_pid.get(pid)
            if job is None:
                continue
            slot = out.setdefault(gpu, {})
            slot[job] = slot.get(job, 0.0) + float(used if used else 1)
    return out


IDLE = ""
"""The key of idle energy (a device no job holds) in the per-device provisional record."""


@dataclass
class _DeviceState:
    last: PowerSample
    anchor: PowerSample | None = None  # the last sample that carried the energy counter
    # Energy given out by integration since the anchor: job id (or IDLE) -> J, and its
    # region, the intensity and the counterfactual intensity it was priced at.
    provisional_j: dict[str, float] = field(default_factory=dict)


class EnergyAttributor:
    """Turns rounds of power samples into per-job energy, emissions and counterfactuals."""

    def __init__(self, max_gap_s: float = 30.0) -> None:
        self.max_gap_s = max_gap_s
        self.history = IntensityHistory()
        self._dev: dict[int, _DeviceState] = {}
        self._run_s: dict[str, float] = {}
        self.totals = RoundResult()

    def run_offset_s(self, job_id: str) -> float:
        return self._run_s.get(job_id, 0.0)

    def seed_run_offset(self, job_id: str, run_s: float) -> None:
        """Tell the attributor how long a job had already run (e.g. after an agent restart)."""
        self._run_s.setdefault(job_id, run_s)

    def forget(self, job_id: str) -> None:
        self._run_s.pop(job_id, None)

    def add(
        self,
        samples: Sequence[PowerSample],
        holdings: Sequence[JobHolding],
        intensity_at: IntensityLookup,
        weights: Mapping[int, Mapping[str, float]] | None = None,
    ) -> RoundResult:
        """Account one round of samples. Returns this round's increments."""
        result = RoundResult()
        holders: dict[int, list[str]] = {}
        by_id = {h.job_id: h for h in holdings}
        for h in holdings:
            for gpu in h.gpus:
                holders.setdefault(gpu, []).append(h.job_id)
        for gpu, job_weights in (weights or {}).items():
            for job_id in job_weights:
                if job_id in by_id and job_id not in holders.setdefault(gpu, []):
                    holders[gpu].append(job_id)

        priced: dict[tuple[str, datetime], float | None] = {}

        def price(region: str, when: datetime) -> float | None:
            key = (region, when)
            if key not in priced:
                value = intensity_at(region, when)
                priced[key] = value
                if value is not None:
                    self.history.record(region, when, value)
            return priced[key]

        def charge(job_id: str, job_j: float, mid: datetime, dt_s: float) -> None:
            if job_id == IDLE:
                result.idle_j += job_j
                return
            hold = by_id.get(job_id)
            inc = result.jobs.setdefault(job_id, JobIncrement())
            inc.energy_j += job_j
            if hold is None:  # a correction for a job that has since stopped: energy only
                inc.unpriced_j += job_j
                return
            intensity = price(hold.region, mid)
            offset_s = self._run_s.get(job_id, 0.0) + dt_s / 2
            cf_when = hold.submitted_at + timedelta(seconds=offset_s)
            cf_intensity = self.history.at(hold.region, cf_when)
            if cf_intensity is None:
                cf_intensity = intensity_at(hold.region, cf_when)
            if intensity is None or cf_intensity is None:
                inc.unpriced_j += job_j
                return
            inc.emissions_g += job_j / J_PER_KWH * intensity
            inc.counterfactual_g += job_j / J_PER_KWH * cf_intensity

        advanced: dict[str, float] = {}
        for cur in samples:
            st = self._dev.get(cur.index)
            if st is None or st.last.uuid != cur.uuid:
                self._dev[cur.index] = _DeviceState(
                    last=cur, anchor=cur if cur.energy_j is not None else None
                )
                continue  # first sample of this device (or a different device): no interval
            prev, st.last = st.last, cur
            dt_s = (cur.at - prev.at).total_seconds()
            if dt_s <= 0:
                continue
            mid = prev.at + (cur.at - prev.at) / 2
            shares = split_shares(holders.get(cur.index, []), (weights or {}).get(cur.index))
            if not shares:
                shares = {IDLE: 1.0}
            for job_id in shares:
                if job_id != IDLE:
                    advanced[job_id] = max(advanced.get(job_id, 0.0), dt_s)

            anchor = st.anchor
            counter_j: float | None = None
            if (
                cur.energy_j is not None
                and anchor is not None
                and anchor.energy_j is not None
                and cur.energy_j >= anchor.energy_j
            ):
                counter_j = cur.energy_j - anchor.energy_j
            integrated_j = _trapezoid_j(prev, cur, dt_s) if dt_s <= self.max_gap_s else None

            if counter_j is not None and prev is anchor:
                # The counter at both ends of the interval: exact.
                interval_j = counter_j
                corrections: dict[str, float] = {}
            elif counter_j is not None:
                # The counter closes a window integrated sample by sample: scale what was
                # given out in the window (and this interval) so the total is the counter's.
                this_j = integrated_j or 0.0
                given_j = sum(st.provisional_j.values()) + this_j
                if given_j > 0:
                    factor = counter_j / given_j
                    interval_j = this_j * factor
                    corrections = {j: e * (factor - 1) for j, e in st.provisional_j.items() if e}
                else:  # nothing integrated in the window (e.g. a gap): the current holders
                    interval_j = counter_j
                    corrections = {}
            elif integrated_j is not None:
                interval_j = integrated_j
                corrections = {}
            else:
                interval_j = None  # a long gap without a counter: not guessed
                corrections = {}

            if interval_j is not None:
                result.device_j[cur.index] = result.device_j.get(cur.index, 0.0) + interval_j
                for job_id, share in shares.items():
                    charge(job_id, interval_j * share, mid, dt_s)
            for job_id, extra_j in corrections.items():
                result.device_j[cur.index] = result.device_j.get(cur.index, 0.0) + extra_j
                charge(job_id, extra_j, mid, dt_s)

            # Keep the window's record for the next counter reading.
            if cur.energy_j is not None:
                st.anchor = cur
                st.provisional_j = {}
            elif anchor is not None and interval_j is not None:
                for job_id, share in shares.items():
                    st.provisional_j[job_id] = (
                        st.provisional_j.get(job_id, 0.0) + interval_j * share
                    )
            elif anchor is not None:
                st.anchor = None  # a gap broke the window: start afresh at the next reading
                st.provisional_j = {}

        for job_id, dt_s in advanced.items():
            self._run_s[job_id] = self._run_s.get(job_id, 0.0) + dt_s
        self._merge(result)
        return result

    def _merge(self, r: RoundResult) -> None:
        t = self.totals
        t.idle_j += r.idle_j
        for gpu, j in r.device_j.items():
            t.device_j[gpu] = t.device_j.get(gpu, 0.0) + j
        for job_id, inc in r.jobs.items():
            acc = t.jobs.setdefault(job_id, JobIncrement())
            acc.energy_j += inc.energy_j
            acc.emissions_g += inc.emissions_g
            acc.counterfactual_g += inc.counterfactual_g
            acc.unpriced_j += inc.unpriced_j


def _trapezoid_j(prev: PowerSample, cur: PowerSample, dt_s: float) -> float:
    p0 = prev.power_avg_w if prev.power_avg_w is not None else prev.power_w
    p1 = cur.power_avg_w if cur.power_avg_w is not None else cur.power_w
    return (p0 + p1) / 2 * dt_s
