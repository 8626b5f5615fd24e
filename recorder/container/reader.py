"""Reading recordings: parse a header, then decrypt strictly or salvage a verified prefix.

Streaming (age's DecryptReader): one sealed segment in memory at a time, and no
byte of a segment is returned before its tag verifies. The final segment is the
one shorter than a full sealed segment (C2SP chunked-encryption), so:

- a file that ends on a segment boundary has no final segment: truncated;
- a shorter tail that fails authentication is a torn write or tampering;
- bytes after a valid final segment are trailing data.

`strict` raises IntegrityError naming what failed; salvage stops at the first
failure and reports where (`DecryptStream.status`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from recorder.container.format import (
    COMMITMENT_BYTES,
    FILE_KEY_BYTES,
    MAC_BYTES,
    MAGIC,
    MAX_METADATA_BYTES,
    SALT_BYTES,
    SEALED_SEGMENT_BYTES,
    TAG_BYTES,
    HeaderBlock,
    RecordingHeader,
    payload_keys,
    segment_nonce,
    verify_commitment,
    verify_header_mac,
)
from recorder.errors import IntegrityError

# Why a decryption stopped (ReadStatus.stop): fixed words, fit for counter labels.
COMPLETE = "complete"  # a valid final segment ends the file
NO_FINAL_SEGMENT = "no final segment"  # the file ends on a segment boundary
TORN_TAIL = "torn tail"  # a short tail that does not authenticate: torn write or tampering
BAD_SEGMENT = "bad segment"  # a full-size segment failed authentication
TRAILING_DATA = "trailing data"  # strict only: junk after a valid final segment


class Readable(Protocol):
    """What the reader needs from a file: `read(n)` returning at most n bytes, b"" at EOF."""

    def read(self, n: int = -1, /) -> bytes: ...


def _read_exact(f: Readable, n: int) -> bytes:
    """Up to n bytes; fewer only at end of file (raw files may return short reads)."""
    data = f.read(n)
    if len(data) == n or not data:
        return data
    parts = [data]
    got = len(data)
    while got < n:
        more = f.read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _read_frame(f: Readable) -> tuple[bytes, bytes]:
    """(metadata, magic..commitment) from the start of `f`, leaving `f` at segment 0."""
    lead = _read_exact(f, len(MAGIC) + 4)
    if len(lead) < len(MAGIC) or lead[: len(MAGIC)] != MAGIC:
        raise IntegrityError("header malformed: bad magic, not a recorder/v1 file")
    if len(lead) < len(MAGIC) + 4:
        raise IntegrityError("header malformed: truncated")
    meta_len = int.from_bytes(lead[len(MAGIC) :], "big")
    if not 0 < meta_len <= MAX_METADATA_BYTES:
        raise IntegrityError("header malformed: bad metadata length")
    want = meta_len + SALT_BYTES + MAC_BYTES + COMMITMENT_BYTES
    rest = _read_exact(f, want)
    if len(rest) < want:
        raise IntegrityError("header malformed: truncated")
    return rest[:meta_len], lead + rest


def _split(raw: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """signed (magic..salt), salt, MAC, commitment."""
    mac_at = len(raw) - MAC_BYTES - COMMITMENT_BYTES
    return (
        raw[:mac_at],
        raw[mac_at - SALT_BYTES : mac_at],
        raw[mac_at : mac_at + MAC_BYTES],
        raw[mac_at + MAC_BYTES :],
    )


def _block(header: RecordingHeader, raw: bytes) -> HeaderBlock:
    return HeaderBlock(header, *_split(raw))


def read_header_block(f: Readable) -> HeaderBlock:
    """Read the header from the start of `f`, unauthenticated, leaving `f` at segment 0."""
    meta, raw = _read_frame(f)
    return _block(RecordingHeader.from_json(meta), raw)


def read_header(f: Readable) -> RecordingHeader:
    """The metadata a file claims, NOT authenticated: use it to find the key, then decrypt."""
    return read_header_block(f).header


@dataclass(frozen=True)
class ReadStatus:
    """Where a decryption stopped. `verified_bytes` is the length of the file prefix that
    authenticated (header + verified segments): cut a torn file there on recovery."""

    complete: bool
    segments_verified: int
    verified_bytes: int
    plaintext_bytes: int
    stop: str  # COMPLETE, NO_FINAL_SEGMENT, TORN_TAIL, BAD_SEGMENT (or TRAILING_DATA, strict)


class DecryptStream:
    """Authenticated streaming decryption of one recording.

    The constructor reads the header and checks the MAC and the key commitment (raising
    IntegrityError in both modes: nothing is verifiable without them). Iterating yields the
    plaintext of each verified segment. In strict mode a failure raises at the point it is
    found (chunks already yielded were verified); in salvage mode iteration just ends.
    `status` is set once iteration has ended.
    """

    def __init__(
        self,
        f: Readable,
        file_key: bytes,
        *,
        strict: bool = True,
        expected_id: str | None = None,
    ) -> None:
        if len(file_key) != FILE_KEY_BYTES:
            raise ValueError(f"a file key is {FILE_KEY_BYTES} bytes")
        self._f = f
        self._strict = strict
        # Authenticate before parsing: the MAC, then the commitment, then the metadata.
        meta, raw = _read_frame(f)
        signed, salt, mac, commitment = _split(raw)
        verify_header_mac(file_key, signed, mac)
        keys = payload_keys(file_key, salt, signed, mac)
        verify_commitment(keys, commitment)
        block = _block(RecordingHeader.from_json(meta), raw)
        if expected_id is not None and block.header.recording_id != expected_id:
            raise IntegrityError("header names another recording than the one expected")
        self.block = block
        self.header = block.header
        self._aead = AESGCM(keys.key)
        self._base_nonce = keys.base_nonce
        self._status: ReadStatus | None = None
        self._started = False

    @property
    def status(self) -> ReadStatus:
        """Where decryption stopped; only valid after iteration ended."""
        if self._status is None:
            raise RuntimeError("DecryptStream.status read before iteration ended")
        return self._status

    def __iter__(self) -> Iterator[bytes]:
        if self._started:
            raise RuntimeError("a DecryptStream can be iterated once")
        self._started = True
        return self._segments()

    def _segments(self) -> Iterator[bytes]:
        counter = 0
        file_bytes = self.block.length
        plain_bytes = 0
        while True:
            chunk = _read_exact(self._f, SEALED_SEGMENT_BYTES)
            if not chunk:
                self._stop(counter, file_bytes, plain_bytes, NO_FINAL_SEGMENT)
                return
            plaintext = self._open(counter, chunk) if len(chunk) >= TAG_BYTES else None
            if plaintext is None:
                self._stop(counter, file_bytes, plain_bytes, self._failure(counter, chunk))
                return
            counter += 1
            file_bytes += len(chunk)
            plain_bytes += len(plaintext)
            yield plaintext
            if len(chunk) < SEALED_SEGMENT_BYTES:  # the final segment: short by construction
                self._stop(counter, file_bytes, plain_bytes, COMPLETE)
                return

    def _open(self, counter: int, chunk: bytes) -> bytes | None:
        try:
            return self._aead.decrypt(segment_nonce(self._base_nonce, counter), chunk, None)
        except InvalidTag:
            return None

    def _failure(self, counter: int, chunk: bytes) -> str:
        """Classify a chunk that did not authenticate. Strict mode first checks whether it is a
        valid final segment followed by junk: a diagnosis on the failure path only (up to 16 Ki
        trial opens, ~50 ms), skipped in salvage so crash recovery stays fast."""
        if self._strict:
            for end in range(TAG_BYTES, len(chunk)):
                if self._open(counter, chunk[:end]) is not None:
                    return TRAILING_DATA
        return BAD_SEGMENT if len(chunk) == SEALED_SEGMENT_BYTES else TORN_TAIL

    def _stop(self, segments: int, file_bytes: int, plain_bytes: int, stop: str) -> None:
        self._status = ReadStatus(stop == COMPLETE, segments, file_bytes, plain_bytes, stop)
        if self._strict and stop != COMPLETE:
            raise IntegrityError(failure_message(stop, segments))


def failure_message(stop: str, segments_verified: int) -> str:
    """The strict-mode error for a stop reason; segments are numbered from 0."""
    k = segments_verified
    if stop == NO_FINAL_SEGMENT:
        where = f"segment {k - 1}" if k else "header"
        return f"truncated after {where}: no final segment"
    if stop == TORN_TAIL:
        return f"segment {k} failed authentication: torn tail or tampered final segment"
    if stop == TRAILING_DATA:
        return f"trailing data after final segment {k}"
    return f"segment {k} failed authentication"


@dataclass(frozen=True)
class SalvageResult:
    """The verified prefix of a recording and where it stopped."""

    header: RecordingHeader
    status: ReadStatus
    plaintext: bytes

    @property
    def complete(self) -> bool:
        """True when a valid final segment was found."""
        return self.status.complete

    @property
    def segments_verified(self) -> int:
        """How many segments authenticated (the final one included when complete)."""
        return self.status.segments_verified


def decrypt_recording(
    f: Readable, file_key: bytes, *, expected_id: str | None = None
) -> tuple[RecordingHeader, bytes]:
    """Strict: the whole plaintext, or IntegrityError naming what failed."""
    stream = DecryptStream(f, file_key, strict=True, expected_id=expected_id)
    return stream.header, b"".join(stream)


def salvage_recording(
    f: Readable, file_key: bytes, *, expected_id: str | None = None
) -> SalvageResult:
    """Salvage: every verified segment's plaintext and where verification stopped.
    Header failures still raise IntegrityError."""
    stream = DecryptStream(f, file_key, strict=False, expected_id=expected_id)
    plaintext = b"".join(stream)
    return SalvageResult(stream.header, stream.status, plaintext)


def scan_recording(f: Readable, file_key: bytes, *, expected_id: str | None = None) -> ReadStatus:
    """Salvage without keeping the plaintext: crash recovery walks a `.partial` file with this
    and truncates it to `verified_bytes`."""
    stream = DecryptStream(f, file_key, strict=False, expected_id=expected_id)
    for _ in stream:
        pass
    return stream.status


def verified_prefix_length(f: Readable, file_key: bytes) -> int:
    """Length in bytes of the authenticated prefix of a (possibly torn) recording file."""
    return scan_recording(f, file_key).verified_bytes
