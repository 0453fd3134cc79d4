"""The adapter contract (tests/contract.py) against a real local Ray."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gridshift.adapters.ray import RayAdapter
from gridshift.scheduler.clock import FakeClock
from gridshift.scheduler.config import RayAdapterConfig
from gridshift.scheduler.models import Job, JobSpec, new_job_id
from tests.contract import AdapterContract, EngineUnderTest

from .conftest import RayHead

pytestmark = [pytest.mark.ray, pytest.mark.slow]

NOW = datetime(2026, 3, 4, tzinfo=UTC)


class TestRayAdapterContract(AdapterContract):
    @pytest.fixture
    def engine(self, ray_head: RayHead, tmp_path: Path) -> EngineUnderTest:
        config = RayAdapterConfig(regions={"east": {"address": ray_head.address}})
        adapter = RayAdapter(config, FakeClock(NOW), tmp_path / "ray")

        def make_job(command: str, **kw: Any) -> Job:
            spec = JobSpec(
                engine="ray", command=[command], shell=True, expected_duration_s=600, **kw
            )
            deadline = NOW + timedelta(hours=2)
            return Job(
                id=new_job_id(), spec=spec, submitted_at=NOW, deadline=deadline, updated_at=NOW
            )

        return EngineUnderTest(adapter, make_job, timeout_s=60)
