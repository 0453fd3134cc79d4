"""Durable state: SQLite in WAL mode, the embedded default, or PostgreSQL, where several
agents share one database.

Every method commits before it returns (SQLite with synchronous=FULL), so a state change
is on disk before the agent acts on it. The schema is versioned; `open` migrates an older
database forward and refuses one written by a newer gridshift. Jobs are stored as JSON
documents beside an indexed state column, so adding a field to the Job model needs no
migration. Both stores run the same statements (`_SqlStore`); each says only how it
connects, locks and spells the few things SQL dialects spell differently.

Several agents on one PostgreSQL database (a standby beside the active agent): only the
agent whose `lead()` returns True acts. It holds a session advisory lock, which PostgreSQL
drops when that agent's connection ends, so a standby takes over at its next tick.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .clock import Clock
from .errors import Conflict, NotFound, StoreError
from .models import Decision, Job, JobEvent, JobState, check_transition

# One list per dialect, the same tables in each; append, never edit.
SQLITE_MIGRATIONS: list[str] = [
    # 1: the first schema
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        doc TEXT NOT NULL,
        version INTEGER NOT NULL
    );
    CREATE INDEX jobs_by_state ON jobs(state);
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id TEXT NOT NULL,
        at TEXT NOT NULL,
        from_state TEXT,
        to_state TEXT NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE INDEX events_by_job ON events(job_id, seq);
    CREATE TABLE decisions (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id TEXT,
        at TEXT NOT NULL,
        doc TEXT NOT NULL
    );
    CREATE INDEX decisions_by_job ON decisions(job_id, seq);
    """,
]
POSTGRES_MIGRATIONS: list[str] = [
    # 1: the first schema (jobs.seq keeps the order of submission, as SQLite's rowid does)
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE jobs (
        seq BIGSERIAL,
        id TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        doc TEXT NOT NULL,
        version INTEGER NOT NULL
    );
    CREATE INDEX jobs_by_state ON jobs(state);
    CREATE TABLE events (
        seq BIGSERIAL PRIMARY KEY,
        job_id TEXT NOT NULL,
        at TEXT NOT NULL,
        from_state TEXT,
        to_state TEXT NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE INDEX events_by_job ON events(job_id, seq);
    CREATE TABLE decisions (
        seq BIGSERIAL PRIMARY KEY,
        job_id TEXT,
        at TEXT NOT NULL,
        doc TEXT NOT NULL
    );
    CREATE INDEX decisions_by_job ON decisions(job_id, seq);
    """,
]
assert len(SQLITE_MIGRATIONS) == len(POSTGRES_MIGRATIONS)
SCHEMA_VERSION = len(SQLITE_MIGRATIONS)

# PostgreSQL advisory locks, one pair of keys per schema (a deployment in a schema of its
# own has its own leader): one agent acts; one migrates at a time.
LEADER_LOCK_KEY = 0x67726964  # "grid"
MIGRATION_LOCK_KEY = LEADER_LOCK_KEY + 1
_IN_THIS_SCHEMA = "(%s, hashtext(current_schema()))"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def sqlite_path(url: str) -> str:
    """'sqlite:///var/x.db' -> 'var/x.db'; 'sqlite:////abs/x.db' -> '/abs/x.db'."""
    if not url.startswith("sqlite:///"):
        raise StoreError(f"{url!r} is not a sqlite:/// URL")
    return url[len("sqlite:///") :]


def display_url(url: str) -> str:
    """A database URL fit for messages: a SQLite file's path; a server URL without its
    password."""
    if url.startswith("sqlite:///"):
        return sqlite_path(url)
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class _SqlStore:
    """The statements both stores run, written with `?` placeholders. A subclass connects
    and provides `_tx` (one transaction, a cursor in it), `_read` (rows of a query outside
    any transaction) and the class attributes below."""

    _migrations: list[str]
    _integrity_errors: tuple[type[Exception], ...]
    _meta_exists = ""  # a query whose one row counts the meta tables (0 or 1)
    _insertion_order = ""  # the jobs column that orders them by submission
    _by_engine_ref = ""  # WHERE clause: a job's engine_ref and spec.engine
    _for_update = ""  # locks a job's row for the rest of the transaction, where needed
    name = ""  # the database, for messages
    # the database (and schema) whose jobs this store holds, as agents sharing it agree on
    # it whatever URL each was given: the label of `gridshift_leader`
    scope = ""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.RLock()

    # -- what a subclass provides

    def _tx(self) -> Any:
        raise NotImplementedError

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError

    def _q(self, sql: str) -> str:
        """A statement in the driver's placeholder style (written here with `?`)."""
        return sql

    def _x(self, cur: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        return cur.execute(self._q(sql), params)

    def _before_migrations(self, cur: Any) -> None:
        """Called first in the migration's transaction (PostgreSQL locks out other agents)."""

    def lead(self) -> bool:
        """Whether this agent may act (plan, release, reconcile); see the module's notes."""
        return True

    def close(self) -> None:
        raise NotImplementedError

    # -- schema

    def _migrate(self) -> None:
        with self._lock, self._tx() as cur:
            self._before_migrations(cur)
            version = 0
            if self._x(cur, self._meta_exists).fetchone()[0]:
                row = self._x(cur, "SELECT value FROM meta WHERE key='schema_version'").fetchone()
                version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"the database {self.name} has schema version {version}, newer than this "
                    f"gridshift understands ({SCHEMA_VERSION}); upgrade gridshift or use "
                    "another database"
                )
            for number in range(version, SCHEMA_VERSION):
                for statement in self._migrations[number].split(";"):
                    if statement.strip():
                        self._x(cur, statement)
                self._upsert_meta(cur, "schema_version", str(number + 1))

    # -- jobs

    def add_job(self, job: Job, reason: str) -> Job:
        try:
            with self._lock, self._tx() as cur:
                self._x(
                    cur,
                    "INSERT INTO jobs(id, state, doc, version) VALUES (?, ?, ?, ?)",
                    (job.id, job.state.value, job.model_dump_json(), job.version),
                )
                self._event(cur, job.id, None, job.state, reason)
        except self._integrity_errors:
            raise Conflict(f"a job with id {job.id} already exists") from None
        return job

    def get_job(self, job_id: str) -> Job:
        rows = self._read("SELECT doc FROM jobs WHERE id=?", (job_id,))
        if not rows:
            raise NotFound(f"no job with id {job_id}; `gridshift list` shows the jobs")
        return Job.model_validate_json(rows[0][0])

    def find_by_engine_ref(self, engine: str, ref: str) -> Job | None:
        rows = self._read(f"SELECT doc FROM jobs WHERE {self._by_engine_ref}", (ref, engine))
        return Job.model_validate_json(rows[0][0]) if rows else None

    def count_by_state(self) -> dict[JobState, int]:
        counts = {state: 0 for state in JobState}
        for state, n in self._read("SELECT state, COUNT(*) FROM jobs GROUP BY state"):
            counts[JobState(state)] = int(n)
        return counts

    def list_jobs(self, states: Iterable[JobState] | None = None) -> list[Job]:
        order = f"ORDER BY {self._insertion_order}"
        if states is None:
            rows = self._read(f"SELECT doc FROM jobs {order}")
        else:
            wanted = [s.value for s in states]
            if not wanted:
                return []
            marks = ",".join("?" * len(wanted))
            rows = self._read(f"SELECT doc FROM jobs WHERE state IN ({marks}) {order}", wanted)
        return [Job.model_validate_json(r[0]) for r in rows]

    def transition(self, job_id: str, to_state: JobState, reason: str, **fields: Any) -> Job:
        with self._lock, self._tx() as cur:
            job = self._load(cur, job_id)
            check_transition(job_id, job.state, to_state)
            updated = self._apply(job, state=to_state, reason=reason, **fields)
            self._save(cur, updated)
            if job.state != to_state:
                self._event(cur, job_id, job.state, to_state, reason)
        return updated

    def update(self, job_id: str, **fields: Any) -> Job:
        if "state" in fields:
            raise ValueError("use transition() to change a job's state")
        with self._lock, self._tx() as cur:
            job = self._load(cur, job_id)
            updated = self._apply(job, **fields)
            self._save(cur, updated)
        return updated

    def _load(self, cur: Any, job_id: str) -> Job:
        sql = f"SELECT doc FROM jobs WHERE id=?{self._for_update}"
        row = self._x(cur, sql, (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"no job with id {job_id}")
        return Job.model_validate_json(row[0])

    def _apply(self, job: Job, **fields: Any) -> Job:
        data = job.model_dump()
        unknown = set(fields) - set(data)
        if unknown:
            raise ValueError(f"unknown job fields: {', '.join(sorted(unknown))}")
        data.update(fields)
        data["version"] = job.version + 1
        data["updated_at"] = self._clock.now()
        return Job.model_validate(data)

    def _save(self, cur: Any, job: Job) -> None:
        self._x(
            cur,
            "UPDATE jobs SET state=?, doc=?, version=? WHERE id=?",
            (job.state.value, job.model_dump_json(), job.version, job.id),
        )

    def _event(
        self,
        cur: Any,
        job_id: str,
        from_state: JobState | None,
        to_state: JobState,
        reason: str,
    ) -> None:
        self._x(
            cur,
            "INSERT INTO events(job_id, at, from_state, to_state, reason) VALUES (?,?,?,?,?)",
            (
                job_id,
                self._clock.now().isoformat(),
                from_state.value if from_state else None,
                to_state.value,
                reason,
            ),
        )

    def events(self, job_id: str) -> list[JobEvent]:
        rows = self._read(
            "SELECT job_id, at, from_state, to_state, reason FROM events WHERE job_id=? "
            "ORDER BY seq",
            (job_id,),
        )
        return [
            JobEvent(job_id=r[0], at=r[1], from_state=r[2], to_state=r[3], reason=r[4])
            for r in rows
        ]

    # -- decisions

    def record_decisions(self, decisions: Sequence[Decision]) -> None:
        if not decisions:
            return
        with self._lock, self._tx() as cur:
            cur.executemany(
                self._q("INSERT INTO decisions(job_id, at, doc) VALUES (?, ?, ?)"),
                [(d.job_id, d.at.isoformat(), d.model_dump_json()) for d in decisions],
            )

    def decisions(self, job_id: str | None = None, limit: int = 100) -> list[Decision]:
        if job_id is None:
            rows = self._read("SELECT doc FROM decisions ORDER BY seq DESC LIMIT ?", (limit,))
        else:
            rows = self._read(
                "SELECT doc FROM decisions WHERE job_id=? ORDER BY seq DESC LIMIT ?",
                (job_id, limit),
            )
        return [Decision.model_validate_json(r[0]) for r in reversed(rows)]

    # -- meta

    def get_meta(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM meta WHERE key=?", (key,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: str | None) -> None:
        with self._lock, self._tx() as cur:
            if value is None:
                self._x(cur, "DELETE FROM meta WHERE key=?", (key,))
            else:
                self._upsert_meta(cur, key, value)

    def _upsert_meta(self, cur: Any, key: str, value: str) -> None:
        self._x(
            cur,
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, value),
        )

    def get_json(self, key: str) -> Any:
        raw = self.get_meta(key)
        return None if raw is None else json.loads(raw)

    def set_json(self, key: str, value: Any) -> None:
        self.set_meta(key, None if value is None else json.dumps(value))


class SqliteStore(_SqlStore):
    _migrations = SQLITE_MIGRATIONS
    _integrity_errors = (sqlite3.IntegrityError,)
    _meta_exists = "SELECT COUNT(*) FROM sqlite_master WHERE type='table' AND name='meta'"
    _insertion_order = "rowid"
    _by_engine_ref = (
        "json_extract(doc, '$.engine_ref') = ? AND json_extract(doc, '$.spec.engine') = ?"
    )

    def __init__(self, conn: sqlite3.Connection, clock: Clock, name: str = ":memory:") -> None:
        super().__init__(clock)
        self._conn = conn
        self.name = self.scope = name

    @classmethod
    def open(cls, path: str | Path, clock: Clock) -> SqliteStore:
        path = str(path)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the database {path}: {exc}") from exc
        store = cls(conn, clock, path)
        store._migrate()
        return store

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Cursor]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error."""
        cur = self._conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._conn.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class PostgresStore(_SqlStore):
    """PostgreSQL through psycopg 3 (`pip install 'gridshift[postgres]'`). One connection,
    opened again after it breaks (a server restart, a dropped link); a job's row is locked
    while it changes, so two agents never apply one transition twice."""

    _migrations = POSTGRES_MIGRATIONS
    _meta_exists = (
        "SELECT COUNT(*) FROM pg_tables WHERE tablename='meta' AND schemaname=current_schema()"
    )
    _insertion_order = "seq"
    _by_engine_ref = "(doc::jsonb ->> 'engine_ref') = ? AND (doc::jsonb -> 'spec' ->> 'engine') = ?"
    _for_update = " FOR UPDATE"
    connect_timeout_s = 10
    statement_timeout_s = 30

    def __init__(self, url: str, clock: Clock) -> None:
        super().__init__(clock)
        import psycopg

        self._pg = psycopg
        self._integrity_errors = (psycopg.IntegrityError,)
        self._url = url
        self.name = display_url(url)
        self._conn: Any = None
        self._leading_on: Any = None  # the connection that holds the leader lock

    @classmethod
    def open(cls, url: str, clock: Clock) -> PostgresStore:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise StoreError(
                f"{display_url(url)} needs the PostgreSQL driver: pip install 'gridshift[postgres]'"
            ) from None
        store = cls(url, clock)
        store._migrate()
        [(database, schema)] = store._read("SELECT current_database(), current_schema()")
        store.scope = f"{database}/{schema}"
        return store

    def _connection(self) -> Any:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            try:
                conn = self._pg.connect(
                    self._url,
                    autocommit=True,
                    connect_timeout=self.connect_timeout_s,
                    application_name="gridshift",
                    # notice a dead server or link within about a minute
                    keepalives=1,
                    keepalives_idle=30,
                    keepalives_interval=10,
                    keepalives_count=3,
                )
            except self._pg.Error as exc:
                raise StoreError(f"cannot connect to the database {self.name}: {exc}") from exc
            try:  # no statement waits on the server for ever (a lock, a stuck server)
                conn.execute(
                    "SELECT set_config('statement_timeout', %s, false)",
                    (f"{self.statement_timeout_s * 1000:.0f}",),
                )
            except self._pg.Error as exc:
                conn.close()
                raise StoreError(f"the database {self.name} failed: {exc}") from exc
            self._conn = conn
        return conn

    def _q(self, sql: str) -> str:
        return sql.replace("?", "%s")

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        with self._lock:
            conn = self._connection()
            try:
                with conn.transaction(), conn.cursor() as cur:
                    yield cur
            except self._pg.OperationalError as exc:
                raise StoreError(f"the database {self.name} failed: {exc}") from exc

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Rows of a query; asked again once on a new connection if the old one broke (a
        read changes nothing, so asking again is safe; a write is not retried)."""
        with self._lock:
            for attempt in (1, 2):
                try:
                    with self._connection().cursor() as cur:
                        return list(cur.execute(self._q(sql), params).fetchall())
                except self._pg.OperationalError as exc:
                    if attempt == 2 or not (self._conn.closed or self._conn.broken):
                        raise StoreError(f"the database {self.name} failed: {exc}") from exc
        raise AssertionError("unreachable")

    def _before_migrations(self, cur: Any) -> None:
        cur.execute(f"SELECT pg_advisory_xact_lock{_IN_THIS_SCHEMA}", (MIGRATION_LOCK_KEY,))

    def lead(self) -> bool:
        """True while this store's session holds the leader lock (taking it if free); False
        while another session holds it. Raises StoreError if the database cannot be
        reached (a session that broke is opened again once first)."""
        with self._lock:
            for attempt in (1, 2):
                try:
                    conn = self._connection()
                    if self._leading_on is conn:
                        conn.execute("SELECT 1")  # still the session that holds the lock
                        return True
                    self._leading_on = None
                    sql = f"SELECT pg_try_advisory_lock{_IN_THIS_SCHEMA}"
                    if conn.execute(sql, (LEADER_LOCK_KEY,)).fetchone()[0]:
                        self._leading_on = conn
                    return self._leading_on is conn
                except self._pg.OperationalError as exc:
                    self._leading_on = None
                    if attempt == 2 or not (self._conn.closed or self._conn.broken):
                        raise StoreError(f"the database {self.name} failed: {exc}") from exc
                except StoreError:
                    self._leading_on = None
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()  # ends the session: its leader lock goes with it
            self._conn = self._leading_on = None


Store = SqliteStore | PostgresStore


def peek_meta(url: str, key: str) -> str | None:
    """A meta value of an existing store, read without writing anything (for commands that
    show what an agent on that store would use); None where there is no store, no such
    key, or nothing readable."""
    if url.startswith(POSTGRES_SCHEMES):
        try:
            import psycopg

            with psycopg.connect(url, connect_timeout=5) as pg:
                row = pg.execute("SELECT value FROM meta WHERE key=%s", (key,)).fetchone()
        except Exception:  # no driver, no server, no table: nothing readable
            return None
        return None if row is None else str(row[0])
    if not url.startswith("sqlite:///"):
        return None
    path = Path(sqlite_path(url))
    if not path.is_file():
        return None
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            found = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return None if found is None else str(found[0])


def peek_meta_json(url: str, key: str) -> Any:
    """`peek_meta` of a JSON value, decoded (None where it is not JSON)."""
    text = peek_meta(url, key)
    try:
        return None if text is None else json.loads(text)
    except ValueError:
        return None


def open_store(url: str, clock: Clock) -> Store:
    """Open the store named by a database URL: sqlite:///PATH, or
    postgresql://USER:PASSWORD@HOST:PORT/DATABASE (any libpq URL)."""
    if url.startswith("sqlite:///"):
        return SqliteStore.open(sqlite_path(url), clock)
    if url.startswith(POSTGRES_SCHEMES):
        return PostgresStore.open(url, clock)
    scheme = url.split(":", 1)[0]
    raise StoreError(
        f"database URL scheme {scheme!r} is not supported; use sqlite:///PATH or "
        "postgresql://USER:PASSWORD@HOST/DATABASE"
    )
