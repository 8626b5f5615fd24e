"""Turns the core's recording events into sealed files, index rows and audit records.

Crash safety (format-v1.md, "Recovery"): the wrapped file key is committed (durably) to the
key store before the recording's first byte is written; the header and sealed segments are
appended as they fill, and made durable together, for every open recording at once, by one
group sync (`syncfs`, in a background thread) started every `fsync_interval_s`; at the end
the final segment is written, the file fsynced and renamed from `.rec.partial` to `.rec`,
and the audit record of its hash synced (its index row follows, `catalog.py`: while another
process holds the index's lock it waits in a synced backlog). What a crash can lose is
therefore bounded by:
  - SIGKILL (the OS survives): the core's jitter window and flush cadence (at most 2 s) plus
    the unsealed segment tail (< 16 KiB: 0.5 s of 8 kHz stereo), plus the sealed segments
    the append thread has not written yet (`appender.py`: normally what the last turn of
    the loop handed over; with a stalled disk, at most 64 MiB over all recordings);
  - power loss: additionally what was written since the start of the last group sync that
    completed (`fsync_interval_s`, plus however long that sync took).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from recorder.container.format import RecordingHeader
from recorder.container.keywrap import wrap_file_key
from recorder.container.masterkey import MasterKey
from recorder.container.segments import RecordingWriter
from recorder.core.events import (
    CallNotRecorded,
    Event,
    RecordingAudio,
    RecordingEnded,
    RecordingMarker,
    RecordingStarted,
)
from recorder.runtime import catalog
from recorder.runtime.appender import Appender
from recorder.runtime.archive import PARTIAL_SUFFIX, Archive, new_recording_id
from recorder.runtime.audit import AuditTrail, Value
from recorder.runtime.catalog import Backlog, Catalog, CatalogStats
from recorder.runtime.durability import GroupSync
from recorder.runtime.fdlimit import recording_slots
from recorder.runtime.files import fsync_dir
from recorder.runtime.index import Index, RecordingRow
from recorder.runtime.keystore import KeyStore
from recorder.runtime.spares import SparePool
from recorder.runtime.timefmt import rfc3339_ns

log = logging.getLogger(__name__)


@dataclass
class OpenRecording:
    recording_id: str
    relative: str
    partial: os.PathLike[str] | str
    fd: int
    sealer: RecordingWriter
    sha256: hashlib._Hash = field(default_factory=hashlib.sha256)
    size: int = 0
    failed: bool = False
    write_error: OSError | None = None  # set by the append thread, reported by `_fail`


@dataclass(frozen=True)
class ClosedRecording:
    """What `on_closed` hears when a recording is sealed under its final name: enough to
    upload it (archive backend s3) without reading the index."""

    recording_id: str
    path: Path  # the sealed file
    relative: str  # its path in the archive
    sha256: str
    size: int
    start_ns: int
    end_ns: int
    retention_class: str
    expires_ns: int | None


def keep_everything(retention_class: str, end_ns: int) -> int | None:
    """The default expiry rule: none (retention classes set it when configured)."""
    return None


def always_admit() -> str | None:
    """The default admission check: always room (the service checks free disk space)."""
    return None


@dataclass
class WriterStats:
    refused: int = 0
    opened: int = 0
    closed: int = 0
    failed: int = 0
    bytes_written: int = 0
    not_recorded: int = 0


def _hold(fd: int, path: str) -> None:
    """Lock a new recording's file until its rename: another recorder's crash recovery
    leaves locked files alone (recovery.py). On failure nothing stays at `path`."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


def _create(path: str, folder: Path) -> int:
    """A new recording's file, and its day's folder the first time (a mkdir for every call
    costs about a third of what the create does)."""
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_APPEND
    try:
        return os.open(path, flags, 0o600)
    except FileNotFoundError:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        return os.open(path, flags, 0o600)


