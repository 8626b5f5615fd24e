"""After a crash (SIGKILL, power loss): recordings left as `.rec.partial` are cut to their
last whole authenticated segment, renamed to `.rec`, indexed as incomplete, and an audit
record says what was kept and what was cut. No final segment is forged: its absence is
the lasting evidence that the recording was interrupted."""

from __future__ import annotations

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
