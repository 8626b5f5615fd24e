"""After a crash (SIGKILL, power loss): recordings left as `.rec.partial` are cut to their
last whole authenticated segment, renamed to `.rec`, indexed as incomplete, and an audit
record says what was kept and what was cut. No final segment is forged: its absence is
the lasting evidence that the recording was interrupted.

Several recorders may write to one archive (the service, and a replay or a second
service). A partial file is a crash's leftover only when no recorder is writing to the
archive: each one holds `recordings/` with a shared `flock` for its whole life
(`RecordingsHold`), and recovers only if it could hold it exclusively first, alone. The
kernel releases a killed process's hold, so its leftovers are recovered by the next
recorder that starts alone; one that starts beside another leaves them, and says so."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
from collections.abc import Mapping
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
    """`recordings/` held for a recording session: shared for the session's life, so that
    no other session's recovery takes its open recordings for a crash's leftovers; first
    exclusive, if that can be had at once: then `alone` is true, every partial file is a
    crash's, and the session recovers them before `share()`. A session that is not alone
    waits here while another one recovers (its new files would look like leftovers)."""

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


def recover_partials(archive: Archive, masters: Mapping[str, MasterKey], stores: Stores) -> int:
    """Recover every partial recording; returns how many were recovered."""
    recovered = 0
    for partial in archive.partial_files():
        recording_id = partial.name.removesuffix(PARTIAL_SUFFIX)
        if _discard_empty(stores, partial, recording_id):
            continue
        try:
            _recover_one(archive, masters, stores, partial, recording_id)
            recovered += 1
        except (IntegrityError, ValueError, OSError) as exc:
            log.error("could not recover %s: %s", partial.name, exc)
            stores.audit.append(
                "recording.recovery_failed",
                outcome="failure",
                recording_id=recording_id,
                reason=str(exc),
            )
    return recovered


def _discard_empty(stores: Stores, partial: Path, recording_id: str) -> bool:
    """A crash between a recording's creation and the commit of its key leaves a file with
    no key and no audio (the writer commits keys before it writes audio): nothing to keep."""
    if stores.keys.get(recording_id) is not None:
        return False
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
        complete=False,
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
