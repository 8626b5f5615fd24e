"""After a crash (SIGKILL, power loss): recordings left as `.rec.partial` are cut to their
last whole authenticated segment, renamed to `.rec`, indexed as incomplete, and an audit
record says what was kept and what was cut. No final segment is forged: its absence is
the lasting evidence that the recording was interrupted.

Several recorders may write to one archive (the service, and a replay or a second
service), so a partial file may be another recorder's open recording. The writer locks each
recording's file (`flock`) from its creation until its rename, and recovery takes only
files whose lock it can take: the kernel drops a killed process's locks, so its leftovers
are recovered by the next recorder that starts, beside others or not. A file without a key
(a recording being created, or a crash's from before its first audio, which holds none) is
taken only by a recorder that starts alone: each recorder holds `recordings/` shared for its
whole life (`RecordingsHold`), and one that could hold it exclusively at its start is
alone."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from recorder.container.masterkey import MasterKey
from recorder.container.reader import (
    BAD_SEGMENT,
    read_header,
    read_header_block,
    scan_recording,
)
from recorder.errors import IntegrityError
from recorder.runtime.archive import PARTIAL_SUFFIX, RECORDING_SUFFIX, Archive
from recorder.runtime.audit import AuditTrail
from recorder.runtime.files import fsync_dir
from recorder.runtime.index import Index, RecordingRow
from recorder.runtime.keystore import KeyStore
from recorder.runtime.opening import file_key_for

log = logging.getLogger(__name__)


class Stores(Protocol):
    index: Index
    keys: KeyStore
    audit: AuditTrail


class RecordingsHold:
    """`recordings/` held for a recording session: shared for the session's life; first
    exclusive, if that can be had at once: then `alone` is true, no other recorder is
    creating files, and the session recovers before `share()`. A session that is not alone
    waits here while another one recovers (its new files, without keys yet, would look like
    leftovers)."""

    def __init__(self, recordings_dir: Path) -> None:
        self._fd = os.open(recordings_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self.alone = _try_flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if not self.alone:
                fcntl.flock(self._fd, fcntl.LOCK_SH)
        except BaseException:
            os.close(self._fd)
            raise

    def share(self) -> None:
        """Recovery done: let other sessions start beside this one. (Not atomic: another
        session may recover in between, before this one has made any file.)"""
        fcntl.flock(self._fd, fcntl.LOCK_SH)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # (releases the hold)
            self._fd = -1


def _try_flock(fd: int, operation: int) -> bool:
    try:
        fcntl.flock(fd, operation)
    except BlockingIOError:
        return False
    return True


@dataclass
class Recovery:
    recovered: int = 0
    left: int = 0  # partial files open in another recorder, or without a key and not alone


def recover_partials(
    archive: Archive, masters: Mapping[str, MasterKey], stores: Stores, *, alone: bool = True
) -> Recovery:
    """Recover every partial recording no recorder has open. `alone`: no other recorder
    runs (`RecordingsHold`), so a partial file without a key is a crash's too."""
    result = Recovery()
    for partial in archive.partial_files():
        recording_id = partial.name.removesuffix(PARTIAL_SUFFIX)
        keyed = stores.keys.get(recording_id) is not None
        if not keyed and not alone:
            result.left += 1  # perhaps being created: a recorder that starts alone takes it
            continue
        try:
            fd = _claim(partial)
            if fd is None:
                result.left += 1  # open in a running recorder
                continue
            try:
                if not keyed and _discard_empty(stores, partial, recording_id):
                    continue
                _recover_one(archive, masters, stores, partial, recording_id)
                result.recovered += 1
            finally:
                os.close(fd)
        except (IntegrityError, ValueError, OSError) as exc:
            log.error("could not recover %s: %s", partial.name, exc)
            stores.audit.append(
                "recording.recovery_failed",
                outcome="failure",
                recording_id=recording_id,
                reason=str(exc),
            )
    return result


def _claim(partial: Path) -> int | None:
    """A descriptor holding `partial`'s lock; None if a running recorder has it locked, or
    it was renamed meanwhile (a recording that just closed)."""
    try:
        fd = os.open(partial, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    try:
        if _try_flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB):
            with contextlib.suppress(FileNotFoundError):
                now, held = os.stat(partial, follow_symlinks=False), os.fstat(fd)
                if (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                    return fd
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    return None


def _discard_empty(stores: Stores, partial: Path, recording_id: str) -> bool:
    """A crash between a recording's creation and the commit of its key leaves a file with
    no key and no audio (the writer commits keys before it writes audio): nothing to keep."""
    try:
        with partial.open("rb") as f:
            header_only = read_header_block(f).length >= partial.stat().st_size
    except (IntegrityError, OSError):
        header_only = True  # not even a whole header: certainly no audio
    if not header_only:
        return False  # audio without a key: never expected; recovery reports it as failed
    partial.unlink()
    stores.audit.append(
        "recording.discarded",
        recording_id=recording_id,
        reason="crash before its first audio: no key and no audio to keep",
    )
    return True


def _recover_one(
    archive: Archive,
    masters: Mapping[str, MasterKey],
    stores: Stores,
    partial: Path,
    recording_id: str,
) -> None:
    file_key = file_key_for(stores.keys, masters, recording_id)
    with partial.open("rb") as f:
        status = scan_recording(f, file_key, expected_id=recording_id)
    if status.stop == BAD_SEGMENT:  # damage inside the file, not a crash: keep it all
        raise IntegrityError(
            f"segment {status.segments_verified} fails authentication inside the file "
            "(damage, not a crash): left untouched for investigation"
        )
    with partial.open("rb") as f:
        header = read_header(f)
    original = partial.stat().st_size
    with partial.open("r+b") as f:
        f.truncate(status.verified_bytes)  # a torn tail cannot authenticate: cut it
        f.flush()
        os.fsync(f.fileno())
    final = partial.with_name(recording_id + RECORDING_SUFFIX)
    os.rename(partial, final)
    fsync_dir(final.parent)
    digest = hashlib.sha256(final.read_bytes()).hexdigest()
    frame_bytes = 2 * header.channels
    end_ns = header.created_ns + (
        status.plaintext_bytes // frame_bytes * 1_000_000_000 // header.sample_rate
    )
    relative = archive.relative_path(recording_id)
    fields = dict(
        end_ns=end_ns,
        complete=status.complete,  # its final segment is there: the crash came before the rename
        state="recovered",
        sha256=digest,
        size=status.verified_bytes,
        reason="recovered after crash",
    )
    if stores.index.get(recording_id) is None:
        stores.index.add_recording(
            RecordingRow(
                id=recording_id,
                call_id="",
                caller="",
                callee="",
                start_ns=header.created_ns,
                codecs=[],
                sample_rate=header.sample_rate,
                channels=header.channels,
                path=relative,
                kid="",
                **fields,  # type: ignore[arg-type]
            )
        )
    else:
        stores.index.update_recording(recording_id, **fields)
    stores.audit.append(
        "recording.recovered",
        recording_id=recording_id,
        path=relative,
        sha256=digest,
        size=status.verified_bytes,
        segments=status.segments_verified,
        bytes_cut=original - status.verified_bytes,
    )
    log.warning(
        "recovered %s: %d segments kept, %d bytes cut",
        recording_id,
        status.segments_verified,
        original - status.verified_bytes,
    )
