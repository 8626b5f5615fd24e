"""The index and the key store on PostgreSQL (index backend `postgresql`), shared by every
sensor and every node that lists, searches, exports or verifies.

The SQL is the SQLite index's own (`runtime/index.py`, `runtime/keystore.py`): `PgDb` gives
a psycopg 3 connection the shape of `sqlite3.Connection.execute` (`?` placeholders become
`%s`; a unique violation raises `sqlite3.IntegrityError` as SQLite would), and the few
statements whose dialects differ are overridden here. The schema has its own versions
(`PG_MIGRATIONS`), applied under an advisory lock so that sensors starting together
migrate once.

A lost connection (server restart, network) raises `BackendUnavailable`; the next
statement reconnects. Text holding NUL (which PostgreSQL text cannot store) is kept as a
visible `\\x00`, like lone surrogates are in SQLite.

Key store limit: PostgreSQL does not overwrite deleted rows (a later VACUUM reclaims the
space, it does not zero it), so a destroyed wrapped key may linger in the data files and
WAL until reused; without the master key it decrypts nothing (see runtime/keystore.py).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import psycopg

from recorder.errors import ArchiveError
from recorder.runtime.index import Index
from recorder.runtime.keystore import KeyStore
from recorder.scale.errors import BackendUnavailable

_LOCK_ID = 0x7265636F7264  # pg_advisory_xact_lock key: "record"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _value(value: Any) -> Any:
    if isinstance(value, str):
        text = value.encode("utf-8", "backslashreplace").decode("utf-8")
        return text.replace("\x00", "\\x00")
    return value


class PgDb:
    """One psycopg connection (autocommit) with sqlite3's `execute` shape; reconnects on
    the first statement after a lost connection. One instance per thread."""

    def __init__(self, dsn: str, *, connect_timeout_s: int = 5) -> None:
        self._dsn = dsn
        self._timeout = connect_timeout_s
        self._conn: psycopg.Connection[Any] | None = None
        self._connection()

    def _connection(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            try:
                conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=self._timeout)
            except psycopg.Error as exc:
                raise BackendUnavailable("postgresql", _first_line(exc)) from None
            self._conn = conn
        return conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        if "%" in sql:
            raise ValueError("SQL text may not hold '%' (psycopg placeholders)")
        conn = self._connection()
        try:
            return conn.execute(sql.replace("?", "%s"), [_value(p) for p in params])
        except psycopg.errors.UniqueViolation as exc:
            raise sqlite3.IntegrityError(_first_line(exc)) from None
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self.close()
            raise BackendUnavailable("postgresql", _first_line(exc)) from None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Statements inside run in one transaction (committed at the end, else rolled back)."""
        conn = self._connection()
        try:
            with conn.transaction():
                yield
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self.close()
            raise BackendUnavailable("postgresql", _first_line(exc)) from None

    def run_locked(self, fn: Callable[[psycopg.Connection[Any]], None]) -> None:
        """Run `fn` in one transaction holding the recorder's advisory lock."""
        conn = self._connection()
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
                fn(conn)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self.close()
            raise BackendUnavailable("postgresql", _first_line(exc)) from None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


