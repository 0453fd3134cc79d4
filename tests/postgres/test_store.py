"""The PostgreSQL store against a real server: the store contract, schema versions, a
broken connection, and several agents sharing one database (one acts, the others stand
by and take over when it stops)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from gridshift.scheduler.api import create_app
from gridshift.scheduler.clock import FakeClock
from gridshift.scheduler.errors import StoreError
from gridshift.scheduler.models import JobSpec, JobState
from gridshift.scheduler.store import (
    SCHEMA_VERSION,
    PostgresStore,
    open_store,
    peek_meta,
)
from tests.core.agent_helpers import START, make_agent
from tests.store_contract import OpenStore, StoreContract, make_job

pytestmark = pytest.mark.postgres


class TestPostgresStoreContract(StoreContract):
    @pytest.fixture
    def open_at(self, pg_url: str) -> OpenStore:
        return lambda clock: open_store(pg_url, clock)


def _psql(url: str, sql: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else []


def test_newer_schema_refused_and_migration_runs_once(pg_url: str) -> None:
    clock = FakeClock()
    first, second = PostgresStore.open(pg_url, clock), PostgresStore.open(pg_url, clock)
    assert second.get_meta("schema_version") == str(SCHEMA_VERSION)
    first.close()
    second.close()
    _psql(pg_url, f"UPDATE meta SET value='{SCHEMA_VERSION + 1}' WHERE key='schema_version'")
    with pytest.raises(StoreError, match="newer"):
        PostgresStore.open(pg_url, clock)


def test_unreachable_server_is_a_clear_error(pg_server) -> None:
    url = f"postgresql://gs:secret@127.0.0.1:{pg_server.port + 1}/gs?connect_timeout=2"
    with pytest.raises(StoreError, match=r"cannot connect to the database .*gs:\*\*\*@") as info:
        open_store(url, FakeClock())
    assert "secret" not in str(info.value)
    assert peek_meta(url, "clock") is None


def test_every_statement_has_a_time_limit_on_the_server(pg_url: str) -> None:
    store = PostgresStore.open(pg_url, FakeClock())
    assert store._read("SHOW statement_timeout") == [("30s",)]
    store.close()


def test_a_broken_connection_is_opened_again(pg_url: str) -> None:
    clock = FakeClock()
    store = PostgresStore.open(pg_url, clock)
    job = store.add_job(make_job(clock), "submitted")
    _psql(
        pg_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name='gridshift'",
    )
    assert store.get_job(job.id).state == JobState.PENDING  # a read is asked again
    store.transition(job.id, JobState.HELD, "after the reconnect")
    assert peek_meta(pg_url, "schema_version") == str(SCHEMA_VERSION)
    store.close()


def test_one_store_leads_and_another_takes_over_when_it_goes(pg_url: str) -> None:
    clock = FakeClock()
    a, b = PostgresStore.open(pg_url, clock), PostgresStore.open(pg_url, clock)
    assert a.lead() and a.lead()
    assert not b.lead()
    a.close()
    assert b.lead()
    # the leader's session ends without a goodbye (a crash, a dropped link): the lock goes too
    c = PostgresStore.open(pg_url, clock)
    assert not c.lead()
    _psql(
        pg_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid IN "
        "(SELECT pid FROM pg_locks WHERE locktype='advisory' AND granted)",
    )
    assert c.lead()
    assert not b.lead()  # b reconnects, finds the lock taken
    b.close()
    c.close()


def test_a_leader_that_loses_its_database_says_so_and_leads_again_when_it_is_back(
    pg_server, pg_url: str
) -> None:
    store = PostgresStore.open(pg_url, FakeClock())
    assert store.lead()
    name = pg_url.rsplit("/", 1)[1]
    _psql(pg_server.url(), f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
    _psql(pg_server.url(), f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           f"WHERE datname='{name}'")  # fmt: skip
    with pytest.raises(StoreError, match="cannot connect to the database"):
        store.lead()
    with pytest.raises(StoreError):
        store.list_jobs()
    _psql(pg_server.url(), f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
    assert store.lead()
    assert store.list_jobs() == []
    store.close()


def test_deployments_in_schemas_of_their_own_lead_apart(pg_url: str) -> None:
    _psql(pg_url, "CREATE SCHEMA east; CREATE SCHEMA west")
    clock = FakeClock()
    east, west = (
        PostgresStore.open(f"{pg_url}?options=-csearch_path%3D{schema}", clock)
        for schema in ("east", "west")
    )
    job = east.add_job(make_job(clock), "submitted")
    assert east.lead() and west.lead()
    assert west.list_jobs() == [] and east.get_job(job.id).id == job.id
    tables = _psql(pg_url, "SELECT schemaname FROM pg_tables WHERE tablename='jobs'")
    assert sorted(t[0] for t in tables) == ["east", "west"]
    east.close()
    west.close()


def _leader(agent) -> float | None:  # type: ignore[no-untyped-def]
    return agent.metrics.registry.get_sample_value(
        "gridshift_leader", {"database": agent.store.scope}
    )


def test_two_agents_share_a_database_and_the_standby_takes_over(
    pg_url: str, tmp_path: Path, agents: list
) -> None:
    clock = FakeClock(START)
    active = make_agent(tmp_path / "a", clock, database_url=pg_url)
    agents.append(active)
    active.startup()
    standby = make_agent(tmp_path / "b", clock, database_url=pg_url)
    agents.append(standby)
    standby.startup()
    assert _leader(active) == 1 and _leader(standby) == 0
    # both agents label it with the same database and schema, as the alert groups them
    assert active.store.scope == standby.store.scope == f"{urlsplit(pg_url).path[1:]}/public"
    with TestClient(create_app(standby)) as client:
        assert client.get("/healthz").json()["role"] == "standby"

    # a job submitted through the standby is stored, and planned by the active agent
    spec = JobSpec(command=["true"], expected_duration_s=3600)
    job = standby.submit(spec, deadline_in_s=24 * 3600)
    assert standby.tick() == []
    decided = active.tick()
    assert [d.job_id for d in decided] == [job.id]
    held = active.store.get_job(job.id)
    assert held.state == JobState.HELD and held.planned_start is not None
    # only the acting agent reports the jobs; both report that they tick
    for agent, count in ((active, 1), (standby, 0)):
        registry = agent.metrics.registry
        assert registry.get_sample_value("gridshift_jobs", {"state": "held"}) == count
        assert registry.get_sample_value("gridshift_last_tick_timestamp_seconds") > 0

    agents.remove(active)
    active.stop()
    clock.set(held.planned_start + timedelta(minutes=1))
    standby.reconcile()
    decided = standby.tick()
    assert _leader(standby) == 1
    with TestClient(create_app(standby)) as client:
        assert client.get("/healthz").json()["role"] == "active"
    assert [(d.job_id, d.action.value) for d in decided] == [(job.id, "start")]
    assert standby.store.get_job(job.id).state == JobState.RUNNING
