"""Value types shared by the core stages and the shells that feed them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

# Link-layer types (the pcap LINKTYPE_* numbers) the core understands.
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

PROTO_TCP = 6
PROTO_UDP = 17


class Frame(NamedTuple):
    """One captured frame: the capture time in integer nanoseconds, its link type and bytes.
    (A NamedTuple: one is made per packet, and it is twice as cheap as a frozen dataclass.)"""

    ts_ns: int
    linktype: int
    data: bytes


@dataclass(slots=True)
class Datagram:
    """A UDP datagram or TCP segment lifted out of every encapsulation and reassembled from
    IP fragments. Addresses are packed (4 bytes for IPv4, 16 for IPv6)."""

    proto: int
    src_ip: bytes
    dst_ip: bytes
    sport: int
    dport: int
    payload: bytes
    tcp_seq: int = 0
    tcp_flags: int = 0


# An RTP/SIP endpoint: packed IP address and port.
Endpoint = tuple[bytes, int]
