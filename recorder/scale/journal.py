"""The write-behind index a sensor records into when the index is PostgreSQL.

The writer must never wait for (or lose a call to) a database on another host. So on a
sensor every index write and every new file key becomes a job in the local journal (a
`Spool`), and the journal worker applies the jobs to PostgreSQL in arrival order, retrying
while the server is away. Each job is idempotent, so one applied just before a crash
and applied again after it changes nothing:

    put_key          the wrapped file key (already durable in the local keys.sqlite)
    add_recording    a new row; a second insert of the same id is a replay. A row from
                     crash recovery (state "recovered") updates what recovery found.
    update_recording the columns given
    add_call         an upsert already
    uploaded         the object that now holds the recording (see uploader.py); then the
                     local copy and the local key are released (`release`)
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from recorder.errors import ArchiveError
from recorder.runtime.index import Index, RecordingRow, StoredObject
from recorder.runtime.keystore import KeyStore
from recorder.scale.spool import Spool

log = logging.getLogger(__name__)

_RECOVERED_FIELDS = ("end_ns", "complete", "state", "sha256", "size", "reason")
_REC_FIELDS = frozenset(RecordingRow.__dataclass_fields__)


class JournalIndex(Index):
    """The writer's index on a sensor (index backend postgresql): writes are journaled.

    Only the writer's and crash recovery's methods exist; `get` answers None (recovery
    then journals the recovered row, which the worker merges with any row already
    there). Reads go to the shared index (`backends.open_index`)."""

    def __init__(self, journal: Spool) -> None:
        self.path = journal.folder
        self._journal = journal

    def close(self) -> None:
        """Nothing to close: the journal is durable after every write."""

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Each journal job is durable on its own; the worker applies them in order."""
        yield

    def wait_for_locks(self, seconds: float) -> None:
        """The journal takes no lock."""

    def get(self, recording_id: str) -> RecordingRow | None:
        return None

    def add_recording(self, row: RecordingRow) -> None:
        values = asdict(row)
        if values["created_ns"] is None:
            values["created_ns"] = time.time_ns()
        self._journal.push({"op": "add_recording", "row": values})

    def update_recording(self, recording_id: str, **changes: Any) -> bool:
        unknown = sorted(set(changes) - _REC_FIELDS - {"id"})
        if unknown or "id" in changes:
            raise ValueError(f"not index fields: {', '.join(unknown or ['id'])}")
        self._journal.push({"op": "update_recording", "id": recording_id, "changes": changes})
        return True

    def add_call(self, **fields: Any) -> None:
        self._journal.push({"op": "add_call", "fields": fields})


class JournaledKeyStore(KeyStore):
    """The local key store (keys.sqlite, durable before any audio as always) that also
    journals each new key for the shared key store."""

    def __init__(self, path: Path, journal: Spool) -> None:
        super().__init__(path)
        self._journal = journal

    def put(
        self, recording_id: str, kid: str, wrapped: bytes, *, created_ns: int | None = None
    ) -> None:
        when = time.time_ns() if created_ns is None else created_ns
        super().put(recording_id, kid, wrapped, created_ns=when)
        self._journal.push(
            {
                "op": "put_key",
                "recording_id": recording_id,
                "kid": kid,
                "wrapped": base64.b64encode(wrapped).decode("ascii"),
                "created_ns": when,
            }
        )


# release(object, job, shared index, shared keys): after the object is recorded
Release = Callable[[StoredObject, dict[str, Any], Index, KeyStore], None]


def apply_job(job: dict[str, Any], index: Index, keys: KeyStore, release: Release) -> None:
    """Apply one journal job to the shared index and key store (idempotent)."""
    op = job.get("op")
    if op == "put_key":
        _put_key(keys, job)
    elif op == "add_recording":
        _add_recording(index, RecordingRow(**job["row"]))
    elif op == "update_recording":
        if not index.update_recording(job["id"], **job["changes"]):
            log.error("journal: recording %s is not in the shared index", job["id"])
    elif op == "add_call":
        index.add_call(**job["fields"])
    elif op == "uploaded":
        obj = StoredObject(**job["object"])
        index.add_object(obj)
        release(obj, job, index, keys)
    else:
        raise ArchiveError(f"unknown journal job {op!r}")


def _put_key(keys: KeyStore, job: dict[str, Any]) -> None:
    wrapped = base64.b64decode(job["wrapped"])
    try:
        keys.put(job["recording_id"], job["kid"], wrapped, created_ns=job["created_ns"])
    except ArchiveError:
        if keys.get(job["recording_id"]) != (job["kid"], wrapped):
            raise  # another key under this id: never overwrite one
        # the same key again: a replay after a crash


def _add_recording(index: Index, row: RecordingRow) -> None:
    try:
        index.add_recording(row)
    except ArchiveError:
        if row.state == "recovered":  # recovery journals what it found: merge it in
            index.update_recording(row.id, **{f: getattr(row, f) for f in _RECOVERED_FIELDS})
        # else: the same insert again (a replay after a crash)
