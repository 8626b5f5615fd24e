"""IPv4 and IPv6 headers: addresses, the transport protocol, the payload window.

`ipv4()` and `ipv6()` return a `Packet` tuple (a plain tuple: this is the hot path)
`(proto, src, dst, off, end, frag_offset, frag_more, frag_id)`, the payload being
`data[off:end]`; `frag_offset` is -1 for a packet that is not a fragment.
Errors raise `DecodeError("ip", reason)`.
"""

from __future__ import annotations

import struct

from recorder.errors import DecodeError

# IPv6 extension headers walked over (RFC 8200 §4; AH RFC 4302; mobility RFC 6275;
# HIP RFC 7401; shim6 RFC 5533). ESP (50) is left as the "transport": it is encrypted.
EXT_HOP_BY_HOP = 0
EXT_ROUTING = 43
EXT_FRAGMENT = 44
EXT_AH = 51
EXT_DEST_OPTS = 60
_EXT_GENERIC = frozenset({EXT_HOP_BY_HOP, EXT_ROUTING, EXT_DEST_OPTS, 135, 139, 140})
MAX_EXT_HEADERS = 16

_V4 = struct.Struct("!BxHHHxB2x4s4s").unpack_from
_V6_FRAG = struct.Struct("!BxHI").unpack_from


Packet = tuple[int, bytes, bytes, int, int, int, bool, int]


def ipv4(data: bytes, off: int, end: int) -> Packet:
    """IPv4 (RFC 791): IHL and total length checked, options skipped, padding trimmed."""
    if end - off < 20:
        raise DecodeError("ip", "truncated")
    vihl, total, ident, frag, proto, src, dst = _V4(data, off)
    ihl = (vihl & 0x0F) * 4
    if vihl >> 4 != 4 or ihl < 20:
        raise DecodeError("ip", "bad_header")
    if total == 0:
        total = end - off  # TSO on the capturing host leaves 0 here; trust the capture
    if total < ihl:
        raise DecodeError("ip", "bad_header")
    if off + total > end:
        raise DecodeError("ip", "truncated")
    if frag & 0x3FFF:
        offset, more = (frag & 0x1FFF) * 8, bool(frag & 0x2000)
        return proto, src, dst, off + ihl, off + total, offset, more, ident
    return proto, src, dst, off + ihl, off + total, -1, False, 0


def ipv6(data: bytes, off: int, end: int) -> Packet:
    """IPv6 (RFC 8200): fixed header, then extension headers up to the transport
    or the fragment header (whose offset, M flag and id are returned)."""
    if end - off < 40:
        raise DecodeError("ip", "truncated")
    if data[off] >> 4 != 6:
        raise DecodeError("ip", "bad_header")
    plen = (data[off + 4] << 8) | data[off + 5]
    nh = data[off + 6]
    src = data[off + 8 : off + 24]
    dst = data[off + 24 : off + 40]
    # Payload length 0: a jumbogram (RFC 2675) or TSO; trust the captured length.
    pend = off + 40 + plen if plen else end
    if pend > end:
        raise DecodeError("ip", "truncated")
    nh, p, frag = walk_extensions(nh, data, off + 40, pend)
    if frag is None:
        return nh, src, dst, p, pend, -1, False, 0
    return nh, src, dst, p, pend, frag[0], frag[1], frag[2]


def walk_extensions(
    nh: int, data: bytes, p: int, end: int
) -> tuple[int, int, tuple[int, bool, int] | None]:
    """Skip IPv6 extension headers; stop after a fragment header (returning its
    offset, M flag and id) or at the first header that is not an extension."""
    for _ in range(MAX_EXT_HEADERS):
        if nh in _EXT_GENERIC:
            if end - p < 8:
                raise DecodeError("ip", "truncated")
            nh, size = data[p], (data[p + 1] + 1) * 8
        elif nh == EXT_AH:
            if end - p < 8:
                raise DecodeError("ip", "truncated")
            nh, size = data[p], (data[p + 1] + 2) * 4
        elif nh == EXT_FRAGMENT:
            if end - p < 8:
                raise DecodeError("ip", "truncated")
            nh, offset_flags, ident = _V6_FRAG(data, p)
            offset, more = offset_flags & 0xFFF8, bool(offset_flags & 1)
            if offset == 0 and not more:  # atomic fragment (RFC 6946): a whole packet
                p += 8
                continue
            return nh, p + 8, (offset, more, ident)
        else:
            return nh, p, None
        if p + size > end:
            raise DecodeError("ip", "truncated")
        p += size
    raise DecodeError("ip", "ext_header_limit")
