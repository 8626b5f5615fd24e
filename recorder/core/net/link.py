"""Link layers: strip a captured frame down to the IP packet it carries.

Every function here takes the frame bytes and a window `[off, end)` into them and
returns `(kind, off, end)`: the kind of header found at the new offset (`IPV4`,
`IPV6`, or `ETHER` when another Ethernet frame follows, e.g. after an MPLS
pseudowire) and the new window. Nothing is copied. Anything else raises
`DecodeError("link", reason)`.
"""

from __future__ import annotations

from recorder.core.model import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
)
from recorder.errors import DecodeError

# Kinds of header a link-layer function can leave us at.
ETHER = 1
IPV4 = 4
IPV6 = 6

# Link types beyond the model's core set that mirror ports and capture cards produce.
LINKTYPE_PPP = 9
LINKTYPE_PPP_HDLC = 50
LINKTYPE_ERF = 197

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
# 802.1Q C-tag, 802.1ad S-tag, and the pre-standard QinQ TPIDs still seen on switches.
VLAN_TPIDS = frozenset({0x8100, 0x88A8, 0x9100, 0x9200})
ETH_MPLS = frozenset({0x8847, 0x8848})
ETH_PPPOE_SESSION = 0x8864

MAX_TAGS = 8  # VLAN tags or MPLS labels in one stack; more is treated as garbage
ARPHRD_NETLINK = 824

# BSD loopback "address family" values that mean IPv6 (they differ per OS).
_AF_INET6 = frozenset({10, 24, 28, 30})
# ERF record types (Endace "ERF types" list) carrying Ethernet or bare IP.
_ERF_ETH = frozenset({2, 11, 16, 20})
_ERF_IPV4 = 22
_ERF_IPV6 = 23

Window = tuple[int, int, int]


def _truncated() -> DecodeError:
    return DecodeError("link", "truncated")


def strip(linktype: int, data: bytes) -> Window:
    """Strip the capture's link header; return `(kind, off, end)` of what follows."""
    end = len(data)
    if linktype == LINKTYPE_ETHERNET:
        return ethernet(data, 0, end)
    if linktype == LINKTYPE_LINUX_SLL:
        return _sll(data, end)
    if linktype == LINKTYPE_LINUX_SLL2:
        return _sll2(data, end)
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
        return ip_by_version(data, 0, end, "link")
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        return _loopback(data, end, linktype == LINKTYPE_LOOP)
    if linktype in (LINKTYPE_PPP, LINKTYPE_PPP_HDLC):
        return ppp(data, 0, end, "link")
    if linktype == LINKTYPE_ERF:
        return _erf(data, end)
    raise DecodeError("link", "unsupported_linktype")


def ethernet(data: bytes, off: int, end: int) -> Window:
    """Ethernet II header (any FCS or padding is trimmed later by the IP length)."""
    if end - off < 14:
        raise _truncated()
    return ethertype((data[off + 12] << 8) | data[off + 13], data, off + 14, end)


def ethertype(etype: int, data: bytes, off: int, end: int) -> Window:
    """Dispatch on an EtherType, stripping VLAN tags (802.1Q/QinQ), MPLS and PPPoE."""
    for _ in range(MAX_TAGS):
        if etype == ETH_IPV4:
            return IPV4, off, end
        if etype == ETH_IPV6:
            return IPV6, off, end
        if etype not in VLAN_TPIDS:
            break
        if end - off < 4:
            raise _truncated()
        etype = (data[off + 2] << 8) | data[off + 3]
        off += 4
    else:
        raise DecodeError("link", "bad_header")
    if etype in ETH_MPLS:
        return _mpls(data, off, end)
    if etype == ETH_PPPOE_SESSION:
        return _pppoe(data, off, end)
    raise DecodeError("link", "not_ip")


def ip_by_version(data: bytes, off: int, end: int, layer: str) -> Window:
    """A bare IP packet: tell v4 from v6 by the version nibble."""
    if off >= end:
        raise DecodeError(layer, "truncated")
    version = data[off] >> 4
    if version == 4:
        return IPV4, off, end
    if version == 6:
        return IPV6, off, end
    raise DecodeError(layer, "not_ip")


