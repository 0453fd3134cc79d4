"""The adapter contract (tests/contract.py) against a real Slurm."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from gridshift.adapters.slurm import SlurmAdapter
from gridshift.scheduler.clock import FakeClock
from gridshift.scheduler.models import Job, JobSpec, new_job_id
from tests.contract import AdapterContract, EngineUnderTest

from .bed import SlurmBed
from .conftest import slurm_config

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


class TestSlurmAdapterContract(AdapterContract):
    @pytest.fixture
    def engine(self, bed: SlurmBed, clock: FakeClock) -> EngineUnderTest:
        adapter = SlurmAdapter(slurm_config(bed), clock)

        def make_job(command: str, **kw: Any) -> Job:
            now = clock.now()
            spec = JobSpec(
                engine="slurm",
                command=[command],
                shell=True,
                workdir=str(bed.root / "jobs"),
                expected_duration_s=600,
                **kw,
            )
            deadline = now + timedelta(hours=2)
            return Job(
                id=new_job_id(), spec=spec, submitted_at=now, deadline=deadline, updated_at=now
            )

        return EngineUnderTest(adapter, make_job, timeout_s=60)
