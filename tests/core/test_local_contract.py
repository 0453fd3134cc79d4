"""The adapter contract (tests/contract.py) against local processes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gridshift.adapters.local import LocalAdapter
from gridshift.scheduler.clock import FakeClock
from gridshift.scheduler.models import Job, JobSpec, new_job_id
from tests.contract import AdapterContract, EngineUnderTest

NOW = datetime(2026, 3, 4, tzinfo=UTC)


class TestLocalAdapterContract(AdapterContract):
    @pytest.fixture
    def engine(self, tmp_path: Path) -> EngineUnderTest:
        adapter = LocalAdapter(tmp_path / "runs", FakeClock(NOW), kill_grace_s=1)

        def make_job(command: str, **kw: Any) -> Job:
            spec = JobSpec(command=[command], shell=True, expected_duration_s=600, **kw)
            deadline = NOW + timedelta(hours=2)
            return Job(
                id=new_job_id(), spec=spec, submitted_at=NOW, deadline=deadline, updated_at=NOW
            )

        return EngineUnderTest(adapter, make_job, timeout_s=20)
