"""The archive's index (`<archive>/index.sqlite`): one row per recording, one per call seen
but not recorded as audio.

SQLite in WAL mode with a busy timeout, so a reader (`recorder list`) and a writer (a running
recorder or replay) coexist. Every statement is parameterised: Call-IDs and URIs are data and
never reach the SQL text; column names come only from the dataclasses below. The schema is
versioned: `_MIGRATIONS[n]` moves a database from version n to n + 1, inside one transaction.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from recorder.errors import ArchiveError
from recorder.runtime.sqlitetx import transaction
from recorder.runtime.timefmt import rfc3339_ns

STATES = ("open", "closed", "recovered")


@dataclass(kw_only=True)
class RecordingRow:
    """One recording. `end_ns` is None (or the start) while open; `sha256` is "" until closed."""

    id: str
    call_id: str
    caller: str
    callee: str
    start_ns: int
    end_ns: int | None = None
    codecs: list[str] = field(default_factory=list)
    sample_rate: int
    channels: int
    complete: bool = False
    state: str = "open"
    path: str  # relative to the archive root
    sha256: str = ""
    size: int = 0
    kid: str = ""
    purpose: str = "unspecified"
    legal_basis: str | None = None
    retention_class: str = "default"
    expires_ns: int | None = None
    sensor_id: str | None = None
    created_ns: int | None = None  # set to the wall clock by add_recording when None
    reason: str | None = None  # how it ended, or why it is incomplete
    notes: str | None = None
    content: str = "pcm_s16le"  # or "rtp": raw RTP of media the recorder cannot decode

    def to_public_dict(self) -> dict[str, Any]:
        """The JSON contract of `recorder list --json`: times as RFC 3339 UTC strings."""
        end = self.end_ns
        return {
            "id": self.id,
            "call_id": self.call_id,
            "caller": self.caller,
            "callee": self.callee,
            "start": rfc3339_ns(self.start_ns),
            "end": None if end is None else rfc3339_ns(end),
            "duration_s": 0.0 if end is None else round((end - self.start_ns) / 1e9, 6),
            "codecs": list(self.codecs),
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "complete": self.complete,
            "state": self.state,
            "reason": self.reason,
            "path": self.path,
            "sha256": self.sha256 or None,
            "size": self.size,
            "kid": self.kid,
            "sensor_id": self.sensor_id,
            "purpose": self.purpose,
            "legal_basis": self.legal_basis,
            "retention_class": self.retention_class,
            "expires": None if self.expires_ns is None else rfc3339_ns(self.expires_ns),
            "content": self.content,
        }


@dataclass(frozen=True)
class Hold:
    """A legal hold on one recording: why, since when, set by whom."""

    recording_id: str
    reason: str
    set_ns: int
    actor: str


@dataclass(kw_only=True)
class CallRow:
    """A call seen on the wire but not recorded as audio, and why (`outcome`, `reason`)."""

    call_id: str
    caller: str
    callee: str
    first_seen_ns: int
    last_seen_ns: int
    outcome: str  # e.g. "not_answered", "no_audio", "undecodable"
    reason: str = ""
    sensor_id: str | None = None

    def to_public_dict(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "caller": self.caller,
            "callee": self.callee,
            "first_seen": rfc3339_ns(self.first_seen_ns),
            "last_seen": rfc3339_ns(self.last_seen_ns),
            "outcome": self.outcome,
            "reason": self.reason,
            "sensor_id": self.sensor_id,
        }


@dataclass(kw_only=True)
class StoredObject:
    """Where a recording was uploaded (archive backend s3): the object key and version id,
    the SHA-256 the object store verified, and the Object Lock state the recorder set."""

    recording_id: str
    object_key: str
    version_id: str
    sha256: str
    size: int
    uploaded_ns: int
    locked_until_ns: int | None = None  # COMPLIANCE retain-until, None when not locked
    legal_hold: bool = False
    sensor_id: str | None = None


_REC_COLUMNS = tuple(f.name for f in fields(RecordingRow))
_CALL_COLUMNS = tuple(f.name for f in fields(CallRow))
_OBJ_COLUMNS = tuple(f.name for f in fields(StoredObject))


def _v1(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE recordings (
            id TEXT PRIMARY KEY, call_id TEXT NOT NULL, caller TEXT NOT NULL,
            callee TEXT NOT NULL, start_ns INTEGER NOT NULL, end_ns INTEGER,
            codecs TEXT NOT NULL, sample_rate INTEGER NOT NULL, channels INTEGER NOT NULL,
            complete INTEGER NOT NULL CHECK (complete IN (0, 1)),
            state TEXT NOT NULL CHECK (state IN ('open', 'closed', 'recovered')),
            path TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL, kid TEXT NOT NULL,
            purpose TEXT NOT NULL, legal_basis TEXT, retention_class TEXT NOT NULL,
            expires_ns INTEGER, sensor_id TEXT, created_ns INTEGER NOT NULL,
            reason TEXT, notes TEXT)"""
    )
    db.execute("CREATE INDEX recordings_by_start ON recordings (start_ns, id)")
    db.execute("CREATE INDEX recordings_by_call ON recordings (call_id)")
    db.execute("CREATE INDEX recordings_by_expiry ON recordings (expires_ns)")
    db.execute(
        """CREATE TABLE calls (
            call_id TEXT NOT NULL, caller TEXT NOT NULL, callee TEXT NOT NULL,
            first_seen_ns INTEGER NOT NULL, last_seen_ns INTEGER NOT NULL,
            outcome TEXT NOT NULL, reason TEXT NOT NULL, sensor_id TEXT,
            PRIMARY KEY (call_id, first_seen_ns))"""
    )


