"""Durable state: SQLite in WAL mode, the embedded default.

Every method commits before it returns (synchronous=FULL), so a state change is on disk
before the agent acts on it. The schema is versioned; `SqliteStore.open` migrates an older
database forward and refuses one written by a newer gridshift. Jobs are stored as JSON
documents beside an indexed state column, so adding a field to the Job model needs no
migration.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .clock import Clock
from .errors import Conflict, NotFound, StoreError
from .models import Decision, Job, JobEvent, JobState, check_transition

MIGRATIONS: list[str] = [
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
SCHEMA_VERSION = len(MIGRATIONS)


def sqlite_path(url: str) -> str:
    """'sqlite:///var/x.db' -> 'var/x.db'; 'sqlite:////abs/x.db' -> '/abs/x.db'."""
    if not url.startswith("sqlite:///"):
        raise StoreError(f"{url!r} is not a sqlite:/// URL")
    return url[len("sqlite:///") :]


class SqliteStore:
    def __init__(self, conn: sqlite3.Connection, clock: Clock) -> None:
        self._conn = conn
        self._clock = clock
        self._lock = threading.RLock()

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
        store = cls(conn, clock)
        store._migrate()
        return store

    # -- schema

    def _schema_version(self) -> int:
        row = self._conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name='meta'"
        ).fetchone()
        if row is None:
            return 0
        value = self._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(value[0]) if value else 0

    def _migrate(self) -> None:
        with self._lock:
            version = self._schema_version()
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"the database has schema version {version}, newer than this gridshift "
                    f"understands ({SCHEMA_VERSION}); upgrade gridshift or use another state_dir"
                )
            for number in range(version, SCHEMA_VERSION):
                with self._tx() as cur:
                    for statement in MIGRATIONS[number].split(";"):
                        if statement.strip():
                            cur.execute(statement)
                    cur.execute(
                        "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)",
                        (str(number + 1),),
                    )

    def _tx(self) -> _Transaction:
        return _Transaction(self._conn)

    # -- jobs

    def add_job(self, job: Job, reason: str) -> Job:
        with self._lock, self._tx() as cur:
            try:
                cur.execute(
                    "INSERT INTO jobs(id, state, doc, version) VALUES (?, ?, ?, ?)",
                    (job.id, job.state.value, job.model_dump_json(), job.version),
                )
            except sqlite3.IntegrityError:
                raise Conflict(f"a job with id {job.id} already exists") from None
            self._event(cur, job.id, None, job.state, reason)
        return job

    def get_job(self, job_id: str) -> Job:
        row = self._conn.execute("SELECT doc FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"no job with id {job_id}; `gridshift list` shows the jobs")
        return Job.model_validate_json(row[0])

    def find_by_engine_ref(self, engine: str, ref: str) -> Job | None:
        row = self._conn.execute(
            "SELECT doc FROM jobs WHERE json_extract(doc, '$.engine_ref') = ? "
            "AND json_extract(doc, '$.spec.engine') = ?",
            (ref, engine),
        ).fetchone()
        return None if row is None else Job.model_validate_json(row[0])

    def count_by_state(self) -> dict[JobState, int]:
        counts = {state: 0 for state in JobState}
        for state, n in self._conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"):
            counts[JobState(state)] = int(n)
        return counts

    def list_jobs(self, states: Iterable[JobState] | None = None) -> list[Job]:
        if states is None:
            rows = self._conn.execute("SELECT doc FROM jobs ORDER BY rowid").fetchall()
        else:
            wanted = [s.value for s in states]
            marks = ",".join("?" * len(wanted))
            rows = self._conn.execute(
                f"SELECT doc FROM jobs WHERE state IN ({marks}) ORDER BY rowid", wanted
            ).fetchall()
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

    def _load(self, cur: sqlite3.Cursor, job_id: str) -> Job:
        row = cur.execute("SELECT doc FROM jobs WHERE id=?", (job_id,)).fetchone()
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

    def _save(self, cur: sqlite3.Cursor, job: Job) -> None:
        cur.execute(
            "UPDATE jobs SET state=?, doc=?, version=? WHERE id=?",
            (job.state.value, job.model_dump_json(), job.version, job.id),
        )

    def _event(
        self,
        cur: sqlite3.Cursor,
        job_id: str,
        from_state: JobState | None,
        to_state: JobState,
        reason: str,
    ) -> None:
        cur.execute(
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
        rows = self._conn.execute(
            "SELECT job_id, at, from_state, to_state, reason FROM events WHERE job_id=? "
            "ORDER BY seq",
            (job_id,),
        ).fetchall()
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
                "INSERT INTO decisions(job_id, at, doc) VALUES (?, ?, ?)",
                [(d.job_id, d.at.isoformat(), d.model_dump_json()) for d in decisions],
            )

    def decisions(self, job_id: str | None = None, limit: int = 100) -> list[Decision]:
        if job_id is None:
            rows = self._conn.execute(
                "SELECT doc FROM decisions ORDER BY seq DESC LIMIT ?", (limit,)
            ).fetchall()
        else:
            rows = self._conn.execute(
                "SELECT doc FROM decisions WHERE job_id=? ORDER BY seq DESC LIMIT ?",
                (job_id, limit),
            ).fetchall()
        return [Decision.model_validate_json(r[0]) for r in reversed(rows)]

    # -- meta

    def get_meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str | None) -> None:
        with self._lock, self._tx() as cur:
            if value is None:
                cur.execute("DELETE FROM meta WHERE key=?", (key,))
            else:
                cur.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def get_json(self, key: str) -> Any:
        raw = self.get_meta(key)
        return None if raw is None else json.loads(raw)

    def set_json(self, key: str, value: Any) -> None:
        self.set_meta(key, None if value is None else json.dumps(value))

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._cur: sqlite3.Cursor | None = None

    def __enter__(self) -> sqlite3.Cursor:
        self._cur = self._conn.cursor()
        self._cur.execute("BEGIN IMMEDIATE")
        return self._cur

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        assert self._cur is not None
        if exc_type is None:
            self._cur.execute("COMMIT")
        else:
            self._cur.execute("ROLLBACK")


def peek_meta(url: str, key: str) -> str | None:
    """A meta value of an existing store, read without writing anything (for commands that
    show what an agent on that store would use); None where there is no store, no such
    key, or nothing readable."""
    if not url.startswith("sqlite:///"):
        return None
    path = Path(sqlite_path(url))
    if not path.is_file():
        return None
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return None if row is None else str(row[0])


def peek_meta_json(url: str, key: str) -> Any:
    """`peek_meta` of a JSON value, decoded (None where it is not JSON)."""
    text = peek_meta(url, key)
    try:
        return None if text is None else json.loads(text)
    except ValueError:
        return None


def open_store(url: str, clock: Clock) -> SqliteStore:
    """Open the store named by a database URL (sqlite:///path)."""
    if url.startswith("sqlite:///"):
        return SqliteStore.open(sqlite_path(url), clock)
    scheme = url.split(":", 1)[0]
    raise StoreError(
        f"database URL scheme {scheme!r} is not supported by this build; use sqlite:///PATH"
    )
