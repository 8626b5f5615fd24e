"""The writer's index writes, which wait while the index is locked; recording never does.

The index is the catalog of an archive, not its evidence: the files, their keys and the
audit trail are. Another process may hold the index's write lock (an operator's `sqlite3`
shell, a backup script, a slow disk under a transaction): before, the writer's commit
waited the busy timeout (10 s, the capture loop standing still meanwhile) and then ended
the process with "database is locked", and every call in progress with it. Now the writes
of a commit are queued in order and made in one transaction; while the lock is held (or
the disk is full) they stay queued, tried again once a second for at most `LOCK_WAIT_S`
each, and what must follow them (the rename that makes a closed recording's file final,
the audit record of its hash, the upload) waits with them.

Writes that wait are also appended to a backlog file (`Backlog`, synced): a crash meanwhile
must not take a recording's row, whose call and numbers are what a data-subject request
searches by. The next session applies a dead session's backlog before crash recovery, which
then finds the recordings still `.partial` and recovers each whole (format-v1.md,
"Recovery").
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recorder.runtime.files import fsync_dir
from recorder.runtime.index import Index, RecordingRow

log = logging.getLogger(__name__)

RETRY_S = 1.0  # between two tries while the index is locked
LOCK_WAIT_S = 0.2  # how long one try waits for the lock (the capture loop waits with it)
CLOSING_WAIT_S = 30.0  # at the end of a session, waiting is what is left to do
BACKLOG_PREFIX = "index-backlog-"
_WAITABLE = {5, 6, 13}  # SQLITE_BUSY, SQLITE_LOCKED, SQLITE_FULL (primary result codes)


def waitable(exc: BaseException) -> bool:
    """Another connection holds the lock, or the disk is full: it passes."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _WAITABLE


@dataclass(frozen=True, slots=True)
class IndexWrite:
    """One of the writer's index writes, as data (it may wait on disk)."""

    op: str  # "add_recording", "update_recording", "add_call"
    args: dict[str, Any]

    def apply(self, index: Index, *, again: bool = False) -> None:
        """Make it; `again`: it may have been made before (a backlog after a crash)."""
        if self.op == "add_recording":
            row = self.args["row"]
            if not again or index.get(row.id) is None:
                index.add_recording(row)
        elif self.op == "update_recording":
            changes = dict(self.args)
            index.update_recording(changes.pop("id"), **changes)
        elif self.op == "add_call":
            index.add_call(**self.args)  # an upsert: idempotent
        else:
            raise ValueError(f"unknown index write {self.op!r}")

    def line(self) -> bytes:
        args = self.args
        if self.op == "add_recording":
            args = {"row": {name: getattr(args["row"], name) for name in _ROW_FIELDS}}
        return json.dumps({"op": self.op, "args": args}).encode() + b"\n"

    @classmethod
    def of_line(cls, line: bytes) -> IndexWrite:
        entry = json.loads(line)
        op, args = str(entry["op"]), dict(entry["args"])
        if op == "add_recording":
            args["row"] = RecordingRow(**args["row"])
        return cls(op, args)


_ROW_FIELDS = tuple(field.name for field in dataclasses.fields(RecordingRow))


def add_recording(row: RecordingRow) -> IndexWrite:
    return IndexWrite("add_recording", {"row": row})


def update_recording(recording_id: str, **changes: Any) -> IndexWrite:
    return IndexWrite("update_recording", {"id": recording_id, **changes})


def add_call(**fields: Any) -> IndexWrite:
    return IndexWrite("add_call", fields)


