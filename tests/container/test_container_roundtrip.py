"""Writer/reader round trips: the boundary matrix, any write pattern, writer bookkeeping."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recorder.container.format import (
    MAX_SEGMENTS,
    SEALED_SEGMENT_BYTES,
    SEGMENT_BYTES,
    RecordingHeader,
    plaintext_length,
    segment_nonce,
)
from recorder.container.reader import (
    COMPLETE,
    DecryptStream,
    decrypt_recording,
    salvage_recording,
    scan_recording,
    verified_prefix_length,
)
from recorder.container.segments import RecordingWriter, seal_recording
from recorder.errors import IntegrityError

from .container_vectors import FILE_KEY, HEADER, SALT, header_len, plaintext

S = SEGMENT_BYTES
LENGTHS = [0, 1, S - 1, S, S + 1, 2 * S, 2 * S + 1]
STEPS = [1, 160, 320, S - 1, S, S + 1]


def write_in_steps(data: bytes, step: int) -> tuple[bytes, RecordingWriter]:
    writer = RecordingWriter(HEADER, FILE_KEY, SALT)
    parts = [writer.begin()]
    for pos in range(0, len(data), step):
        out = writer.write(data[pos : pos + step])
        assert len(out) % SEALED_SEGMENT_BYTES == 0  # write() only ever emits full segments
        parts.append(out)
    parts.append(writer.finish())
    return b"".join(parts), writer


def expected_size(n: int) -> int:
    # n // S full segments plus a final one (possibly empty), each with a 16-byte tag.
    return len(HEADER.to_json()) + 112 + n + 16 * (n // S + 1)


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("length", LENGTHS)
def test_boundary_matrix(length: int, step: int) -> None:
    data = plaintext(length)
    sealed, writer = write_in_steps(data, step)
    # The file depends only on key, salt, header and data: never on how it was written.
    assert sealed == seal_recording(HEADER, FILE_KEY, SALT, data)
    assert len(sealed) == expected_size(length) == writer.bytes_out
    assert writer.bytes_in == length
    assert writer.segments_sealed == length // S + 1
    assert writer.finished
    assert plaintext_length(len(sealed) - writer.header.length) == length
    header, out = decrypt_recording(io.BytesIO(sealed), FILE_KEY)
    assert header == HEADER
    assert out == data
    status = scan_recording(io.BytesIO(sealed), FILE_KEY)
    assert status.complete
    assert status.stop == COMPLETE
    assert status.segments_verified == length // S + 1
    assert (
        status.verified_bytes == len(sealed) == verified_prefix_length(io.BytesIO(sealed), FILE_KEY)
    )
    assert status.plaintext_bytes == length


@settings(max_examples=60, deadline=None)
@given(
    length=st.integers(0, 3 * S + 10),
    steps=st.lists(st.integers(1, 2 * S + 3), min_size=1, max_size=8),
)
def test_any_write_pattern_round_trips(length: int, steps: list[int]) -> None:
    data = plaintext(length)
    writer = RecordingWriter(HEADER, FILE_KEY, SALT)
    parts = [writer.begin()]
    pos = i = 0
    while pos < length:
        step = steps[i % len(steps)]
        parts.append(writer.write(data[pos : pos + step]))
        pos += step
        i += 1
        assert writer.pending == min(pos, length) % S
    parts.append(writer.finish())
    sealed = b"".join(parts)
    assert sealed == seal_recording(HEADER, FILE_KEY, SALT, data)
    assert decrypt_recording(io.BytesIO(sealed), FILE_KEY) == (HEADER, data)


def test_writer_bookkeeping_during_a_call() -> None:
    writer = RecordingWriter(HEADER, FILE_KEY, SALT)
    head = writer.begin()
    assert head == writer.header.raw
    assert len(head) == writer.header.length == writer.bytes_out
    assert writer.write(b"\x01" * (S - 1)) == b""
    assert (writer.pending, writer.segments_sealed) == (S - 1, 0)
    out = writer.write(bytearray(b"\x02\x03"))  # bytearray accepted
    assert len(out) == SEALED_SEGMENT_BYTES
    assert (writer.pending, writer.segments_sealed, writer.bytes_in) == (1, 1, S + 1)
    out = writer.write(memoryview(bytes(3 * S)))  # memoryview accepted
    assert len(out) == 3 * SEALED_SEGMENT_BYTES
    assert (writer.pending, writer.segments_sealed) == (1, 4)
    final = writer.finish()
    assert len(final) == 1 + 16
    assert writer.bytes_out == len(head) + 4 * SEALED_SEGMENT_BYTES + 17


def test_writer_refuses_calls_out_of_order() -> None:
    writer = RecordingWriter(HEADER, FILE_KEY, SALT)
    with pytest.raises(RuntimeError, match=r"write\(\) called out of order"):
        writer.write(b"x")
    writer.begin()
    with pytest.raises(RuntimeError, match=r"begin\(\) called out of order"):
        writer.begin()
    writer.finish()
    with pytest.raises(RuntimeError, match=r"finish\(\) called out of order"):
        writer.finish()
    with pytest.raises(RuntimeError, match=r"write\(\) called out of order"):
        writer.write(b"x")


def test_writer_rejects_bad_key_and_salt_sizes() -> None:
    with pytest.raises(ValueError, match="file key is 32 bytes"):
        RecordingWriter(HEADER, FILE_KEY[:16], SALT)
    with pytest.raises(ValueError, match="salt is 32 bytes"):
        RecordingWriter(HEADER, FILE_KEY, SALT[:31])


def test_segment_counter_is_limited_to_2_to_the_32() -> None:
    writer = RecordingWriter(HEADER, FILE_KEY, SALT)
    writer.begin()
    writer._counter = MAX_SEGMENTS - 1  # as if 2^32 - 1 segments had been written
    with pytest.raises(OverflowError, match="at most 2"):
        writer.write(bytes(S))  # a full segment would leave no counter for the final one
    assert (writer.bytes_in, writer.pending) == (0, 0)  # the refused write changed nothing
    assert writer.write(bytes(S - 1)) == b""
    assert len(writer.finish()) == S - 1 + 16  # the final one fits: its counter is 2^32 - 1


def test_segment_nonce_is_base_xor_big_endian_counter() -> None:
    base = bytes.fromhex("00112233445566778899aabb")
    assert segment_nonce(base, 0) == base
    assert segment_nonce(base, 1) == bytes.fromhex("00112233445566778899aaba")
    assert segment_nonce(base, 0x01020304) == bytes.fromhex("0011223344556677899ba9bf")
    assert segment_nonce(base, MAX_SEGMENTS - 1) == bytes.fromhex("001122334455667777665544")
    with pytest.raises(IntegrityError, match="too many segments"):
        segment_nonce(base, MAX_SEGMENTS)


class TrickleReader:
    """A file object that returns at most 7 bytes per read, like a slow pipe."""

    def __init__(self, data: bytes) -> None:
        self._f = io.BytesIO(data)

    def read(self, n: int = -1, /) -> bytes:
        return self._f.read(min(n, 7) if n >= 0 else 7)


def test_reader_copes_with_short_reads() -> None:
    data = plaintext(2 * S + 5)
    sealed = seal_recording(HEADER, FILE_KEY, SALT, data)
    assert decrypt_recording(TrickleReader(sealed), FILE_KEY) == (HEADER, data)
    got = salvage_recording(TrickleReader(sealed[:-1]), FILE_KEY)
    assert (got.complete, got.segments_verified, got.plaintext) == (False, 2, data[: 2 * S])


def test_stream_yields_one_verified_segment_at_a_time() -> None:
    data = plaintext(2 * S + 5)
    stream = DecryptStream(io.BytesIO(seal_recording(HEADER, FILE_KEY, SALT, data)), FILE_KEY)
    assert stream.header == HEADER
    assert [len(c) for c in stream] == [S, S, 5]
    assert stream.status.segments_verified == 3
    with pytest.raises(RuntimeError, match="iterated once"):
        iter(stream)


def test_status_before_iteration_is_an_error() -> None:
    stream = DecryptStream(io.BytesIO(seal_recording(HEADER, FILE_KEY, SALT, b"")), FILE_KEY)
    with pytest.raises(RuntimeError, match="before iteration ended"):
        _ = stream.status


def test_expected_id_must_match_the_header() -> None:
    sealed = seal_recording(HEADER, FILE_KEY, SALT, b"abc")
    assert decrypt_recording(io.BytesIO(sealed), FILE_KEY, expected_id="vec-0001")[1] == b"abc"
    with pytest.raises(IntegrityError, match="header names another recording"):
        decrypt_recording(io.BytesIO(sealed), FILE_KEY, expected_id="vec-0002")


def test_header_length_helper_matches_the_writer() -> None:
    sealed = seal_recording(HEADER, FILE_KEY, SALT, b"")
    assert header_len(sealed) == RecordingWriter(HEADER, FILE_KEY, SALT).header.length


def test_rtp_content_is_opaque_payload() -> None:
    header = RecordingHeader("r-rtp", 5, "rtp", 8000, 1, ("mixed",), extra={"pt": 18})
    data = bytes(range(256)) * 100
    sealed = seal_recording(header, FILE_KEY, SALT, data)
    assert decrypt_recording(io.BytesIO(sealed), FILE_KEY) == (header, data)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (16, 0),
        (17, 1),
        (16399, 16383),
        (16400, None),  # a full segment and no final one
        (16415, None),  # a full segment and a 15-byte tail: shorter than a tag
        (16416, 16384),
        (2 * 16400 + 20, 2 * 16384 + 4),
        (0, None),
        (-1, None),
    ],
)
def test_plaintext_length_from_payload_size(payload: int, expected: int | None) -> None:
    assert plaintext_length(payload) == expected
