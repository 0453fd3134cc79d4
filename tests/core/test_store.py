import sqlite3

import pytest

from gridshift.scheduler.clock import FakeClock
from gridshift.scheduler.errors import StoreError
from gridshift.scheduler.store import (
    SCHEMA_VERSION,
    SqliteStore,
    display_url,
    open_store,
    peek_meta,
)
from tests.store_contract import OpenStore, StoreContract


class TestSqliteStoreContract(StoreContract):
    @pytest.fixture
    def open_at(self, tmp_path) -> OpenStore:
        return lambda clock: SqliteStore.open(tmp_path / "g.db", clock)


def test_wal_mode_and_newer_schema_refused(tmp_path):
    clock = FakeClock()
    path = tmp_path / "g.db"
    store = SqliteStore.open(path, clock)
    assert store.lead()  # one agent per SQLite file: it always acts
    store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        SqliteStore.open(path, clock)


def test_urls(tmp_path):
    clock = FakeClock()
    store = open_store(f"sqlite:///{tmp_path}/x.db", clock)
    store.set_meta("clock", "wall")
    store.close()
    assert peek_meta(f"sqlite:///{tmp_path}/x.db", "clock") == "wall"
    assert peek_meta(f"sqlite:///{tmp_path}/missing.db", "clock") is None
    with pytest.raises(StoreError, match="not supported"):
        open_store("mysql://x", clock)
    assert display_url(f"sqlite:///{tmp_path}/x.db") == f"{tmp_path}/x.db"
    assert display_url("postgresql://gs:s3cret@db:5432/gs") == "postgresql://gs:***@db:5432/gs"
    assert display_url("postgresql://gs@db/gs") == "postgresql://gs@db/gs"
