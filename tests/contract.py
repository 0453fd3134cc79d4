"""What every engine adapter promises (`interfaces.Adapter`, and `Suspendable` where it is
offered), as one suite run against each real engine.

A test module per engine subclasses `AdapterContract` and provides the `engine` fixture:
an `EngineUnderTest` with the adapter and a way to make a job for a shell command. The
suite then drives the engine for real: nothing here knows which engine it talks to.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gridshift.scheduler.interfaces import Adapter, EngineState, Suspendable
from gridshift.scheduler.models import Job

ENDED = (EngineState.SUCCEEDED, EngineState.FAILED, EngineState.CANCELLED)


@dataclass
class EngineUnderTest:
    adapter: Adapter
    # a job for this engine running `command` under /bin/sh (kw: JobSpec fields)
    make_job: Callable[..., Job]
    timeout_s: float = 60.0  # how long the engine may take to start or end a job

    def wait(self, job: Job, *states: EngineState, what: str = "") -> EngineState:
        deadline = time.monotonic() + self.timeout_s
        state = None
        while time.monotonic() < deadline:
            state = self.adapter.status(job).state
            if state in states:
                return state
            time.sleep(0.2)
        raise AssertionError(
            f"{what or 'the job'}: still {state} after {self.timeout_s} s, wanted {states}"
        )


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


class AdapterContract:
    """Subclasses provide the `engine` fixture."""

    @pytest.fixture
    def engine(self) -> EngineUnderTest:  # pragma: no cover - always overridden
        raise NotImplementedError

    def submitted(self, engine: EngineUnderTest, command: str, **kw: Any) -> Job:
        job = engine.make_job(command, **kw)
        ref = engine.adapter.submit(job)
        return job.model_copy(update={"engine_ref": ref})

    def test_a_submitted_job_is_held_until_released(
        self, engine: EngineUnderTest, tmp_path: Path
    ) -> None:
        marker = tmp_path / "ran"
        job = self.submitted(engine, f"echo $GRIDSHIFT_JOB_ID >> {marker}")
        engine.adapter.hold(job)
        engine.adapter.hold(job)  # idempotent
        assert engine.adapter.status(job).state == EngineState.HELD
        time.sleep(1.0)
        assert not marker.exists(), "a held job ran"

    def test_release_is_idempotent_and_the_job_runs_once(
        self, engine: EngineUnderTest, tmp_path: Path
    ) -> None:
        marker = tmp_path / "ran"
        job = self.submitted(engine, f"echo $GRIDSHIFT_JOB_ID >> {marker}")
        engine.adapter.release(job)
        engine.adapter.release(job)
        state = engine.wait(job, *ENDED, what="the released job")
        engine.adapter.release(job)  # after the end: still nothing
        assert state == EngineState.SUCCEEDED
        st = engine.adapter.status(job)
        assert st.exit_code == 0 and st.job_id == job.id
        time.sleep(0.5)
        assert _lines(marker) == [job.id]

    def test_a_failure_carries_its_exit_code(self, engine: EngineUnderTest) -> None:
        job = self.submitted(engine, "exit 7")
        engine.adapter.release(job)
        assert engine.wait(job, *ENDED, what="the failing job") == EngineState.FAILED
        assert engine.adapter.status(job).exit_code == 7

    def test_cancel_stops_a_running_job_and_is_idempotent(
        self, engine: EngineUnderTest, tmp_path: Path
    ) -> None:
        started = tmp_path / "started"
        job = self.submitted(engine, f"touch {started}; sleep 300")
        engine.adapter.release(job)
        engine.wait(job, EngineState.RUNNING, what="the start")
        deadline = time.monotonic() + engine.timeout_s
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        engine.adapter.cancel(job)
        engine.adapter.cancel(job)
        assert engine.wait(job, *ENDED, what="the cancel") == EngineState.CANCELLED

    def test_released_jobs_are_listed_as_managed(self, engine: EngineUnderTest) -> None:
        job = self.submitted(engine, "true")
        engine.adapter.release(job)
        engine.wait(job, *ENDED, what="the job")
        managed = {st.job_id: st for st in engine.adapter.list_managed()}
        assert job.id in managed
        assert managed[job.id].state == EngineState.SUCCEEDED

    def test_suspend_and_resume_are_idempotent(
        self, engine: EngineUnderTest, tmp_path: Path
    ) -> None:
        if not isinstance(engine.adapter, Suspendable):
            pytest.skip("this engine offers no suspend/resume (an optional capability)")
        job = self.submitted(engine, "sleep 300", interruptible=True)
        engine.adapter.release(job)
        engine.wait(job, EngineState.RUNNING, what="the start")
        engine.adapter.suspend(job)
        engine.adapter.suspend(job)
        engine.wait(job, EngineState.SUSPENDED, what="the suspension")
        engine.adapter.resume(job)
        engine.adapter.resume(job)
        engine.wait(job, EngineState.RUNNING, what="the resumption")
        engine.adapter.cancel(job)
        engine.wait(job, *ENDED, what="the cancel")
