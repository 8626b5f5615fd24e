"""The incremental writer: header first, then sealed 16 KiB segments as audio arrives.

Pure: it returns the bytes to append and never touches a file. Full segments are
sealed as soon as they fill, so a crash loses at most the unsealed tail. The
final segment is whatever is left at `finish()`: always shorter than a full
segment and possibly empty (C2SP chunked-encryption), which is what lets a
reader detect a file truncated at a segment boundary without a last-chunk flag.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from recorder.container.format import (
    MAX_SEGMENTS,
    SEGMENT_BYTES,
    HeaderBlock,
    RecordingHeader,
    sealing_header,
)

_NEW, _OPEN, _DONE = range(3)


class RecordingWriter:
    """Seal one recording. Call `begin()` once, `write()` any number of times, `finish()` once;
    append every returned byte string to the file in order.

    `file_key` (32 bytes) and `salt` (32 bytes) must be fresh random values for every file
    (callers pass `os.urandom(32)`): a repeated file key with the same header repeats nonces.
    """

    __slots__ = (
        "_aead",
        "_base",
        "_block",
        "_buf",
        "_bytes_in",
        "_bytes_out",
        "_counter",
        "_state",
    )

    def __init__(self, header: RecordingHeader, file_key: bytes, salt: bytes) -> None:
        self._block, keys = sealing_header(header, file_key, salt)
        self._aead = AESGCM(keys.key)  # one cipher object per writer, reused for every segment
        self._base = int.from_bytes(keys.base_nonce, "big")
        self._buf = bytearray()
        self._counter = 0
        self._bytes_in = 0
        self._bytes_out = 0
        self._state = _NEW

    @property
    def header(self) -> HeaderBlock:
        """The stored header (`.raw` is what `begin()` returns; hash it for the audit trail)."""
        return self._block

    @property
    def bytes_in(self) -> int:
        """Plaintext bytes accepted so far (including the unsealed tail)."""
        return self._bytes_in

    @property
    def bytes_out(self) -> int:
        """File bytes returned so far: header plus sealed segments."""
        return self._bytes_out

    @property
    def segments_sealed(self) -> int:
        """Segments returned so far, the final one included once `finish()` ran."""
        return self._counter

    @property
    def pending(self) -> int:
        """Plaintext bytes buffered and not yet sealed: what a crash now would lose."""
        return len(self._buf)

    @property
    def finished(self) -> bool:
        """True once `finish()` has returned the final segment."""
        return self._state == _DONE

    def begin(self) -> bytes:
        """The header bytes; write (and fsync) them before any audio."""
        self._expect(_NEW, "begin")
        self._state = _OPEN
        raw = self._block.raw
        self._bytes_out += len(raw)
        return raw

    def write(self, data: bytes | bytearray | memoryview) -> bytes:
        """Accept plaintext; return the full segments it completed (often b"")."""
        self._expect(_OPEN, "write")
        view = memoryview(data).cast("B")
        buf = self._buf
        # Full segments may use counters up to 2^32 - 2, so the final one still fits.
        if self._counter + (len(buf) + len(view)) // SEGMENT_BYTES >= MAX_SEGMENTS:
            raise OverflowError("a recording holds at most 2^32 segments")
        self._bytes_in += len(view)
        if len(buf) + len(view) < SEGMENT_BYTES:
            buf += view
            return b""
        out: list[bytes] = []
        start = 0
        if buf:
            start = SEGMENT_BYTES - len(buf)
            buf += view[:start]
            out.append(self._seal(buf))
            buf.clear()
        # Seal whole segments straight from the caller's buffer: no copies, no growth.
        end = len(view) - (len(view) - start) % SEGMENT_BYTES
        for pos in range(start, end, SEGMENT_BYTES):
            out.append(self._seal(view[pos : pos + SEGMENT_BYTES]))
        buf += view[end:]
        return b"".join(out)

    def finish(self) -> bytes:
        """The final segment: the buffered tail (shorter than a segment, possibly empty)."""
        self._expect(_OPEN, "finish")
        sealed = self._seal(self._buf)
        self._buf = bytearray()
        self._state = _DONE
        return sealed

    def _seal(self, plaintext: bytes | bytearray | memoryview) -> bytes:
        if self._counter >= MAX_SEGMENTS:  # unreachable: write() keeps one counter spare
            raise OverflowError("a recording holds at most 2^32 segments")
        nonce = (self._base ^ self._counter).to_bytes(12, "big")
        sealed = self._aead.encrypt(nonce, plaintext, None)
        self._counter += 1
        self._bytes_out += len(sealed)
        return sealed

    def _expect(self, state: int, call: str) -> None:
        if self._state != state:
            raise RuntimeError(f"RecordingWriter.{call}() called out of order")


def seal_recording(header: RecordingHeader, file_key: bytes, salt: bytes, data: bytes) -> bytes:
    """A whole recording in one call (tests, vectors, small exports)."""
    writer = RecordingWriter(header, file_key, salt)
    return writer.begin() + writer.write(data) + writer.finish()