_TEXT_ID = 'TEXT COLLATE "C"'  # byte order, as SQLite sorts
_V1 = (
    f"""CREATE TABLE recordings (
        id {_TEXT_ID} PRIMARY KEY, call_id {_TEXT_ID} NOT NULL, caller {_TEXT_ID} NOT NULL,
        callee {_TEXT_ID} NOT NULL, start_ns BIGINT NOT NULL, end_ns BIGINT,
        codecs TEXT NOT NULL, sample_rate INTEGER NOT NULL, channels INTEGER NOT NULL,
        complete INTEGER NOT NULL CHECK (complete IN (0, 1)),
        state TEXT NOT NULL CHECK (state IN ('open', 'closed', 'recovered')),
        path TEXT NOT NULL, sha256 TEXT NOT NULL, size BIGINT NOT NULL, kid TEXT NOT NULL,
        purpose TEXT NOT NULL, legal_basis TEXT, retention_class TEXT NOT NULL,
        expires_ns BIGINT, sensor_id TEXT, created_ns BIGINT NOT NULL,
        reason TEXT, notes TEXT, content TEXT NOT NULL DEFAULT 'pcm_s16le')""",
    "CREATE INDEX recordings_by_start ON recordings (start_ns, id)",
    "CREATE INDEX recordings_by_call ON recordings (call_id)",
    "CREATE INDEX recordings_by_expiry ON recordings (expires_ns)",
    "CREATE INDEX recordings_by_caller ON recordings (caller)",
    "CREATE INDEX recordings_by_callee ON recordings (callee)",
    f"""CREATE TABLE calls (
        call_id {_TEXT_ID} NOT NULL, caller TEXT NOT NULL, callee TEXT NOT NULL,
        first_seen_ns BIGINT NOT NULL, last_seen_ns BIGINT NOT NULL,
        outcome TEXT NOT NULL, reason TEXT NOT NULL, sensor_id TEXT,
        PRIMARY KEY (call_id, first_seen_ns))""",
    f"""CREATE TABLE holds (
        recording_id {_TEXT_ID} PRIMARY KEY, reason TEXT NOT NULL,
        set_ns BIGINT NOT NULL, actor TEXT NOT NULL)""",
    f"""CREATE TABLE objects (
        recording_id {_TEXT_ID} PRIMARY KEY, object_key TEXT NOT NULL,
        version_id TEXT NOT NULL, sha256 TEXT NOT NULL, size BIGINT NOT NULL,
        uploaded_ns BIGINT NOT NULL, locked_until_ns BIGINT,
        legal_hold INTEGER NOT NULL CHECK (legal_hold IN (0, 1)), sensor_id TEXT)""",
    f"""CREATE TABLE file_keys (
        recording_id {_TEXT_ID} PRIMARY KEY, kid TEXT NOT NULL, wrapped BYTEA NOT NULL,
        created_ns BIGINT NOT NULL)""",
)
PG_MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1,)
PG_SCHEMA_VERSION = len(PG_MIGRATIONS)


def _migrate(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_ns BIGINT)"
    )
    row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
    version = int(row[0]) if row is not None else 0
    if version > PG_SCHEMA_VERSION:
        raise ArchiveError(
            f"the PostgreSQL index has schema version {version}; this recorder knows up to "
            f"{PG_SCHEMA_VERSION} (upgrade the recorder)"
        )
    for target in range(version + 1, PG_SCHEMA_VERSION + 1):
        for statement in PG_MIGRATIONS[target - 1]:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (%s, %s)", (target, time.time_ns()))


def open_db(dsn: str, *, connect_timeout_s: int = 5) -> PgDb:
    """A connection to the shared database, its schema migrated to this recorder's."""
    db = PgDb(dsn, connect_timeout_s=connect_timeout_s)
    try:
        db.run_locked(_migrate)
    except BaseException:
        db.close()
        raise
    return db


class PgIndex(Index):
    """`runtime.index.Index` on PostgreSQL: the same methods, rows and errors."""

    _UPSERT_CALL = """INSERT INTO calls VALUES (?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (call_id, first_seen_ns) DO UPDATE SET
                 last_seen_ns = GREATEST(calls.last_seen_ns, excluded.last_seen_ns),
                 outcome = excluded.outcome, reason = excluded.reason"""

    def __init__(self, dsn: str, *, connect_timeout_s: int = 5) -> None:
        self.path = Path("postgresql")
        self._pg = open_db(dsn, connect_timeout_s=connect_timeout_s)
        self._db = cast(sqlite3.Connection, self._pg)  # duck-typed: execute() and close()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Several writes in one transaction, as SQLite's `Index.batch`."""
        with self._pg.transaction():
            yield

    def wait_for_locks(self, seconds: float) -> None:
        """PostgreSQL locks rows, not the database: nothing to set."""

    def schema_version(self) -> int:
        row = self._pg.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
        return int(row[0]) if row is not None else 0


class PgKeyStore(KeyStore):
    """`runtime.keystore.KeyStore` on PostgreSQL (table `file_keys`)."""

    def __init__(self, dsn: str, *, connect_timeout_s: int = 5) -> None:
        self.path = Path("postgresql")
        self._pg = open_db(dsn, connect_timeout_s=connect_timeout_s)
        self._db = cast(sqlite3.Connection, self._pg)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Several writes in one transaction, as SQLite's `KeyStore.batch`."""
        with self._pg.transaction():
            yield
