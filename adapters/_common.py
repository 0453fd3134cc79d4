"""What the adapters that place jobs in one of several clusters (Ray, Kubernetes) share:
regions as clusters, and the check of a job's engine options."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Generic, Protocol, TypeVar

from gridshift.scheduler.errors import ValidationError
from gridshift.scheduler.models import Job, JobSpec


class _Cluster(Protocol):
    @property
    def capacity_gpus(self) -> int | None: ...


C = TypeVar("C", bound=_Cluster)


class Clusters(Generic[C]):
    """An engine's regions, one cluster each: lookup with an error that names the setting,
    the region a job goes to, and the GPUs the planner may fill in each."""

    def __init__(
        self, engine: str, setting: str, clusters: Mapping[str, C], default: str | None
    ) -> None:
        self.engine = engine  # as users read it: "Ray"
        self.setting = setting  # the settings section: "ray"
        self.clusters = dict(clusters)
        self.default = default or next(iter(self.clusters))

    def get(self, region: str | None) -> C:
        name = region or self.default
        if name not in self.clusters:
            raise ValidationError(
                f"region {name!r} has no {self.engine} cluster; configured regions: "
                f"{', '.join(sorted(self.clusters))} (see {self.setting}.regions)"
            )
        return self.clusters[name]

    def of(self, job: Job) -> str:
        """The region the job runs in (its own, else the default), known to have a cluster."""
        region = job.region or self.default
        self.get(region)
        return region

    def check_allowed(self, spec: JobSpec) -> None:
        for region in spec.allowed_regions:
            self.get(region)

    def capacities(self) -> dict[str, int | None]:
        return {name: cluster.capacity_gpus for name, cluster in self.clusters.items()}


def check_option_names(engine: str, options: Mapping[str, Any], known: Collection[str]) -> None:
    """Refuse engine options the adapter does not know (a typo must not pass silently)."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValidationError(
            f"unknown {engine} engine options {', '.join(unknown)} "
            f"(known: {', '.join(sorted(known))})"
        )
