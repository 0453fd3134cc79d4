"""A real Slurm for the whole test session: munged, slurmctld and slurmd started as root.

The bed (see bed.py) comes up in about a second and is torn down by pid file at the end.
"""

from __future__ import annotations

import itertools
import os
import shutil
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gridshift.adapters.slurm import SlurmAdapter
from gridshift.scheduler.clock import FakeClock
from gridshift.scheduler.config import SlurmAdapterConfig
from gridshift.scheduler.models import Job, JobSpec
from tests.conftest import require

from .bed import PARTITIONS, SlurmBed, missing_binaries, new_bed


@pytest.fixture(scope="session")
def slurm_bed() -> Iterator[SlurmBed]:
    missing = missing_binaries()
    require(
        "slurm",
        not missing,
        f"missing {', '.join(missing)}; apt-get install munge slurm-wlm slurmctld slurmd "
        "slurm-client",
    )
    require("slurm", os.geteuid() == 0, "the test Slurm bed starts munged/slurmctld/slurmd as root")
    bed = new_bed()
    try:
        bed.start()
    except Exception:
        bed.stop()
        raise
    yield bed
    bed.stop()
    shutil.rmtree(bed.root, ignore_errors=True)


@pytest.fixture
def bed(slurm_bed: SlurmBed) -> Iterator[SlurmBed]:
    """The session bed, with every job cancelled after each test (the node stays free)."""
    slurm_bed.wait_controller()
    yield slurm_bed
    slurm_bed.run("scancel", "--full", "-u", "root", check=False)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        states = slurm_bed.run("squeue", "-h", "-o", "%T", check=False).split()
        if not [s for s in states if s not in ("COMPLETED", "CANCELLED", "FAILED")]:
            break
        time.sleep(0.3)


def slurm_config(bed: SlurmBed, **overrides: Any) -> SlurmAdapterConfig:
    data: dict[str, Any] = {
        "regions": {region: {"partition": part} for region, part in PARTITIONS.items()},
        "default_region": "brown",
        "slurm_conf": str(bed.conf),
        "timeout_s": 15,
    }
    data.update(overrides)
    return SlurmAdapterConfig(**data)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def adapter(bed: SlurmBed, clock: FakeClock) -> SlurmAdapter:
    return SlurmAdapter(slurm_config(bed), clock)


_JOB_NUMBERS = itertools.count(1)  # gridshift ids are unique for the whole session


@pytest.fixture
def make_job(bed: SlurmBed, clock: FakeClock) -> Callable[..., Job]:
    def make(
        *,
        command: str = "sleep 300",
        region: str | None = "brown",
        gpus: int = 1,
        duration_s: float = 600,
        deadline_s: float = 8 * 3600,
        planned_in_s: float | None = 3600,
        **spec: Any,
    ) -> Job:
        now = clock.now()
        n = next(_JOB_NUMBERS)
        job_spec = JobSpec(
            name=f"gs-test-{n}",
            command=[command],
            shell=True,
            workdir=str(bed.root / "jobs"),
            gpus=gpus,
            expected_duration_s=duration_s,
            **spec,
        )
        return Job(
            id=f"j-test{n}",
            spec=job_spec,
            submitted_at=now,
            deadline=now + timedelta(seconds=deadline_s),
            region=region,
            planned_start=now + timedelta(seconds=planned_in_s) if planned_in_s else None,
            updated_at=now,
        )

    return make
