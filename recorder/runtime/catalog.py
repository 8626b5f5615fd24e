"""The writer's index writes, which wait while the index is locked; recording never does.

The index is the catalog of an archive, not its evidence: the files, their keys and the
audit trail are. Another process may hold the index's write lock (an operator's `sqlite3`
shell, a backup script, a slow disk under a transaction): before, the writer's commit
waited the busy timeout (10 s, the capture loop standing still meanwhile) and then ended
the process with "database is locked", and every call in progress with it. Now the writes
of a commit are queued in order and made in one transaction; while the lock is held (or
the disk is full) they stay queued, tried again once a second for at most `LOCK_WAIT_S`
each. The recordings are written, closed, renamed and audited meanwhile as always: only
their rows wait.

Writes that wait are also appended to a backlog file (`Backlog`, synced): a crash meanwhile
must not take a recording's row, whose call and numbers are what a data-subject request
searches by. The next session applies a dead session's backlog before crash recovery
(format-v1.md, "Recovery").
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recorder.errors import ArchiveError
from recorder.runtime.files import fsync_dir
from recorder.runtime.index import Index, RecordingRow

log = logging.getLogger(__name__)

RETRY_S = 1.0  # between two tries while the index is locked
LOCK_WAIT_S = 0.2  # how long one try waits for the lock (the capture loop waits with it)
CLOSING_WAIT_S = 30.0  # at the end of a session, waiting is what is left to do
BACKLOG_PREFIX = "index-backlog-"
# While the index is locked, the entries of calls not recorded (SIP scanners send such
# calls all day) wait up to this many; past it they are dropped and counted, so that a
# long lock and a flood together cannot exhaust memory. Recordings' rows always wait.
MAX_WAITING_CALLS = 100_000
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
        """Raises ValueError, TypeError or KeyError for a line that is not one."""
        entry = json.loads(line)
        op, args = str(entry["op"]), dict(entry["args"])
        if op not in _OPS:
            raise ValueError(f"unknown index write {op!r}")
        if op == "add_recording":
            args["row"] = RecordingRow(**args["row"])
        return cls(op, args)


_ROW_FIELDS = tuple(field.name for field in dataclasses.fields(RecordingRow))
_OPS = frozenset({"add_recording", "update_recording", "add_call"})
# A backlog line that cannot be made (a damaged file): skipped, the others are made.
_UNMAKEABLE = (
    ValueError,
    TypeError,
    KeyError,
    ArchiveError,
    sqlite3.InterfaceError,
    sqlite3.IntegrityError,
)


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


@dataclass
class Applied:
    made: int = 0
    skipped: int = 0  # lines of a damaged backlog that are not index writes, or cannot be made


def apply_backlogs(folder: Path, index: Index) -> Applied:
    """Make the index writes that dead sessions left waiting (their files unlocked), in
    order. A torn last line was never synced: its writes were still waiting in memory (what
    they were about is recovered without them). A line that cannot be made is skipped and
    counted: a damaged backlog must not keep the recorder from starting. Raises
    sqlite3.OperationalError while the index is locked."""
    result = Applied()
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
            made = skipped = 0
            with index.batch():
                for line in lines:
                    try:
                        IndexWrite.of_line(line).apply(index, again=True)
                    except _UNMAKEABLE:
                        skipped += 1
                    else:
                        made += 1
            path.unlink()
            fsync_dir(folder)
            result.made += made
            result.skipped += skipped
            log.warning(
                "index writes a crash left waiting: %d made, %d skipped (%s)",
                made,
                skipped,
                path.name,
            )
        finally:
            os.close(fd)
    return result


@dataclass
class CatalogStats:
    deferred: int = 0  # tries that found the index locked
    waiting: int = 0  # index writes waiting now
    calls_dropped: int = 0  # unrecorded calls' entries past MAX_WAITING_CALLS


class Catalog:
    def __init__(self, index: Index, backlog: Backlog) -> None:
        self._index = index
        self._backlog = backlog
        self._writes: list[IndexWrite] = []
        self._saved = 0  # of `_writes`, those in the backlog file
        self._calls = 0  # of `_writes`, entries of calls not recorded
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
        if write.op == "add_call":
            if self._since and self._calls >= MAX_WAITING_CALLS:
                if not self.stats.calls_dropped:
                    log.warning("index locked: entries of calls not recorded are dropped now")
                self.stats.calls_dropped += 1
                return
            self._calls += 1
        self._writes.append(write)
        if self._since:  # (between two commits, writes are queued, not waiting)
            self.stats.waiting = len(self._writes)

    def write(self, *, closing: bool = False) -> None:
        """Make the queued writes in one transaction. While the index is locked, leave them
        queued (a try at most every RETRY_S), unless `closing`: then wait CLOSING_WAIT_S,
        and raise if it is still locked (the backlog keeps them for the next session; a
        second `closing` does not wait again)."""
        if not self._writes:
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
        self._writes, self._saved, self._calls = [], 0, 0
        self.stats.waiting = 0

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