def _v2(db: sqlite3.Connection) -> None:
    """Legal holds (compliance): a held recording is never deleted, by any command."""
    db.execute(
        """CREATE TABLE holds (
            recording_id TEXT PRIMARY KEY, reason TEXT NOT NULL,
            set_ns INTEGER NOT NULL, actor TEXT NOT NULL)"""
    )
    db.execute("CREATE INDEX recordings_by_caller ON recordings (caller)")
    db.execute("CREATE INDEX recordings_by_callee ON recordings (callee)")


def _v3(db: sqlite3.Connection) -> None:
    """What a recording holds: PCM audio, or the raw RTP of media that cannot be decoded."""
    db.execute("ALTER TABLE recordings ADD COLUMN content TEXT NOT NULL DEFAULT 'pcm_s16le'")


def _v4(db: sqlite3.Connection) -> None:
    """Uploaded copies (archive backend s3): one object version per recording."""
    db.execute(
        """CREATE TABLE objects (
            recording_id TEXT PRIMARY KEY, object_key TEXT NOT NULL, version_id TEXT NOT NULL,
            sha256 TEXT NOT NULL, size INTEGER NOT NULL, uploaded_ns INTEGER NOT NULL,
            locked_until_ns INTEGER, legal_hold INTEGER NOT NULL CHECK (legal_hold IN (0, 1)),
            sensor_id TEXT)"""
    )


_MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_v1, _v2, _v3, _v4)
SCHEMA_VERSION = len(_MIGRATIONS)