class Backlog:
    """This session's waiting index writes on disk: a file of JSON lines, each append
    synced, locked for the session's life (a running session's backlog is its own),
    removed once the writes are made."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._fd: int | None = None
        self._path: Path | None = None

    def append(self, writes: list[IndexWrite]) -> None:
        if self._fd is None:
            # Locked before it has the name `apply_backlogs` looks for.
            name = f"{BACKLOG_PREFIX}{os.getpid()}-{os.urandom(4).hex()}.jsonl"
            making = self.folder / ("." + name)
            flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
            self._fd = os.open(making, flags, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            self._path = self.folder / name
            os.rename(making, self._path)
            fsync_dir(self.folder)
        data = b"".join(write.line() for write in writes)
        while data:
            data = data[os.write(self._fd, data) :]
        os.fsync(self._fd)

    def release(self) -> None:
        """Let the next session have what is left (a process's exit does this too)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = self._path = None

    def clear(self) -> None:
        if self._fd is None or self._path is None:
            return
        self._path.unlink()
        fsync_dir(self.folder)  # gone for good: made twice, some writes would undo later ones
        os.close(self._fd)
        self._fd = self._path = None


def apply_backlogs(folder: Path, index: Index) -> int:
    """Make the index writes that dead sessions left waiting (their files unlocked), in
    order; returns how many. A torn last line was never synced: its writes were still
    waiting in memory, and what they were about is recovered without them."""
    made = 0
    for path in sorted(folder.glob(BACKLOG_PREFIX + "*.jsonl")):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a running session's
            with os.fdopen(os.dup(fd), "rb") as f:
                lines = f.read().splitlines()
            writes = []
            for line in lines:
                with contextlib.suppress(ValueError, TypeError, KeyError):
                    writes.append(IndexWrite.of_line(line))
            with index.batch():
                for write in writes:
                    write.apply(index, again=True)
            path.unlink()
            fsync_dir(folder)
            made += len(writes)
            log.warning("index writes a crash left waiting: %d made (%s)", len(writes), path.name)
        finally:
            os.close(fd)
    return made


@dataclass
class CatalogStats:
    deferred: int = 0  # tries that found the index locked
    waiting: int = 0  # index writes waiting now


class Catalog:
    def __init__(self, index: Index, backlog: Backlog) -> None:
        self._index = index
        self._backlog = backlog
        self._writes: list[IndexWrite] = []
        self._saved = 0  # of `_writes`, those in the backlog file
        self._then: list[Callable[[], None]] = []
        self._retry_at = 0.0
        self._since = 0.0  # monotonic time the current wait began (0: none)
        self._gave_up = False  # a closing write found the index still locked
        self.stats = CatalogStats()
        self._lock_wait(LOCK_WAIT_S)

    def _lock_wait(self, seconds: float) -> None:
        set_wait = getattr(self._index, "wait_for_locks", None)
        if set_wait is not None:
            set_wait(seconds)

    def add(self, write: IndexWrite) -> None:
        """An index write, made with the others of the next `write`, in order."""
        self._writes.append(write)
        if self._since:  # (between two commits, writes are queued, not waiting)
            self.stats.waiting = len(self._writes)

    def then(self, action: Callable[[], None]) -> None:
        """Something to do once every index write added so far is made."""
        self._then.append(action)

    def write(self, *, closing: bool = False) -> None:
        """Make the queued writes in one transaction. While the index is locked, leave them
        queued (a try at most every RETRY_S), unless `closing`: then wait CLOSING_WAIT_S,
        and raise if it is still locked (the backlog keeps them for the next session; a
        second `closing` does not wait again)."""
        if not self._writes and not self._then:
            return
        if closing and self._gave_up:
            self._save()
            return
        if not closing and self._since and time.monotonic() < self._retry_at:
            self._save()  # added while waiting: on disk at this commit, not at the next try
            return
        if closing:
            self._lock_wait(CLOSING_WAIT_S)
        try:
            with self._index.batch():
                for write in self._writes:
                    write.apply(self._index)
        except sqlite3.OperationalError as exc:
            if not waitable(exc):
                raise
            self._wait(exc)
            self.stats.waiting = len(self._writes)
            if closing:
                self._gave_up = True
                raise
            return
        finally:
            if closing:
                self._lock_wait(LOCK_WAIT_S)
        if self._since:
            log.warning(
                "index writable again after %.1f s: %d writes made",
                time.monotonic() - self._since,
                len(self._writes),
            )
            self._since = 0.0
        self._backlog.clear()
        self._writes, self._saved, then, self._then = [], 0, self._then, []
        self.stats.waiting = 0
        for action in then:
            action()

    def close(self) -> None:
        """The end of the session: writes still waiting are the next session's."""
        self._backlog.release()

    def _wait(self, exc: sqlite3.OperationalError) -> None:
        now = time.monotonic()
        self._retry_at = now + RETRY_S
        self.stats.deferred += 1
        if not self._since:
            self._since = now
            log.warning(
                "index %s: %s; its writes wait (%d so far), recording goes on",
                self._index.path,
                exc,
                len(self._writes),
            )
        self._save()

    def _save(self) -> None:
        if self._saved < len(self._writes):
            try:
                self._backlog.append(self._writes[self._saved :])
            except OSError as exc:  # (a full disk): they wait in memory, tried again later
                log.warning("index backlog %s: %s", self._backlog.folder, exc.strerror or exc)
                return
            self._saved = len(self._writes)
