"""The header: canonical metadata, validation, unauthenticated parsing of hostile bytes."""

from __future__ import annotations

import io
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recorder.container.format import MAGIC, RecordingHeader
from recorder.container.reader import read_header, read_header_block
from recorder.container.segments import seal_recording
from recorder.errors import IntegrityError

from .container_vectors import FILE_KEY, HEADER, SALT, header_len

CANONICAL = (
    b'{"channel_map":["caller","callee"],"channels":2,"content":"pcm_s16le",'
    b'"created_ns":1700000000123456789,"extra":{"codec_in":"PCMU","part":0},'
    b'"recording_id":"vec-0001","sample_rate":8000,"segment_bytes":16384}'
)
GOOD: dict[str, Any] = {
    "recording_id": "r1",
    "created_ns": 1,
    "content": "pcm_s16le",
    "sample_rate": 8000,
    "channels": 1,
    "channel_map": ("mixed",),
}


def test_canonical_metadata_bytes() -> None:
    assert HEADER.to_json() == CANONICAL
    assert RecordingHeader.from_json(CANONICAL) == HEADER


def test_unicode_survives_the_round_trip() -> None:
    header = RecordingHeader(**{**GOOD, "recording_id": "appel-é-☎", "extra": {"ü": "ß"}})
    assert "é".encode() in header.to_json()
    assert RecordingHeader.from_json(header.to_json()) == header


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"recording_id": ""}, "recording_id must be 1-256 printable"),
        ({"recording_id": "a\nb"}, "recording_id must be 1-256 printable"),
        ({"recording_id": "x" * 257}, "recording_id must be 1-256 printable"),
        ({"created_ns": -1}, "created_ns must be an integer"),
        ({"created_ns": 2**63}, "created_ns must be an integer"),
        ({"created_ns": True}, "created_ns must be an integer"),
        ({"content": ""}, "content must be 1-64"),
        ({"sample_rate": 0}, "sample_rate must be an integer"),
        ({"sample_rate": 8000.0}, "sample_rate must be an integer"),
        ({"channels": 0}, "channels must be an integer"),
        ({"channels": 2}, "channel_map must name every channel"),
        ({"channel_map": "mixed"}, "channel_map must be a list"),
        ({"channel_map": ("",)}, "channel name must be"),
        ({"segment_bytes": 65536}, "segment_bytes must be 16384"),
        ({"extra": {"k": 1.5}}, "extra value must be an integer"),
        ({"extra": {"k": False}}, "extra value must be an integer"),
        ({"extra": {"k": "v" * 1025}}, "at most 1024 characters"),
        ({"extra": {"": "v"}}, "extra key must be"),
        ({"extra": {str(i): i for i in range(65)}}, "at most 64 entries"),
        ({"extra": {"k": "\ud800"}}, "valid Unicode"),
    ],
)
def test_header_validation(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RecordingHeader(**{**GOOD, **change}).to_json()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff", "metadata is not JSON"),
        (b"[1]", "wrong metadata fields"),
        (b"[" * 50000 + b"]" * 50000, "metadata is not JSON"),
        (CANONICAL.replace(b'"channels":2', b'"channels":true'), "channels must be an integer"),
        (CANONICAL.replace(b":8000", b":8000.0"), "sample_rate must be an integer"),
        (CANONICAL.replace(b":8000", b":" + b"9" * 5000), "metadata is not JSON"),
        (CANONICAL.replace(b'"channels":2', b'"channels": 2'), "metadata is not canonical"),
        (CANONICAL[:-1] + b',"phone":"+15551234"}', "wrong metadata fields"),
        (CANONICAL[:-1] + b',"sample_rate":8000}', "metadata is not canonical"),  # duplicate key
        (CANONICAL.replace(b'"vec-0001"', b'"vec\\u002d0001"'), "metadata is not canonical"),
    ],
)
def test_metadata_parse_errors(data: bytes, reason: str) -> None:
    with pytest.raises(IntegrityError, match=f"^header malformed: .*{reason}"):
        RecordingHeader.from_json(data)


def test_read_header_is_unauthenticated_and_stops_at_segment_zero() -> None:
    sealed = seal_recording(HEADER, FILE_KEY, SALT, b"payload")
    f = io.BytesIO(sealed)
    block = read_header_block(f)
    assert block.header == HEADER
    assert f.tell() == block.length == header_len(sealed)
    assert block.raw == sealed[: block.length]
    assert block.salt == SALT
    # Parsing needs no key, so a forged MAC still parses: read_header only says what a file claims.
    forged = sealed[: block.length - 64] + bytes(64) + sealed[block.length :]
    assert read_header(io.BytesIO(forged)) == HEADER


def header_with_length(n: int) -> bytes:
    return MAGIC + n.to_bytes(4, "big")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "bad magic"),
        (b"RIFF....WAVEfmt ", "bad magic"),
        (MAGIC[:-1], "bad magic"),
        (MAGIC, "truncated"),
        (MAGIC + b"\x00\x00", "truncated"),
        (header_with_length(0), "bad metadata length"),
        (header_with_length(65537), "bad metadata length"),
        (header_with_length(len(CANONICAL)) + CANONICAL + bytes(95), "truncated"),
    ],
)
def test_malformed_framing(data: bytes, message: str) -> None:
    with pytest.raises(IntegrityError, match=f"^header malformed: {message}"):
        read_header(io.BytesIO(data))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_hostile_bytes_give_a_header_or_integrity_error(tail: bytes) -> None:
    for data in (tail, MAGIC + tail, header_with_length(len(CANONICAL)) + tail):
        outcome = parse_or_reason(data)
        assert isinstance(outcome, RecordingHeader) or outcome.startswith("header malformed: ")


def parse_or_reason(data: bytes) -> RecordingHeader | str:
    try:
        return read_header(io.BytesIO(data))
    except IntegrityError as exc:
        return str(exc)
