"""Every kind of damage is detected in strict mode and cut cleanly in salvage mode."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recorder.container.format import SEALED_SEGMENT_BYTES, SEGMENT_BYTES
from recorder.container.reader import (
    BAD_SEGMENT,
    NO_FINAL_SEGMENT,
    TORN_TAIL,
    DecryptStream,
    decrypt_recording,
    salvage_recording,
    verified_prefix_length,
)
from recorder.container.segments import seal_recording
from recorder.errors import IntegrityError

from .container_vectors import (
    FILE_KEY,
    FILE_KEY_2,
    HEADER,
    HEADER_2,
    SALT,
    SALT_2,
    flip,
    header_len,
    plaintext,
)

S = SEGMENT_BYTES
T = SEALED_SEGMENT_BYTES
DATA = plaintext(2 * S + 100)  # segments 0 and 1 full, segment 2 final with 100 bytes
FILE = seal_recording(HEADER, FILE_KEY, SALT, DATA)
H = header_len(FILE)
META_END = 16 + len(HEADER.to_json())


def strict_error(data: bytes, key: bytes = FILE_KEY) -> str:
    with pytest.raises(IntegrityError) as info:
        decrypt_recording(io.BytesIO(data), key)
    return str(info.value)


def test_every_header_bit_flip_is_detected() -> None:
    short = seal_recording(HEADER, FILE_KEY, SALT, b"abc")
    for pos in range(header_len(short)):
        for bit in range(8):
            error = strict_error(flip(short, pos, bit))
            if pos < 12:
                assert error == "header malformed: bad magic, not a recorder/v1 file"
            elif pos < 16:  # the metadata length: framing breaks one way or another
                assert error.startswith(("header malformed: ", "header MAC failed"))
            elif pos < META_END + 32 + 32:  # metadata, salt, MAC: checked before parsing
                assert error == "header MAC failed: wrong file key or tampered header"
            else:
                assert error == "key commitment failed: header and payload keys disagree"


@pytest.mark.parametrize("segment", [0, 1, 2])
@pytest.mark.parametrize("offset", [0, 1, 50, -17, -16, -1])
def test_segment_bit_flip_is_detected_and_salvage_stops_before_it(
    segment: int, offset: int
) -> None:
    start = H + segment * T
    end = min(start + T, len(FILE))
    damaged = flip(FILE, (end if offset < 0 else start) + offset, 3)
    final = segment == 2
    suffix = ": torn tail or tampered final segment" if final else ""
    assert strict_error(damaged) == f"segment {segment} failed authentication{suffix}"
    got = salvage_recording(io.BytesIO(damaged), FILE_KEY)
    assert got.plaintext == DATA[: segment * S]
    assert (got.complete, got.segments_verified) == (False, segment)
    assert got.status.stop == (TORN_TAIL if final else BAD_SEGMENT)
    assert (
        got.status.verified_bytes == start == verified_prefix_length(io.BytesIO(damaged), FILE_KEY)
    )


@pytest.mark.parametrize("k", [0, 1, 2])
def test_truncation_at_each_segment_boundary(k: int) -> None:
    cut = FILE[: H + k * T]
    where = f"segment {k - 1}" if k else "header"
    assert strict_error(cut) == f"truncated after {where}: no final segment"
    got = salvage_recording(io.BytesIO(cut), FILE_KEY)
    assert got.plaintext == DATA[: k * S]
    assert (got.complete, got.segments_verified, got.status.stop) == (False, k, NO_FINAL_SEGMENT)
    assert got.status.verified_bytes == len(cut)


TORN = [(k, into) for k in (0, 1, 2) for into in (1, 15, 16, 17, 100, S, S + 15)]


# Segment 2 is the final one, 116 bytes long: it can only be torn within those.
@pytest.mark.parametrize(("k", "into"), [(k, i) for k, i in TORN if k < 2 or i < 116])
def test_torn_tail_inside_a_segment(k: int, into: int) -> None:
    cut = FILE[: H + k * T + into]
    assert strict_error(cut) == (
        f"segment {k} failed authentication: torn tail or tampered final segment"
    )
    got = salvage_recording(io.BytesIO(cut), FILE_KEY)
    assert got.plaintext == DATA[: k * S]
    assert (got.complete, got.segments_verified, got.status.stop) == (False, k, TORN_TAIL)
    # Crash recovery cuts the file here: what is left is a clean "no final segment" file.
    length = verified_prefix_length(io.BytesIO(cut), FILE_KEY)
    assert length == H + k * T
    assert salvage_recording(io.BytesIO(cut[:length]), FILE_KEY).status.stop == NO_FINAL_SEGMENT


def segments(data: bytes) -> list[bytes]:
    return [data[p : p + T] for p in range(H, len(data), T)]


def test_swapped_segments_are_detected() -> None:
    s0, s1, s2 = segments(FILE)
    assert strict_error(FILE[:H] + s1 + s0 + s2) == "segment 0 failed authentication"
    got = salvage_recording(io.BytesIO(FILE[:H] + s0 + s2 + s1), FILE_KEY)
    assert (got.segments_verified, got.plaintext, got.status.stop) == (1, DATA[:S], BAD_SEGMENT)


def test_dropped_and_repeated_segments_are_detected() -> None:
    s0, s1, s2 = segments(FILE)
    torn = ": torn tail or tampered final segment"
    assert strict_error(FILE[:H] + s0 + s2) == f"segment 1 failed authentication{torn}"
    assert strict_error(FILE[:H] + s1 + s2) == "segment 0 failed authentication"
    assert strict_error(FILE[:H] + s0 + s0 + s1 + s2) == "segment 1 failed authentication"


@pytest.mark.parametrize("extra", [1, 15, 16, 17, S, S + 100, 3 * S])
def test_trailing_data_is_detected(extra: int) -> None:
    assert strict_error(FILE + b"\x00" * extra) == "trailing data after final segment 2"
    got = salvage_recording(io.BytesIO(FILE + b"\x00" * extra), FILE_KEY)
    # Salvage does not search for a final segment inside junk: it keeps what verified.
    assert (got.complete, got.segments_verified, got.plaintext) == (False, 2, DATA[: 2 * S])


def test_headers_swapped_between_two_files_are_detected() -> None:
    other_data = plaintext(S + 7)
    other = seal_recording(HEADER_2, FILE_KEY_2, SALT_2, other_data)
    hb = header_len(other)
    # This file's header (and its key) on the other payload: the payload fails.
    assert strict_error(FILE[:H] + other[hb:]) == "segment 0 failed authentication"
    # The other header on this payload: with either key, nothing verifies.
    mac_error = "header MAC failed: wrong file key or tampered header"
    assert strict_error(other[:hb] + FILE[H:], FILE_KEY) == mac_error
    assert strict_error(other[:hb] + FILE[H:], FILE_KEY_2) == "segment 0 failed authentication"
    # A header with the same key but other metadata (a relabelled recording).
    relabelled = seal_recording(HEADER_2, FILE_KEY, SALT, b"")
    assert strict_error(relabelled[: header_len(relabelled)] + FILE[H:]) == (
        "segment 0 failed authentication"
    )


def test_wrong_file_key_fails_at_the_header_mac() -> None:
    assert strict_error(FILE, FILE_KEY_2) == "header MAC failed: wrong file key or tampered header"
    with pytest.raises(IntegrityError, match="header MAC failed"):
        salvage_recording(io.BytesIO(FILE), FILE_KEY_2)


def test_strict_stream_yields_only_verified_segments_before_failing() -> None:
    damaged = flip(FILE, H + T + 10)
    stream = DecryptStream(io.BytesIO(damaged), FILE_KEY)
    got: list[bytes] = []
    with pytest.raises(IntegrityError, match="segment 1 failed authentication"):
        got.extend(stream)
    assert got == [DATA[:S]]
    assert stream.status.segments_verified == 1


SMALL = seal_recording(HEADER, FILE_KEY, SALT, plaintext(S + 40))


@settings(max_examples=60, deadline=None)
@given(pos=st.integers(0, len(SMALL) - 1), bit=st.integers(0, 7))
def test_any_bit_flip_is_detected(pos: int, bit: int) -> None:
    damaged = flip(SMALL, pos, bit)
    with pytest.raises(IntegrityError):
        decrypt_recording(io.BytesIO(damaged), FILE_KEY)
    if pos < header_len(SMALL):  # header damage: nothing can be salvaged
        with pytest.raises(IntegrityError):
            salvage_recording(io.BytesIO(damaged), FILE_KEY)
        return
    got = salvage_recording(io.BytesIO(damaged), FILE_KEY)
    assert not got.complete
    assert got.plaintext == plaintext(S + 40)[: len(got.plaintext)]
    assert len(got.plaintext) == S * got.segments_verified
    assert got.segments_verified == (0 if pos < header_len(SMALL) + T else 1)
