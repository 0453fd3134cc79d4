"""What every store promises (scheduler/store.py), as one suite run against each database.

A test module per database subclasses `StoreContract` and provides the `open_at` fixture:
a function that opens the store under test on the same database each time it is called
(a second call is the agent restarting, or a second agent on a shared database).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta

import pytest

from gridshift.scheduler.clock import FakeClock
from gridshift.scheduler.errors import Conflict, InvalidTransition, NotFound
from gridshift.scheduler.models import (
    Action,
    Decision,
    Job,
    JobSpec,
    JobState,
    new_job_id,
)
from gridshift.scheduler.store import SCHEMA_VERSION, Store

OpenStore = Callable[[FakeClock], Store]


def make_job(clock: FakeClock, **spec: object) -> Job:
    now = clock.now()
    job_spec = JobSpec(command=["true"], expected_duration_s=60, **spec)  # type: ignore[arg-type]
    return Job(
        id=new_job_id(),
        spec=job_spec,
        submitted_at=now,
        deadline=job_spec.resolve_deadline(now, 3600),
        updated_at=now,
    )


class StoreContract:
    @pytest.fixture
    def open_at(self) -> OpenStore:
        raise NotImplementedError

    def test_state_changes_survive_reopening(self, open_at: OpenStore) -> None:
        clock = FakeClock()
        store = open_at(clock)
        job = store.add_job(make_job(clock), "submitted")
        clock.advance(10)
        store.transition(job.id, JobState.HELD, "waiting", planned_start=clock.now())
        store.transition(job.id, JobState.RUNNING, "go", started_at=clock.now())
        store.close()

        again = open_at(clock)
        loaded = again.get_job(job.id)
        assert loaded.state == JobState.RUNNING
        assert loaded.version == 2
        assert loaded.updated_at == clock.now()
        assert [(e.from_state, e.to_state) for e in again.events(job.id)] == [
            (None, JobState.PENDING),
            (JobState.PENDING, JobState.HELD),
            (JobState.HELD, JobState.RUNNING),
        ]
        assert again.get_meta("schema_version") == str(SCHEMA_VERSION)
        again.close()

    def test_invalid_transition_changes_nothing(self, open_at: OpenStore) -> None:
        clock = FakeClock()
        store = open_at(clock)
        job = store.add_job(make_job(clock), "submitted")
        with pytest.raises(InvalidTransition):
            store.transition(job.id, JobState.SUCCEEDED, "nope", exit_code=0)
        loaded = store.get_job(job.id)
        assert loaded.state == JobState.PENDING and loaded.exit_code is None
        assert loaded.version == 0
        assert len(store.events(job.id)) == 1
        store.close()

    def test_duplicate_and_missing_ids(self, open_at: OpenStore) -> None:
        clock = FakeClock()
        store = open_at(clock)
        job = store.add_job(make_job(clock), "submitted")
        with pytest.raises(Conflict):
            store.add_job(job, "again")
        assert len(store.events(job.id)) == 1  # the refused copy left no event
        with pytest.raises(NotFound):
            store.get_job("j-missing")
        with pytest.raises(NotFound):
            store.transition("j-missing", JobState.HELD, "x")
        with pytest.raises(ValueError):
            store.update(job.id, state=JobState.HELD)
        with pytest.raises(ValueError):
            store.update(job.id, no_such_field=1)
        store.add_job(make_job(clock), "a store still usable after a refused insert")
        store.close()

    def test_lists_in_submission_order_and_by_state(self, open_at: OpenStore) -> None:
        clock = FakeClock()
        store = open_at(clock)
        made = [store.add_job(make_job(clock), "submitted") for _ in range(5)]
        store.transition(made[1].id, JobState.CANCELLED, "user")
        store.transition(made[3].id, JobState.HELD, "wait")
        assert [j.id for j in store.list_jobs()] == [j.id for j in made]
        pending = store.list_jobs([JobState.PENDING])
        assert [j.id for j in pending] == [made[0].id, made[2].id, made[4].id]
        assert store.list_jobs([]) == []
        counts = store.count_by_state()
        assert counts[JobState.PENDING] == 3 and counts[JobState.CANCELLED] == 1
        assert counts[JobState.HELD] == 1 and counts[JobState.RUNNING] == 0
        store.close()

    def test_finds_a_job_by_its_engine_ref(self, open_at: OpenStore) -> None:
        clock = FakeClock()
        store = open_at(clock)
        a = store.add_job(make_job(clock), "submitted")
        b = store.add_job(make_job(clock, engine="slurm"), "submitted")
        store.update(a.id, engine_ref="42")
        store.update(b.id, engine_ref="42")
        found = store.find_by_engine_ref("slurm", "42")
        assert found is not None and found.id == b.id
        assert store.find_by_engine_ref("local", "42").id == a.id  # type: ignore[union-attr]
        assert store.find_by_engine_ref("slurm", "43") is None
        store.close()

    def test_decisions_newest_last_within_the_limit(self, open_at: OpenStore) -> None:
        clock = FakeClock()
        store = open_at(clock)
        job = store.add_job(make_job(clock), "submitted")
        for i in range(5):
            clock.advance(60)
            store.record_decisions(
                [Decision(job_id=job.id, action=Action.HOLD, reason=f"hold {i}", at=clock.now())]
            )
        store.record_decisions([])
        reasons = [d.reason for d in store.decisions(job.id, limit=3)]
        assert reasons == ["hold 2", "hold 3", "hold 4"]
        assert [d.reason for d in store.decisions(limit=1)] == ["hold 4"]
        assert store.decisions("j-other") == []
        store.close()

    def test_meta_and_json_values(self, open_at: OpenStore) -> None:
        clock = FakeClock()
        store = open_at(clock)
        assert store.get_meta("k") is None
        store.set_meta("k", "1")
        store.set_meta("k", "2")
        assert store.get_meta("k") == "2"
        store.set_json("j", {"a": [1, 2.5, None]})
        assert store.get_json("j") == {"a": [1, 2.5, None]}
        store.set_meta("k", None)
        store.set_json("j", None)
        assert store.get_meta("k") is None and store.get_json("j") is None
        store.close()

    def test_two_stores_on_one_database_lose_no_update(self, open_at: OpenStore) -> None:
        """Two connections (two agents, or the API beside the planner) changing one job at
        once: every change lands, each on the version the other left."""
        clock = FakeClock()
        first, second = open_at(clock), open_at(clock)
        job = first.add_job(make_job(clock), "submitted")
        errors: list[BaseException] = []

        def bump(store: Store) -> None:
            try:
                for _ in range(25):
                    current = store.get_job(job.id)
                    store.update(job.id, energy_j=current.energy_j)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=bump, args=(s,)) for s in (first, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors
        assert first.get_job(job.id).version == 50
        assert second.get_job(job.id).version == 50
        first.close()
        second.close()

    def test_one_transition_wins_when_two_race(self, open_at: OpenStore) -> None:
        clock = FakeClock()
        first, second = open_at(clock), open_at(clock)
        jobs = [first.add_job(make_job(clock), "submitted") for _ in range(10)]
        outcomes: list[str] = []
        lock = threading.Lock()

        def finish(store: Store, to: JobState) -> None:
            for job in jobs:
                try:
                    store.transition(job.id, JobState.RUNNING, "go", started_at=clock.now())
                    store.transition(job.id, to, "done", ended_at=clock.now() + timedelta(1))
                    result = to.value
                except InvalidTransition:
                    result = "refused"
                with lock:
                    outcomes.append(result)

        threads = [
            threading.Thread(target=finish, args=(first, JobState.SUCCEEDED)),
            threading.Thread(target=finish, args=(second, JobState.CANCELLED)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for job in jobs:
            # one event per change, whichever store made it: no transition applied twice
            events = [e.to_state for e in first.events(job.id)]
            assert events[:2] == [JobState.PENDING, JobState.RUNNING]
            assert len(events) == 3 and events[2] in (JobState.SUCCEEDED, JobState.CANCELLED)
        assert len(outcomes) == 20
        first.close()
        second.close()
