"""Prometheus metrics of the GPUs, from the latest power samples.

A custom collector on the registry passed in: `update(samples)` stores the latest reading of
each device (cheap, on the sampling path) and a scrape turns them into metric families. The
energy counter is exported as the device's own cumulative counter (its last reading: the
counter is read less often than power), so it never resets with the agent; a device without
a counter exports power integrated by the agent. Labels are only `gpu` (the index) and
`uuid`: bounded by the hardware.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..models import PowerSample

LABELS = ["gpu", "uuid"]


class GpuCollector(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self._lock = threading.Lock()
        self._latest: dict[int, PowerSample] = {}
        self._integrated_j: dict[int, float] = {}
        self._counter_j: dict[int, tuple[str, float]] = {}
        registry.register(self)

    def update(self, samples: Sequence[PowerSample]) -> None:
        with self._lock:
            for s in samples:
                prev = self._latest.get(s.index)
                if s.energy_j is not None:
                    self._counter_j[s.index] = (s.uuid, s.energy_j)
                elif s.index not in self._counter_j and prev is not None and prev.uuid == s.uuid:
                    dt_s = (s.at - prev.at).total_seconds()
                    if 0 < dt_s <= 60:
                        p0 = prev.power_avg_w if prev.power_avg_w is not None else prev.power_w
                        p1 = s.power_avg_w if s.power_avg_w is not None else s.power_w
                        self._integrated_j[s.index] = (
                            self._integrated_j.get(s.index, 0.0) + (p0 + p1) / 2 * dt_s
                        )
                self._latest[s.index] = s

    def forget(self, index: int) -> None:
        with self._lock:
            self._latest.pop(index, None)

    def describe(self) -> list[Metric]:
        # Families are known in advance; describing them lets the registry check for clashes.
        return list(self._families({}))

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            latest = dict(self._latest)
        yield from self._families(latest)

    def _families(self, latest: dict[int, PowerSample]) -> Iterator[Metric]:
        power = GaugeMetricFamily(
            "gridshift_gpu_power_watts", "GPU power draw (instant where reported)", labels=LABELS
        )
        energy = CounterMetricFamily(
            "gridshift_gpu_energy_joules",
            "GPU energy: the device's counter, or power integrated by gridshift where the "
            "device has none",
            labels=LABELS,
        )
        limit = GaugeMetricFamily(
            "gridshift_gpu_power_limit_watts", "GPU power limit in force", labels=LABELS
        )
        default = GaugeMetricFamily(
            "gridshift_gpu_default_power_limit_watts", "GPU default power limit", labels=LABELS
        )
        util = GaugeMetricFamily(
            "gridshift_gpu_utilization_ratio",
            "Fraction of the last sample period a kernel ran on the GPU",
            labels=LABELS,
        )
        for index in sorted(latest):
            s = latest[index]
            lv = [str(index), s.uuid]
            power.add_metric(lv, s.power_w)
            counter = self._counter_j.get(index)
            if counter is not None and counter[0] == s.uuid:
                energy.add_metric(lv, counter[1])  # the last reading (it may lag power)
            elif index in self._integrated_j:
                energy.add_metric(lv, self._integrated_j[index])
            if s.power_limit_w is not None:
                limit.add_metric(lv, s.power_limit_w)
            if s.default_limit_w is not None:
                default.add_metric(lv, s.default_limit_w)
            if s.utilization_pct is not None:
                util.add_metric(lv, s.utilization_pct / 100)
        yield from (power, energy, limit, default, util)
