"""`recorder export`: one recording decrypted, audited. Audio becomes a standard 16-bit PCM
WAV; raw RTP of media the recorder cannot decode (content "rtp") becomes a pcap that
Wireshark or a codec tool can decode later.

Only verified segments are ever written out; a recording that fails authentication
produces no output (the partial file is removed) and an audit record of the failure.
With the shared backends (recorder/scale/) the index and keys are PostgreSQL's and a
recording no longer on this node is read from the bucket."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import BinaryIO

from recorder.container.masterkey import MasterKey
from recorder.container.reader import DecryptStream
from recorder.container.wav import wav_header
from recorder.core.media_path import RAW_RECORD
from recorder.errors import ArchiveError, IntegrityError
from recorder.runtime.archive import Archive
from recorder.runtime.audit import AuditTrail, Value
from recorder.runtime.index import Index, RecordingRow
from recorder.runtime.keystore import KeyStore
from recorder.runtime.opening import HashingReader, file_key_for
from recorder.scale.backends import backends_for, open_recording, ship_trail
from recorder.scale.store import RecordingStore


def export_wav(
    archive: Archive,
    masters: Mapping[str, MasterKey],
    recording_id: str,
    output: Path,
    actor: str,
) -> str:
    """Export one recording to `output` (a WAV, or a pcap for raw RTP); audited."""
    backends = backends_for(archive)
    backends.require()
    index = backends.open_index()
    keys = backends.open_keys()
    audit = AuditTrail(archive.audit_path, actor)
    try:
        row = index.get(recording_id)
        if row is None:
            raise ArchiveError(f"no recording {recording_id!r} in the index")
        kind = "pcap" if row.content == "rtp" else "wav"
        if kind == "pcap" and output.suffix.lower() not in (".pcap", ".cap"):
            codecs = ",".join(row.codecs) or "unknown"
            raise ArchiveError(
                f"recording {recording_id} holds raw RTP ({codecs}) that the recorder cannot "
                f"decode to audio; export it as a capture: -o {output.with_suffix('.pcap')}"
            )
        try:
            info = _export(archive, masters, keys, row, output, kind, index, backends.store())
        except (IntegrityError, OSError) as exc:
            audit.append(
                "export",
                outcome="failure",
                recording_id=recording_id,
                output=str(output),
                reason=str(exc),
            )
            raise IntegrityError(f"recording {recording_id}: {exc}") from None
        details: dict[str, Value] = dict(info)
        audit.append(
            "export", recording_id=recording_id, output=str(output), format=kind, details=details
        )
    finally:
        audit.close()
        keys.close()
        index.close()
    ship_trail(archive)
    return ", ".join(f"{k} {v}" for k, v in info.items())


def _export(
    archive: Archive,
    masters: Mapping[str, MasterKey],
    keys: KeyStore,
    row: RecordingRow,
    output: Path,
    kind: str,
    index: Index,
    store: RecordingStore | None,
) -> dict[str, int]:
    file_key = file_key_for(keys, masters, row.id)
    tmp = output.with_name(f".{output.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # plaintext: private
        with open_recording(archive, row, index, store) as raw, os.fdopen(fd, "wb") as out:
            reader = HashingReader(raw)
            stream = DecryptStream(reader, file_key, strict=row.complete, expected_id=row.id)
            info = _write_wav(out, stream) if kind == "wav" else _write_pcap(out, stream)
            reader.drain()
            if not row.complete and stream.status.verified_bytes != reader.size:
                raise IntegrityError("bytes after the last authenticated segment")
            if row.sha256 and reader.sha256.hexdigest() != row.sha256:
                raise IntegrityError("file hash differs from the index (altered or replaced)")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return info


def _write_wav(out: BinaryIO, stream: DecryptStream) -> dict[str, int]:
    header = stream.header
    out.write(wav_header(header.sample_rate, header.channels, 0))
    data_bytes = 0
    for chunk in stream:
        out.write(chunk)
        data_bytes += len(chunk)
    out.seek(0)  # the sizes are known only now
    out.write(wav_header(header.sample_rate, header.channels, data_bytes))
    frames = data_bytes // (2 * header.channels)
    return {"duration_ms": frames * 1000 // header.sample_rate}


# Raw RTP goes out as Ethernet/IPv4/UDP frames between two documentation addresses
# (RFC 5737): caller 192.0.2.1:40000, callee 192.0.2.2:40002, so tools see one RTP stream
# per direction. The original addresses are in the index, not in the recording.
_ENDPOINTS = ((bytes([192, 0, 2, 1]), 40000), (bytes([192, 0, 2, 2]), 40002))
_PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, 1)  # ns, Ethernet


def _write_pcap(out: BinaryIO, stream: Iterable[bytes]) -> dict[str, int]:
    out.write(_PCAP_HEADER)
    packets = 0
    pending = b""
    for chunk in stream:
        pending += chunk
        offset = 0
        while len(pending) - offset >= RAW_RECORD.size:
            when, side, length = RAW_RECORD.unpack_from(pending, offset)
            end = offset + RAW_RECORD.size + length
            if end > len(pending):
                break
            out.write(_frame(when, side, pending[offset + RAW_RECORD.size : end]))
            packets += 1
            offset = end
        pending = pending[offset:]
    if pending:
        raise IntegrityError("raw RTP records end mid-record")
    return {"packets": packets}


def _frame(when: int, side: int, rtp: bytes) -> bytes:
    (src, sport), (dst, dport) = _ENDPOINTS[side & 1], _ENDPOINTS[1 - (side & 1)]
    udp = struct.pack("!HHHH", sport, dport, 8 + len(rtp), 0) + rtp
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, src, dst)
    frame = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + ip + udp
    sec, ns = divmod(when, 1_000_000_000)
    return struct.pack("<IIII", sec, ns, len(frame), len(frame)) + frame
