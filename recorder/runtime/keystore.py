"""The key store (`<archive>/keys.sqlite`): each recording's wrapped file key, kept OUTSIDE
the recording so that deleting one row shreds the recording and every copy of it (retention,
erasure requests).

It is a separate database from the index because its lifecycle differs: the index may be
rebuilt or shared, this file must be backed up with care and its rows destroyed for good.
So: `PRAGMA secure_delete=ON` (SQLite overwrites deleted content with zeros), a rollback
journal rather than WAL (a WAL file would keep old copies of pages until a checkpoint), and
`synchronous=FULL` (a key is durable before the recording that needs it gets any audio).

Limit: during a delete, SQLite's rollback journal briefly holds the old page; the journal is
unlinked at commit, but the file system may keep those blocks until they are reused. The
wrapped key alone is useless without the master key, so destroying the row (and, for a whole
archive, the master key) is the shredding step; SSD-level erasure is the operator's part.
"""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import AbstractContextManager
from pathlib import Path

from recorder.errors import ArchiveError
from recorder.runtime.sqlitetx import transaction

_SCHEMA = """CREATE TABLE IF NOT EXISTS file_keys (
    recording_id TEXT PRIMARY KEY,
    kid TEXT NOT NULL,
    wrapped BLOB NOT NULL,
    created_ns INTEGER NOT NULL)"""


class KeyStore:
    """Wrapped file keys by recording id; one instance per process and thread."""

    def __init__(self, path: Path, *, create: bool = True, busy_timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        if not self.path.exists():
            if not create:
                raise ArchiveError(f"key store {self.path} does not exist")
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
        self._db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None)
        try:
            self._setup()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise ArchiveError(f"key store {self.path} is unusable: {exc}") from None
        except BaseException:
            self._db.close()
            raise

    def _setup(self) -> None:
        db = self._db
        db.execute("PRAGMA secure_delete=ON")
        if db.execute("PRAGMA secure_delete").fetchone()[0] != 1:
            raise ArchiveError(f"key store {self.path}: this SQLite cannot secure_delete")
        mode = db.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
        if mode != "delete":
            raise ArchiveError(f"key store {self.path}: journal mode stays {mode!r}")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(_SCHEMA)

    @classmethod
    def open(cls, path: Path, *, create: bool = True) -> KeyStore:
        return cls(path, create=create)

    def __enter__(self) -> KeyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def batch(self) -> AbstractContextManager[None]:
        """Several writes in one transaction: one sync for all (the writer's group commit)."""
        return transaction(self._db)

    def put(
        self, recording_id: str, kid: str, wrapped: bytes, *, created_ns: int | None = None
    ) -> None:
        """Store a new recording's wrapped key (durable on return); never overwrites one."""
        _check(kid, wrapped)
        when = time.time_ns() if created_ns is None else created_ns
        try:
            self._db.execute(
                "INSERT INTO file_keys VALUES (?, ?, ?, ?)", (recording_id, kid, wrapped, when)
            )
        except sqlite3.IntegrityError:
            raise ArchiveError(
                f"recording {recording_id!r} already has a key in the key store"
            ) from None

    def get(self, recording_id: str) -> tuple[str, bytes] | None:
        """(kid, wrapped key) of a recording, or None if it was never stored or destroyed."""
        row = self._db.execute(
            "SELECT kid, wrapped FROM file_keys WHERE recording_id = ?", (recording_id,)
        ).fetchone()
        return None if row is None else (str(row[0]), bytes(row[1]))

    def replace(self, recording_id: str, kid: str, wrapped: bytes) -> bool:
        """Swap in a key re-wrapped under another master key; False if there is none to swap."""
        _check(kid, wrapped)
        cursor = self._db.execute(
            "UPDATE file_keys SET kid = ?, wrapped = ? WHERE recording_id = ?",
            (kid, wrapped, recording_id),
        )
        return cursor.rowcount == 1

    def delete(self, recording_id: str) -> bool:
        """Destroy a recording's key (its contents become unrecoverable); False if absent."""
        cursor = self._db.execute("DELETE FROM file_keys WHERE recording_id = ?", (recording_id,))
        return cursor.rowcount == 1

    def kids_in_use(self) -> dict[str, int]:
        """How many stored keys each master key id wraps (a master key in use must be kept)."""
        rows = self._db.execute("SELECT kid, COUNT(*) FROM file_keys GROUP BY kid ORDER BY kid")
        return {str(kid): int(count) for kid, count in rows}

    def recording_ids(self) -> list[str]:
        """Every recording id with a stored key, sorted."""
        rows = self._db.execute("SELECT recording_id FROM file_keys ORDER BY recording_id")
        return [str(r[0]) for r in rows]


def _check(kid: str, wrapped: bytes) -> None:
    if not kid:
        raise ValueError("a wrapped key needs the id of the master key that wraps it")
    if not isinstance(wrapped, bytes) or not wrapped:
        raise ValueError("a wrapped key is non-empty bytes")
