"""Tunnels seen on mirror ports: GRE (with ERSPAN II/III and PPTP), VXLAN, GTP-U.

Like `link`, each function works on a window `[off, end)` of the frame bytes and
returns `(kind, off, end)` of the inner packet (`link.ETHER`, `link.IPV4` or
`link.IPV6`). The UDP-carried tunnels (VXLAN, GTP-U) return `None` when the
header does not look like theirs, so a datagram that merely uses the port is
passed on as plain UDP. Errors raise `DecodeError("tunnel", reason)`.
"""

from __future__ import annotations

from recorder.core.net import link
from recorder.errors import DecodeError

GRE_TEB = 0x6558  # transparent Ethernet bridging (RFC 1701 protocol types)
GRE_ERSPAN_2 = 0x88BE  # ERSPAN type I (no sequence number) and type II
GRE_ERSPAN_3 = 0x22EB
GRE_PPP = 0x880B  # PPTP (RFC 2637)

_GTP_GPDU = 0xFF
_MAX_GTP_EXTENSIONS = 8


def _truncated() -> DecodeError:
    return DecodeError("tunnel", "truncated")


def gre(data: bytes, off: int, end: int) -> link.Window:
    """GRE (RFC 2784, keys and sequence numbers RFC 2890; version 1 is PPTP, RFC 2637)."""
    if end - off < 4:
        raise _truncated()
    flags = data[off]
    version = data[off + 1] & 0x07
    proto = (data[off + 2] << 8) | data[off + 3]
    has_seq = flags & 0x10
    p = off + 4
    if version == 0:
        if flags & 0x40:  # RFC 1701 source routing: obsolete, never on a mirror session
            raise DecodeError("tunnel", "unsupported")
        p += 4 * (((flags >> 7) & 1) + ((flags >> 5) & 1) + ((flags >> 4) & 1))
    elif version == 1 and proto == GRE_PPP:
        p += 4  # key: payload length and call id, always present
        p += 4 * (((flags >> 4) & 1) + (data[off + 1] >> 7))  # sequence, acknowledgment
    else:
        raise DecodeError("tunnel", "unsupported")
    if p > end:
        raise _truncated()
    if proto == GRE_TEB:
        return link.ETHER, p, end
    if proto == GRE_ERSPAN_2:
        return _erspan2(data, p, end) if has_seq else (link.ETHER, p, end)
    if proto == GRE_ERSPAN_3:
        return _erspan3(data, p, end)
    if proto == GRE_PPP:
        return link.ppp(data, p, end, "tunnel")
    return link.ethertype(proto, data, p, end)


def _erspan2(data: bytes, off: int, end: int) -> link.Window:
    """ERSPAN type II: an 8-byte header (version 1), then the mirrored Ethernet frame."""
    if end - off < 8:
        raise _truncated()
    if data[off] >> 4 != 1:
        raise DecodeError("tunnel", "bad_header")
    return link.ETHER, off + 8, end


def _erspan3(data: bytes, off: int, end: int) -> link.Window:
    """ERSPAN type III: 12 bytes (version 2), an optional 8-byte platform subheader (O bit).

    The frame type FT (bits 81-85) says Ethernet (0) or a bare IP packet (2).
    """
    if end - off < 12:
        raise _truncated()
    if data[off] >> 4 != 2:
        raise DecodeError("tunnel", "bad_header")
    frame_type = (data[off + 10] >> 2) & 0x1F
    p = off + 12 + 8 * (data[off + 11] & 1)
    if p > end:
        raise _truncated()
    if frame_type == 0:
        return link.ETHER, p, end
    if frame_type == 2:
        return link.ip_by_version(data, p, end, "tunnel")
    raise DecodeError("tunnel", "unsupported")


def vxlan(data: bytes, off: int, end: int) -> link.Window | None:
    """VXLAN (RFC 7348): 8 bytes whose flags carry the I bit, then an Ethernet frame."""
    if end - off < 8 or not data[off] & 0x08:
        return None
    return link.ETHER, off + 8, end


def gtpu(data: bytes, off: int, end: int) -> link.Window | None:
    """GTP-U v1 G-PDU (3GPP TS 29.281): the user's IP packet after the GTP header.

    Other GTP messages (echo, error indication) are not tunnels: `None`.
    """
    if end - off < 8 or data[off] >> 4 != 0x3 or data[off + 1] != _GTP_GPDU:
        return None
    flags = data[off]
    length = (data[off + 2] << 8) | data[off + 3]
    if off + 8 + length > end:
        raise _truncated()
    end = off + 8 + length
    p = off + 8
    if flags & 0x07:  # E, S or PN: sequence, N-PDU number and next extension type follow
        if end - p < 4:
            raise _truncated()
        next_ext = data[p + 3]
        p += 4
        for _ in range(_MAX_GTP_EXTENSIONS):
            if not next_ext:
                break
            if p >= end:
                raise _truncated()
            ext_len = 4 * data[p]
            if ext_len == 0:
                raise DecodeError("tunnel", "bad_header")
            if p + ext_len > end:
                raise _truncated()
            next_ext = data[p + ext_len - 1]
            p += ext_len
        else:
            raise DecodeError("tunnel", "bad_header")
    return link.ip_by_version(data, p, end, "tunnel")
