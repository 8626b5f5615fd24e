"""RTP fixed header (RFC 3550 §5.1) parsing, kept to one function for the hot path."""

from __future__ import annotations

from struct import Struct

from recorder.errors import DecodeError

_HEADER = Struct("!BBHII")


def parse_rtp(data: bytes) -> tuple[int, int, int, int, bytes]:
    """Return (payload_type, sequence, timestamp, ssrc, payload) or raise DecodeError("rtp", …).

    CSRCs, the header extension and padding are skipped so the payload is exactly
    the codec's bytes. The marker bit is not needed to place audio and is ignored.
    """
    if len(data) < 12:
        raise DecodeError("rtp", "truncated")
    b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
    if b0 >> 6 != 2:
        raise DecodeError("rtp", "bad_version")
    start = 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10:  # header extension: 16-bit profile, 16-bit length in words
        if len(data) < start + 4:
            raise DecodeError("rtp", "truncated")
        start += 4 + 4 * int.from_bytes(data[start + 2 : start + 4], "big")
    end = len(data)
    if b0 & 0x20:  # padding: the last byte counts the padding bytes, itself included
        pad = data[-1]
        if pad == 0:
            raise DecodeError("rtp", "bad_padding")
        end -= pad
    if start > end:
        raise DecodeError("rtp", "truncated")
    return b1 & 0x7F, seq, ts, ssrc, data[start:end]


def is_rtcp(data: bytes) -> bool:
    """RTCP packet types 200-204 sit where RTP has marker+PT (RFC 5761 §4)."""
    return len(data) >= 8 and data[0] >> 6 == 2 and 192 <= data[1] <= 223