def _text(value: Any) -> Any:
    """SQLite text is UTF-8: lone surrogates (surrogateescape'd wire bytes) become \\udcXX."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _to_sql(name: str, value: Any) -> Any:
    if name == "codecs":
        if not isinstance(value, list | tuple) or not all(isinstance(c, str) for c in value):
            raise ValueError("codecs must be a list of strings")
        return json.dumps(list(value))  # ASCII escapes: any str round-trips
    if name == "complete":
        return int(bool(value))
    if name == "state" and value not in STATES:
        raise ValueError(f"state must be one of {STATES}, not {value!r}")
    return _text(value)


def _row(record: tuple[Any, ...]) -> RecordingRow:
    values = dict(zip(_REC_COLUMNS, record, strict=True))
    values["codecs"] = json.loads(values["codecs"])
    values["complete"] = bool(values["complete"])
    return RecordingRow(**values)


def _object(record: tuple[Any, ...]) -> StoredObject:
    values = dict(zip(_OBJ_COLUMNS, record, strict=True))
    values["legal_hold"] = bool(values["legal_hold"])
    return StoredObject(**values)


class Index:
    """The recordings index of one archive; one instance per process and thread.

    The SQL below is shared with the PostgreSQL index (`recorder.scale.pg.PgIndex`), which
    swaps in its own connection and the few statements whose dialects differ."""

    # Replaying a capture twice updates a call's entry rather than listing it twice.
    _UPSERT_CALL = """INSERT INTO calls VALUES (?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (call_id, first_seen_ns) DO UPDATE SET
                 last_seen_ns = MAX(last_seen_ns, excluded.last_seen_ns),
                 outcome = excluded.outcome, reason = excluded.reason"""

    def __init__(self, path: Path, *, create: bool = True, busy_timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        self._db = _connect(self.path, create, busy_timeout_s, "index")
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            _migrate(self._db, self.path)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise ArchiveError(f"index {self.path} is unusable: {exc}") from None
        except BaseException:
            self._db.close()
            raise

    @classmethod
    def open(cls, path: Path, *, create: bool = True) -> Index:
        return cls(path, create=create)

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def batch(self) -> AbstractContextManager[None]:
        """Several writes in one transaction: one sync for all (the writer's group commit)."""
        return transaction(self._db)

    def wait_for_locks(self, seconds: float) -> None:
        """How long a write waits for another connection's lock before it fails."""
        self._db.execute(f"PRAGMA busy_timeout = {int(seconds * 1000)}")

    def add_recording(self, row: RecordingRow) -> None:
        """Insert a new recording; a second row with the same id raises ArchiveError."""
        values = {name: getattr(row, name) for name in _REC_COLUMNS}  # asdict deep-copies
        if values["created_ns"] is None:
            values["created_ns"] = time.time_ns()
        params = [_to_sql(name, values[name]) for name in _REC_COLUMNS]
        marks = ", ".join("?" * len(_REC_COLUMNS))
        sql = f"INSERT INTO recordings ({', '.join(_REC_COLUMNS)}) VALUES ({marks})"  # noqa: S608
        try:
            self._db.execute(sql, params)
        except sqlite3.IntegrityError:
            raise ArchiveError(f"recording {row.id!r} is already in the index") from None

    def update_recording(self, recording_id: str, **changes: Any) -> bool:
        """Set some columns of one recording; False if there is no such recording."""
        unknown = sorted(set(changes) - set(_REC_COLUMNS[1:]))
        if unknown:
            raise ValueError(f"not index fields: {', '.join(unknown)}")
        if not changes:
            return self.get(recording_id) is not None
        names = list(changes)
        assignments = ", ".join(f"{name} = ?" for name in names)
        params = [_to_sql(name, changes[name]) for name in names]
        sql = f"UPDATE recordings SET {assignments} WHERE id = ?"  # noqa: S608
        return self._db.execute(sql, [*params, recording_id]).rowcount == 1

    def delete_recording(self, recording_id: str) -> bool:
        """Remove a recording's row (retention); False if it was not there."""
        return (
            self._db.execute("DELETE FROM recordings WHERE id = ?", (recording_id,)).rowcount == 1
        )

    def get(self, recording_id: str) -> RecordingRow | None:
        sql = f"SELECT {', '.join(_REC_COLUMNS)} FROM recordings WHERE id = ?"  # noqa: S608
        record = self._db.execute(sql, (recording_id,)).fetchone()
        return None if record is None else _row(record)

    def list_recordings(self) -> list[RecordingRow]:
        """Every recording, oldest start first."""
        sql = f"SELECT {', '.join(_REC_COLUMNS)} FROM recordings ORDER BY start_ns, id"  # noqa: S608
        return [_row(record) for record in self._db.execute(sql)]

    def find_recordings(
        self,
        *,
        number: str | None = None,
        start_from_ns: int | None = None,
        start_to_ns: int | None = None,
        purpose: str | None = None,
    ) -> list[RecordingRow]:
        """Recordings by caller-or-callee number (exact), start time range [from, to) and
        purpose, oldest first; every criterion given must hold."""
        where: list[str] = []
        params: list[Any] = []
        if number is not None:
            where.append("(caller = ? OR callee = ?)")
            params += [_text(number), _text(number)]
        if start_from_ns is not None:
            where.append("start_ns >= ?")
            params.append(start_from_ns)
        if start_to_ns is not None:
            where.append("start_ns < ?")
            params.append(start_to_ns)
        if purpose is not None:
            where.append("purpose = ?")
            params.append(_text(purpose))
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        sql = (
            f"SELECT {', '.join(_REC_COLUMNS)} FROM recordings{clause}"  # noqa: S608
            " ORDER BY start_ns, id"
        )
        return [_row(record) for record in self._db.execute(sql, params)]

    def expired(self, now_ns: int) -> list[RecordingRow]:
        """Closed or recovered recordings whose expiry is at or before `now_ns`."""
        sql = (
            f"SELECT {', '.join(_REC_COLUMNS)} FROM recordings"  # noqa: S608
            " WHERE expires_ns IS NOT NULL AND expires_ns <= ? AND state != 'open'"
            " ORDER BY expires_ns, id"
        )
        return [_row(record) for record in self._db.execute(sql, (now_ns,))]

    def without_expiry(self) -> list[RecordingRow]:
        """Closed or recovered recordings with no expiry fixed (e.g. recovered after a crash)."""
        sql = (
            f"SELECT {', '.join(_REC_COLUMNS)} FROM recordings"  # noqa: S608
            " WHERE expires_ns IS NULL AND state != 'open' ORDER BY start_ns, id"
        )
        return [_row(record) for record in self._db.execute(sql)]

    # -- legal holds ----------------------------------------------------------------------

    def set_hold(self, recording_id: str, reason: str, actor: str, now_ns: int) -> bool:
        """Hold a recording (a second hold replaces the reason); False if there is none."""
        if self.get(recording_id) is None:
            return False
        self._db.execute(
            """INSERT INTO holds VALUES (?, ?, ?, ?) ON CONFLICT (recording_id)
               DO UPDATE SET reason = excluded.reason, set_ns = excluded.set_ns,
               actor = excluded.actor""",
            (recording_id, _text(reason), now_ns, _text(actor)),
        )
        return True

    def clear_hold(self, recording_id: str) -> bool:
        """Release a hold; False if the recording was not held."""
        cursor = self._db.execute("DELETE FROM holds WHERE recording_id = ?", (recording_id,))
        return cursor.rowcount == 1

    def hold_of(self, recording_id: str) -> Hold | None:
        row = self._db.execute(
            "SELECT recording_id, reason, set_ns, actor FROM holds WHERE recording_id = ?",
            (recording_id,),
        ).fetchone()
        return None if row is None else Hold(*row)

    def holds(self) -> list[Hold]:
        """Every hold, by recording id."""
        rows = self._db.execute(
            "SELECT recording_id, reason, set_ns, actor FROM holds ORDER BY recording_id"
        )
        return [Hold(*row) for row in rows]

    # -- calls not recorded ---------------------------------------------------------------

    def delete_calls(self, number: str) -> int:
        """Remove the entries of calls not recorded where `number` called or was called."""
        cursor = self._db.execute(
            "DELETE FROM calls WHERE caller = ? OR callee = ?", (_text(number), _text(number))
        )
        return cursor.rowcount

    def purge_calls(self, before_ns: int) -> int:
        """Remove entries of calls not recorded last seen before `before_ns` (retention)."""
        cursor = self._db.execute("DELETE FROM calls WHERE last_seen_ns < ?", (before_ns,))
        return cursor.rowcount

    def add_call(
        self,
        *,
        call_id: str,
        caller: str,
        callee: str,
        first_seen_ns: int,
        last_seen_ns: int,
        outcome: str,
        reason: str = "",
        sensor_id: str | None = None,
    ) -> None:
        """Record a call not recorded as audio; the same (call_id, first_seen_ns) updates it,
        so replaying a capture twice does not list its calls twice."""
        values = (call_id, caller, callee, first_seen_ns, last_seen_ns, outcome, reason, sensor_id)
        self._db.execute(self._UPSERT_CALL, [_text(v) for v in values])

    def list_calls(self) -> list[CallRow]:
        """Every call seen but not recorded, oldest first."""
        sql = f"SELECT {', '.join(_CALL_COLUMNS)} FROM calls ORDER BY first_seen_ns, call_id"  # noqa: S608
        return [CallRow(**dict(zip(_CALL_COLUMNS, r, strict=True))) for r in self._db.execute(sql)]

    # -- uploaded copies (archive backend s3) ----------------------------------------------

    def add_object(self, obj: StoredObject) -> bool:
        """Record where a recording was uploaded; False (unchanged) if it already was."""
        values = asdict(obj)
        values["legal_hold"] = int(bool(values["legal_hold"]))
        params = [_text(values[name]) for name in _OBJ_COLUMNS]
        marks = ", ".join("?" * len(_OBJ_COLUMNS))
        sql = (
            f"INSERT INTO objects ({', '.join(_OBJ_COLUMNS)}) VALUES ({marks})"  # noqa: S608
            " ON CONFLICT (recording_id) DO NOTHING"
        )
        return self._db.execute(sql, params).rowcount == 1

    def object_of(self, recording_id: str) -> StoredObject | None:
        sql = f"SELECT {', '.join(_OBJ_COLUMNS)} FROM objects WHERE recording_id = ?"  # noqa: S608
        record = self._db.execute(sql, (recording_id,)).fetchone()
        return None if record is None else _object(record)

    def list_objects(self) -> list[StoredObject]:
        """Every uploaded copy, by recording id."""
        sql = f"SELECT {', '.join(_OBJ_COLUMNS)} FROM objects ORDER BY recording_id"  # noqa: S608
        return [_object(record) for record in self._db.execute(sql)]

    def update_object(
        self, recording_id: str, *, locked_until_ns: int | None, legal_hold: bool
    ) -> bool:
        """Note the Object Lock state last set on a recording's object."""
        cursor = self._db.execute(
            "UPDATE objects SET locked_until_ns = ?, legal_hold = ? WHERE recording_id = ?",
            (locked_until_ns, int(legal_hold), recording_id),
        )
        return cursor.rowcount == 1

    def delete_object(self, recording_id: str) -> bool:
        cursor = self._db.execute("DELETE FROM objects WHERE recording_id = ?", (recording_id,))
        return cursor.rowcount == 1

    def schema_version(self) -> int:
        return _version(self._db)


def _connect(path: Path, create: bool, busy_timeout_s: float, what: str) -> sqlite3.Connection:
    """Open (creating it owner-only if allowed) a database in autocommit mode."""
    if not path.exists():
        if not create:
            raise ArchiveError(f"{what} {path} does not exist")
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
    try:
        return sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None)
    except sqlite3.Error as exc:
        raise ArchiveError(f"cannot open {what} {path}: {exc}") from None


def _version(db: sqlite3.Connection) -> int:
    exists = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if exists is None:
        return 0
    return int(db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0])


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    if _version(db) == SCHEMA_VERSION:
        return
    db.execute("BEGIN IMMEDIATE")  # one migrator at a time; the others wait, then see it done
    try:
        version = _version(db)
        if version > SCHEMA_VERSION:
            raise ArchiveError(
                f"index {path} has schema version {version}; this recorder knows "
                f"up to {SCHEMA_VERSION} (upgrade the recorder)"
            )
        if version == 0:
            db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, applied_ns INTEGER)")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            _MIGRATIONS[target - 1](db)
            db.execute("INSERT INTO schema_version VALUES (?, ?)", (target, time.time_ns()))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
