"""Byte-exact pcap and pcapng writers for the source tests (timestamps as integers)."""

from __future__ import annotations

import struct

PCAP_US = 0xA1B2C3D4
PCAP_NS = 0xA1B23C4D
PCAP_MODIFIED = 0xA1B2CD34


def pcap(
    records: list[tuple[int, int, bytes]], linktype: int = 1, magic: int = PCAP_US, order: str = "<"
) -> bytes:
    """(seconds, fraction, data) records; the fraction is us or ns per the magic."""
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)]
    for sec, frac, data in records:
        out.append(struct.pack(order + "IIII", sec, frac, len(data), len(data)))
        if magic == PCAP_MODIFIED:
            out.append(struct.pack(order + "IHBB", 1, 0x0800, 0, 0))
        out.append(data)
    return b"".join(out)


def block(order: str, btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    length = 12 + len(body)
    return struct.pack(order + "II", btype, length) + body + struct.pack(order + "I", length)


def option(order: str, code: int, value: bytes) -> bytes:
    return struct.pack(order + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def shb(order: str = "<") -> bytes:
    body = struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1)
    return block(order, 0x0A0D0D0A, body)


def idb(
    order: str, linktype: int, tsresol: int | None = None, tsoffset: int | None = None
) -> bytes:
    body = struct.pack(order + "HHI", linktype, 0, 65535)
    opts = option(order, 2, b"eth0")
    if tsresol is not None:
        opts += option(order, 9, bytes([tsresol]))
    if tsoffset is not None:
        opts += option(order, 14, struct.pack(order + "q", tsoffset))
    return block(order, 1, body + opts + option(order, 0, b""))


def epb(order: str, iface: int, units: int, data: bytes, comment: bytes = b"") -> bytes:
    body = struct.pack(
        order + "IIIII", iface, units >> 32, units & 0xFFFFFFFF, len(data), len(data)
    )
    body += data + b"\0" * (-len(data) % 4)
    if comment:
        body += option(order, 1, comment) + option(order, 0, b"")
    return block(order, 6, body)


def obsolete_pb(order: str, iface: int, units: int, data: bytes) -> bytes:
    body = struct.pack(
        order + "HHIIII", iface, 0, units >> 32, units & 0xFFFFFFFF, len(data), len(data)
    )
    return block(order, 2, body + data)


def spb(order: str, data: bytes) -> bytes:
    return block(order, 3, struct.pack(order + "I", len(data)) + data)