def ppp(data: bytes, off: int, end: int, layer: str) -> Window:
    """A PPP frame (RFC 1661): optional FF 03 address/control, 1- or 2-byte protocol."""
    if end - off >= 2 and data[off] == 0xFF and data[off + 1] == 0x03:
        off += 2
    if off >= end:
        raise DecodeError(layer, "truncated")
    if data[off] & 1:  # protocol field compression (RFC 1661 §6.5): one odd byte
        proto = data[off]
        off += 1
    else:
        if end - off < 2:
            raise DecodeError(layer, "truncated")
        proto = (data[off] << 8) | data[off + 1]
        off += 2
    if proto == 0x21:
        return IPV4, off, end
    if proto == 0x57:
        return IPV6, off, end
    raise DecodeError(layer, "not_ip")


def _mpls(data: bytes, off: int, end: int) -> Window:
    """Skip the MPLS label stack (RFC 3032) up to the bottom-of-stack label."""
    for _ in range(MAX_TAGS):
        if end - off < 4:
            raise _truncated()
        bottom = data[off + 2] & 1
        off += 4
        if bottom:
            break
    else:
        raise DecodeError("link", "bad_header")
    if off >= end:
        raise _truncated()
    if data[off] >> 4 == 0:  # pseudowire control word (RFC 4385), then Ethernet
        return ETHER, off + 4, end
    return ip_by_version(data, off, end, "link")


def _pppoe(data: bytes, off: int, end: int) -> Window:
    """PPPoE session header (RFC 2516): ver/type 0x11, code 0, session, length."""
    if end - off < 6:
        raise _truncated()
    if data[off] != 0x11 or data[off + 1] != 0:
        raise DecodeError("link", "bad_header")
    length = (data[off + 4] << 8) | data[off + 5]
    off += 6
    if off + length > end:
        raise _truncated()
    return ppp(data, off, off + length, "link")


def _sll(data: bytes, end: int) -> Window:
    """Linux cooked capture v1: 16 bytes, the protocol (an EtherType) last."""
    if end < 16:
        raise _truncated()
    if ((data[2] << 8) | data[3]) == ARPHRD_NETLINK:
        raise DecodeError("link", "not_ip")
    return ethertype((data[14] << 8) | data[15], data, 16, end)


def _sll2(data: bytes, end: int) -> Window:
    """Linux cooked capture v2: 20 bytes, the protocol first."""
    if end < 20:
        raise _truncated()
    if ((data[8] << 8) | data[9]) == ARPHRD_NETLINK:
        raise DecodeError("link", "not_ip")
    return ethertype((data[0] << 8) | data[1], data, 20, end)


def _loopback(data: bytes, end: int, network_order: bool) -> Window:
    """BSD loopback: a 4-byte address family, host byte order for NULL, big-endian for LOOP."""
    if end < 4:
        raise _truncated()
    family = int.from_bytes(data[:4], "big" if network_order else "little")
    if not network_order and family > 0xFFFF:  # written by a big-endian host
        family = int.from_bytes(data[:4], "big")
    if family == 2:
        return IPV4, 4, end
    if family in _AF_INET6:
        return IPV6, 4, end
    raise DecodeError("link", "not_ip")


def _erf(data: bytes, end: int) -> Window:
    """Endace ERF record: 16-byte header, extension headers, 2 pad bytes before Ethernet."""
    if end < 16:
        raise _truncated()
    rtype = data[8]
    off = 16
    more = rtype & 0x80
    for _ in range(MAX_TAGS):
        if not more:
            break
        if end - off < 8:
            raise _truncated()
        more = data[off] & 0x80
        off += 8
    else:
        raise DecodeError("link", "bad_header")
    rtype &= 0x7F
    if rtype in _ERF_ETH:
        return ethernet(data, off + 2, end)
    if rtype in (_ERF_IPV4, _ERF_IPV6):
        return ip_by_version(data, off, end, "link")
    raise DecodeError("link", "not_ip")