class ArchiveWriter:
    def __init__(
        self,
        archive: Archive,
        master: MasterKey,
        index: Index,
        keys: KeyStore,
        audit: AuditTrail,
        *,
        fsync_interval_s: float = 1.0,
        expiry: Callable[[str, int], int | None] = keep_everything,
        admission: Callable[[], str | None] = always_admit,
        sensor_id: str | None = None,
        on_closed: Callable[[ClosedRecording], None] | None = None,
        spare_files: int = 0,
    ) -> None:
        """`expiry(retention_class, end_ns)` fixes a recording's expiry when it closes;
        `admission()` returns a reason to refuse a new recording (e.g. disk nearly full)
        or None to open it; `on_closed` hears of each recording once it is sealed, indexed
        and audited (the uploader queues it); `spare_files` files are kept made ahead
        (`spares.py`: for a live service, whose calls can start by the thousand)."""
        self._archive = archive
        self._master = master
        self._index = index
        # Index writes wait while another process holds its lock; nothing else does.
        self._catalog = Catalog(index, Backlog(archive.root))
        self._keys = keys
        self._audit = audit
        self._fsync_interval = fsync_interval_s
        self._expiry = expiry
        self._admission = admission
        self._file_slots = recording_slots()  # files the recordings may hold open at once
        self._files_short = False
        self._sensor_id = sensor_id
        self._on_closed = on_closed
        self._classes: dict[int, str] = {}  # serial -> retention class of open recordings
        self._pending_keys: list[tuple[str, str, bytes]] = []  # opened, not yet committed
        self._pending_rows: list[RecordingRow] = []
        self._pending_audit: list[dict[str, Value]] = []
        self._pending_closes: list[tuple[OpenRecording, RecordingEnded, str]] = []
        self._failed_ended: list[OpenRecording] = []  # their files close after the appends
        self._appender: Appender[OpenRecording] = Appender()
        self._group = GroupSync(archive.recordings_dir)
        self._spares = SparePool(archive.root / "spare", target=spare_files)
        self._last_sync = time.monotonic()
        self._open: dict[int, OpenRecording] = {}
        self.stats = WriterStats()

    @property
    def open_count(self) -> int:
        return len(self._open)

    @property
    def catalog_stats(self) -> CatalogStats:
        return self._catalog.stats

    @property
    def spare_counts(self) -> tuple[int, int]:
        """New recordings' files taken from spares, and created on the caller's thread."""
        return self._spares.taken, self._spares.missed

    def handle(self, event: Event) -> None:
        if self._appender.failures:
            self._report_write_errors()
        if self._pending_keys and not isinstance(event, RecordingStarted):
            self._commit_opened()  # new recordings' keys are durable before any of their audio
        if isinstance(event, RecordingAudio):
            rec = self._open.get(event.serial)
            if rec is not None and not rec.failed:
                self._guard(rec, self._append, rec, rec.sealer.write(event.pcm))
        elif isinstance(event, RecordingStarted):
            self._start(event)
        elif isinstance(event, RecordingEnded):
            rec = self._open.pop(event.serial, None)
            retention_class = self._classes.pop(event.serial, "default")
            if rec is not None and not rec.failed:
                self._guard(rec, self._end, rec, event, retention_class)
            elif rec is not None:
                self._failed_ended.append(rec)
        elif isinstance(event, CallNotRecorded):
            self._not_recorded(event)
        elif isinstance(event, RecordingMarker):
            self._marker(event)

    def _guard(self, rec: OpenRecording, fn: object, *args: object) -> None:
        """A write error (disk full, I/O error) fails one recording, never the others."""
        try:
            fn(*args)  # type: ignore[operator]
        except OSError as exc:
            self._fail(rec, exc)

    def _report_write_errors(self) -> None:
        failures = self._appender.failures
        while failures:
            rec = failures.popleft()
            if not rec.failed and rec.write_error is not None:
                self._fail(rec, rec.write_error)

    def _fail(self, rec: OpenRecording, exc: OSError) -> None:
        rec.failed = True
        self.stats.failed += 1
        log.error("recording %s failed: %s", rec.recording_id, exc.strerror or exc)
        self._audit.append(
            "recording.failed",
            outcome="failure",
            recording_id=rec.recording_id,
            reason=exc.strerror or str(exc),
        )

    def _not_created(self, event: RecordingStarted, recording_id: str, exc: OSError) -> None:
        """The call's file could not be created (too many open files, no inode left, a
        folder not writable): this call is not recorded, and says why; the others go on."""
        self.stats.failed += 1
        reason = f"cannot create the recording's file: {exc.strerror or exc}"
        log.error("call %s not recorded: %s", recording_id, reason)
        self._audit.append(
            "recording.failed", outcome="failure", recording_id=recording_id, reason=reason
        )
        self._unrecorded(event, "failed", reason)

    def _unrecorded(self, event: RecordingStarted, outcome: str, reason: str) -> None:
        """The index entry of a call the writer could not record."""
        at, who = event.start_ns, (event.caller, event.callee)
        self._index_call(CallNotRecorded(event.call_id, *who, at, at, outcome, reason))

    def _index_call(self, event: CallNotRecorded) -> None:
        add = catalog.add_call(
            call_id=event.call_id,
            caller=event.caller,
            callee=event.callee,
            first_seen_ns=event.first_ns,
            last_seen_ns=event.last_ns,
            outcome=event.outcome,
            reason=event.reason,
            sensor_id=self._sensor_id,
        )
        self._catalog.add(add)

    def _files_refusal(self) -> str | None:
        """Refuse a new recording rather than run out of files: the index, key store and
        audit trail need theirs (`fdlimit.RESERVED`)."""
        held = len(self._open) + len(self._pending_closes) + len(self._failed_ended)
        if held < self._file_slots:
            self._files_short = False
            return None
        reason = (
            f"the limit on open files allows {self._file_slots:,} recordings at once "
            "(LimitNOFILE=, ulimit -n)"
        )
        if not self._files_short:  # once a shortage, not once a call
            self._files_short = True
            log.warning("new calls are not recorded: %s", reason)
        return reason

    def _start(self, event: RecordingStarted) -> None:
        refusal = self._files_refusal() or self._admission()
        if refusal is not None:
            self.stats.refused += 1
            log.debug("call not recorded: %s", refusal)  # the disk guard logs the transition
            self._audit.append("recording.refused", outcome="failure", reason=refusal)
            self._unrecorded(event, "refused", refusal)
            return
        recording_id = new_recording_id(event.start_ns)
        relative = self._archive.relative_path(recording_id)
        final = self._archive.root / relative
        partial = str(final) + PARTIAL_SUFFIX.removeprefix(".rec")
        file_key = os.urandom(32)
        wrapped = wrap_file_key(self._master, file_key, recording_id, os.urandom(12))
        header = RecordingHeader(
            recording_id=recording_id,
            created_ns=event.start_ns,
            content=event.content,
            sample_rate=event.sample_rate,
            channels=event.channels,
            channel_map=("caller", "callee") if event.channels == 2 else ("rtp",),
        )
        sealer = RecordingWriter(header, file_key, os.urandom(32))
        try:  # before the key, row and audit record, which a failure must not leave behind
            fd = self._spares.open(partial, final.parent)
            if fd is None:
                fd = _create(partial, final.parent)
            _hold(fd, partial)
        except OSError as exc:
            self._not_created(event, recording_id, exc)
            return
        # Key store and index rows of new recordings are committed together, one sync for
        # all (`commit`), before any audio is written: calls often start by the hundred.
        self._pending_keys.append((recording_id, self._master.kid, wrapped))
        rec = OpenRecording(recording_id, relative, partial, fd, sealer)
        # The header reaches the disk with the audio, at the next group sync (`_append`):
        # until then the recording holds nothing a crash could lose. A crash before `commit`
        # leaves a header without a key: recovery discards it (no audio was written).
        self._append(rec, sealer.begin())
        self._open[event.serial] = rec
        self._classes[event.serial] = event.retention_class
        self.stats.opened += 1
        self._pending_rows.append(
            RecordingRow(
                id=recording_id,
                call_id=event.call_id,
                caller=event.caller,
                callee=event.callee,
                start_ns=event.start_ns,
                end_ns=event.start_ns,
                codecs=[],
                sample_rate=event.sample_rate,
                channels=event.channels,
                complete=False,
                state="open",
                content=event.content,
                path=relative,
                sha256="",
                size=0,
                kid=self._master.kid,
                created_ns=time.time_ns(),
                purpose=event.purpose,
                legal_basis=event.legal_basis,
                retention_class=event.retention_class,
                sensor_id=self._sensor_id,
            )
        )
        self._pending_audit.append(
            dict(
                recording_id=recording_id,
                kid=self._master.kid,
                header_sha256=hashlib.sha256(sealer.header.raw).hexdigest(),
                path=relative,
                content=event.content,
                purpose=event.purpose,
                retention_class=event.retention_class,
                rule=event.rule,
                notice=event.notice,
            )
        )

    def commit(self) -> None:
        """Make what the last events changed durable, a sync for many: the recordings that
        opened (`_commit_opened`) and those that ended (`_close_pending`)."""
        if self._appender.failures:  # audited at once, not at the recording's next audio
            self._report_write_errors()
        if self._pending_keys:
            self._commit_opened()
        if self._pending_closes or self._failed_ended:
            self._close_pending()
        self._catalog.write()
        self._appender.submit()
        self.stats.bytes_written = self._appender.bytes_written

    def _commit_opened(self) -> None:
        """The wrapped keys of the recordings opened since the last commit in one
        transaction (one sync), then their audit records; their index rows go with the
        commit's other index writes (`catalog.py`)."""
        keys, rows, opened = self._pending_keys, self._pending_rows, self._pending_audit
        self._pending_keys, self._pending_rows, self._pending_audit = [], [], []
        with _batch(self._keys):
            for recording_id, kid, wrapped in keys:
                self._keys.put(recording_id, kid, wrapped)
        for row in rows:
            self._catalog.add(catalog.add_recording(row))
        for n, fields in enumerate(opened):
            # One sync for the lot: the last record of the batch is synced.
            last = n == len(opened) - 1
            self._audit.append("recording.opened", sync=last, **fields)  # type: ignore[arg-type]

    def _marker(self, event: RecordingMarker) -> None:
        """Pauses, resumes and opt-outs: audited with the recording they belong to."""
        rec = self._open.get(event.serial)
        self._audit.append(
            f"recording.{event.kind}",
            recording_id=rec.recording_id if rec is not None else None,
            call_id=event.call_id,
            at=rfc3339_ns(event.at_ns),
            detail=event.detail,
        )

    def _append(self, rec: OpenRecording, data: bytes) -> None:
        if not data:
            return
        self._appender.add(rec, data)
        now = time.monotonic()
        if now - self._last_sync >= self._fsync_interval:
            self._last_sync = now
            self._group.sync_soon(r.fd for r in self._open.values() if not r.failed)

    def _end(self, rec: OpenRecording, event: RecordingEnded, retention_class: str) -> None:
        """Seal the final segment; the rest of the closing waits for `commit`, so that calls
        ending together share their syncs (at the end of calls, they often do)."""
        self._append(rec, rec.sealer.finish())
        self._pending_closes.append((rec, event, retention_class))

    def _close_pending(self) -> None:
        """Make the recordings that ended durable and final: one group sync for their data,
        renames, one sync per folder, then the audit records of their hashes (the last one
        synced); their index rows go with the commit's other index writes (`catalog.py`:
        while another process holds the index's lock they wait, on disk, and the
        recordings are final meanwhile)."""
        self._appender.wait()  # every byte of the closing recordings is in its file
        self._report_write_errors()
        closing = [item for item in self._pending_closes if not item[0].failed]
        failed = self._failed_ended + [rec for rec, _, _ in self._pending_closes if rec.failed]
        self._pending_closes, self._failed_ended = [], []
        for rec in failed:  # left `.partial` for recovery; no write can reach them now
            os.close(rec.fd)
        self._group.sync(rec.fd for rec, _, _ in closing)
        done: list[tuple[OpenRecording, RecordingEnded, str]] = []
        folders: set[Path] = set()
        for rec, event, retention_class in closing:
            try:
                final = self._archive.root / rec.relative
                try:
                    os.rename(rec.partial, final)  # renamed while its lock still holds
                finally:
                    with contextlib.suppress(OSError):  # synced above: nothing left to lose
                        os.close(rec.fd)
                folders.add(final.parent)
                done.append((rec, event, retention_class))
            except OSError as exc:
                self._fail(rec, exc)
        for folder in folders:
            fsync_dir(folder)
        for rec, event, retention_class in done:
            self._catalog.add(
                catalog.update_recording(
                    rec.recording_id,
                    end_ns=event.end_ns,
                    codecs=list(event.codecs),
                    complete=True,
                    state="closed",
                    sha256=rec.sha256.hexdigest(),
                    size=rec.size,
                    reason=event.reason,
                    expires_ns=self._expiry(retention_class, event.end_ns),
                )
            )
        for n, (rec, event, retention_class) in enumerate(done):
            self._closed(rec, event, retention_class, sync=n == len(done) - 1)

    def _closed(
        self, rec: OpenRecording, event: RecordingEnded, retention_class: str, *, sync: bool
    ) -> None:
        digest = rec.sha256.hexdigest()
        self.stats.closed += 1
        self._audit.append(
            "recording.closed",
            sync=sync,
            recording_id=rec.recording_id,
            path=rec.relative,
            sha256=digest,
            size=rec.size,
            reason=event.reason,
            duplicates=event.stats.get("duplicates", 0),
            late=event.stats.get("late", 0),
        )
        if self._on_closed is not None:
            self._on_closed(
                ClosedRecording(
                    recording_id=rec.recording_id,
                    path=self._archive.root / rec.relative,
                    relative=rec.relative,
                    sha256=digest,
                    size=rec.size,
                    start_ns=rec.sealer.header.header.created_ns,
                    end_ns=event.end_ns,
                    retention_class=retention_class,
                    expires_ns=self._expiry(retention_class, event.end_ns),
                )
            )

    def _not_recorded(self, event: CallNotRecorded) -> None:
        self.stats.not_recorded += 1
        self._index_call(event)
        self._audit.append(
            "call.not_recorded", sync=False, outcome="ok", result=event.outcome, reason=event.reason
        )

    def settle(self) -> None:
        """Commit, waiting for the index if it is locked (the end of a session). Still
        locked after `catalog.CLOSING_WAIT_S`: the writes stay in the backlog, for the next
        session on the archive to make."""
        self.commit()
        try:
            self._catalog.write(closing=True)
        except sqlite3.OperationalError as exc:
            if not catalog.waitable(exc):
                raise
            log.error(
                "index still unwritable at the end (%s): %d index writes wait in its backlog; "
                "the next start on this archive makes them",
                exc,
                self._catalog.stats.waiting,
            )

    def close(self) -> None:
        """Release the writer (recordings still open stay `.partial` for recovery)."""
        self.settle()
        self._catalog.close()
        self._appender.close()
        self._report_write_errors()
        self.stats.bytes_written = self._appender.bytes_written
        self._group.close()
        self._spares.close()


def _batch(store: object) -> AbstractContextManager[object]:
    """The store's transaction for several writes (SQLite); else each write stands alone."""
    batch = getattr(store, "batch", None)
    return batch() if batch is not None else nullcontext()
