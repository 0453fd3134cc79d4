"""PostgreSQL for the store tests: one real server per session, a fresh database per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from tests.conftest import require

from .server import PgServer, find_bin_dir, new_server

_numbers = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    bin_dir = find_bin_dir()
    require(
        "postgresql",
        bin_dir is not None and (bin_dir / "initdb").exists(),
        "apt-get install postgresql (or set GRIDSHIFT_PG_BIN to its bin directory)",
    )
    try:
        import psycopg  # noqa: F401
    except ImportError:
        require("psycopg", False, "pip install 'gridshift[postgres]'")
    assert bin_dir is not None
    server = new_server(bin_dir)
    try:
        server.start()
    except Exception as exc:
        log = server.log_tail()
        server.stop()
        raise RuntimeError(f"the test PostgreSQL did not start: {exc}\n{log}") from exc
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """The URL of an empty database of its own."""
    import psycopg

    name = f"gridshift_test_{next(_numbers)}"
    with psycopg.connect(pg_server.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield pg_server.url(name)
    with psycopg.connect(pg_server.url(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
