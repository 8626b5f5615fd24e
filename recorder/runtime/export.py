"""`recorder export`: one recording decrypted to a standard 16-bit PCM WAV, audited.

Only verified segments are ever written out; a recording that fails authentication
produces no WAV (the partial output is removed) and an audit record of the failure."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from recorder.container.masterkey import MasterKey
from recorder.container.reader import DecryptStream
from recorder.container.wav import wav_header
from recorder.errors import ArchiveError, IntegrityError
from recorder.runtime.archive import Archive
from recorder.runtime.audit import AuditTrail
from recorder.runtime.index import Index
from recorder.runtime.keystore import KeyStore
from recorder.runtime.opening import HashingReader, file_key_for


def export_wav(
    archive: Archive,
    masters: Mapping[str, MasterKey],
    recording_id: str,
    output: Path,
    actor: str,
) -> str:
    archive.require()
    index = Index(archive.index_path)
    keys = KeyStore(archive.keystore_path)
    audit = AuditTrail(archive.audit_path, actor)
    try:
        row = index.get(recording_id)
        if row is None:
            raise ArchiveError(f"no recording {recording_id!r} in the index")
        try:
            seconds = _write_wav(
                archive, masters, keys, row.path, row.sha256, row.id, row.complete, output
            )
        except (IntegrityError, OSError) as exc:
            audit.append(
                "export",
                outcome="failure",
                recording_id=recording_id,
                output=str(output),
                reason=str(exc),
            )
            raise IntegrityError(f"recording {recording_id}: {exc}") from None
        audit.append(
            "export",
            recording_id=recording_id,
            output=str(output),
            format="wav",
            duration_ms=int(seconds * 1000),
        )
        return f"{seconds:.2f} s"
    finally:
        audit.close()
        keys.close()
        index.close()


def _write_wav(
    archive: Archive,
    masters: Mapping[str, MasterKey],
    keys: KeyStore,
    relative: str,
    sha256: str,
    recording_id: str,
    complete: bool,
    output: Path,
) -> float:
    file_key = file_key_for(keys, masters, recording_id)
    tmp = output.with_name(f".{output.name}.tmp")
    try:
        with archive.resolve(relative).open("rb") as raw, tmp.open("wb") as out:
            reader = HashingReader(raw)
            stream = DecryptStream(reader, file_key, strict=complete, expected_id=recording_id)
            header = stream.header
            out.write(wav_header(header.sample_rate, header.channels, 0))
            data_bytes = 0
            for chunk in stream:
                out.write(chunk)
                data_bytes += len(chunk)
            reader.drain()
            if not complete and stream.status.verified_bytes != reader.size:
                raise IntegrityError("bytes after the last authenticated segment")
            if sha256 and reader.sha256.hexdigest() != sha256:
                raise IntegrityError("file hash differs from the index (altered or replaced)")
            out.seek(0)
            out.write(wav_header(header.sample_rate, header.channels, data_bytes))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return data_bytes / (2 * header.channels * header.sample_rate)
