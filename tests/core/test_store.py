import sqlite3

import pytest

from gridshift.scheduler.clock import FakeClock
from gridshift.scheduler.errors import Conflict, InvalidTransition, NotFound, StoreError
from gridshift.scheduler.models import Job, JobSpec, JobState, new_job_id
from gridshift.scheduler.store import SCHEMA_VERSION, SqliteStore, open_store


def make_job(clock: FakeClock) -> Job:
    now = clock.now()
    spec = JobSpec(command=["true"], expected_duration_s=60)
    return Job(
        id=new_job_id(),
        spec=spec,
        submitted_at=now,
        deadline=spec.resolve_deadline(now, 3600),
        updated_at=now,
    )


def test_state_changes_survive_reopening(tmp_path):
    clock = FakeClock()
    store = SqliteStore.open(tmp_path / "g.db", clock)
    job = store.add_job(make_job(clock), "submitted")
    clock.advance(10)
    store.transition(job.id, JobState.HELD, "waiting", planned_start=clock.now())
    store.transition(job.id, JobState.RUNNING, "go", started_at=clock.now())
    store.close()

    again = SqliteStore.open(tmp_path / "g.db", clock)
    loaded = again.get_job(job.id)
    assert loaded.state == JobState.RUNNING
    assert loaded.version == 2
    assert [(e.from_state, e.to_state) for e in again.events(job.id)] == [
        (None, JobState.PENDING),
        (JobState.PENDING, JobState.HELD),
        (JobState.HELD, JobState.RUNNING),
    ]
    assert again.get_meta("schema_version") == str(SCHEMA_VERSION)


def test_invalid_transition_changes_nothing(tmp_path):
    clock = FakeClock()
    store = SqliteStore.open(tmp_path / "g.db", clock)
    job = store.add_job(make_job(clock), "submitted")
    with pytest.raises(InvalidTransition):
        store.transition(job.id, JobState.SUCCEEDED, "nope", exit_code=0)
    loaded = store.get_job(job.id)
    assert loaded.state == JobState.PENDING and loaded.exit_code is None and loaded.version == 0
    assert len(store.events(job.id)) == 1


def test_duplicate_and_missing_ids(tmp_path):
    clock = FakeClock()
    store = SqliteStore.open(tmp_path / "g.db", clock)
    job = store.add_job(make_job(clock), "submitted")
    with pytest.raises(Conflict):
        store.add_job(job, "again")
    with pytest.raises(NotFound):
        store.get_job("j-missing")
    with pytest.raises(ValueError):
        store.update(job.id, state=JobState.HELD)
    with pytest.raises(ValueError):
        store.update(job.id, no_such_field=1)


def test_wal_mode_and_newer_schema_refused(tmp_path):
    clock = FakeClock()
    path = tmp_path / "g.db"
    SqliteStore.open(path, clock).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        SqliteStore.open(path, clock)


def test_list_by_state_and_url(tmp_path):
    clock = FakeClock()
    store = open_store(f"sqlite:///{tmp_path}/x.db", clock)
    a = store.add_job(make_job(clock), "submitted")
    b = store.add_job(make_job(clock), "submitted")
    store.transition(b.id, JobState.CANCELLED, "user")
    assert [j.id for j in store.list_jobs([JobState.PENDING])] == [a.id]
    assert {j.id for j in store.list_jobs()} == {a.id, b.id}
    with pytest.raises(StoreError, match="not supported"):
        open_store("mysql://x", clock)
