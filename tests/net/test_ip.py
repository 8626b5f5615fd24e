"""IP and transport headers: IPv6 extension headers, TCP, and the refusal table."""

from __future__ import annotations

import struct

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.ipsec import AH
from scapy.layers.sctp import SCTP
from scapy.packet import Packet

from recorder.core.model import LINKTYPE_ETHERNET, LINKTYPE_RAW
from recorder.core.net import NetDecoder
from recorder.errors import DecodeError

from .frames import SIP, ether, tcp4, udp4, want_tcp, want_udp6

V6 = {"src": "2001:db8::1", "dst": "2001:db8::2"}


def decode(frame: bytes) -> object:
    return NetDecoder().decode(LINKTYPE_RAW, frame, 0)


def reason(frame: bytes) -> tuple[str, str]:
    with pytest.raises(DecodeError) as info:
        NetDecoder().decode(LINKTYPE_RAW, frame, 0)
    return info.value.layer, info.value.reason


@pytest.mark.parametrize(
    "extensions",
    [
        [IPv6ExtHdrHopByHop()],
        [IPv6ExtHdrHopByHop(), IPv6ExtHdrRouting(addresses=["2001:db8::9"])],
        [IPv6ExtHdrDestOpt(), IPv6ExtHdrRouting(), IPv6ExtHdrDestOpt()],
        [IPv6ExtHdrFragment(offset=0, m=0, id=5)],  # atomic fragment, RFC 6946
        [AH(nh=17, payloadlen=4, spi=1, icv=b"\0" * 12)],
    ],
    ids=["hop-by-hop", "hbh+routing", "dest+routing+dest", "atomic-fragment", "ah"],
)
def test_ipv6_extension_headers(extensions: list[Packet]) -> None:
    pkt = IPv6(**V6)
    for ext in extensions:
        pkt = pkt / ext
    pkt = pkt / UDP(sport=5060, dport=5060) / SIP
    assert decode(bytes(pkt)) == want_udp6()


def test_ipv6_extension_header_limit() -> None:
    pkt = IPv6(**V6)
    for _ in range(17):
        pkt = pkt / IPv6ExtHdrDestOpt()
    assert reason(bytes(pkt / UDP() / SIP)) == ("ip", "ext_header_limit")


def test_tcp_segment_with_options() -> None:
    pkt = IP(src="10.0.0.1", dst="10.0.0.2") / TCP(
        sport=5060, dport=40000, seq=0xFFFFFFF0, flags="SA", options=[("MSS", 1460), ("NOP", None)]
    )
    got = NetDecoder().decode(LINKTYPE_ETHERNET, bytes(ether(pkt / b"data")), 0)
    assert got == want_tcp(b"data", seq=0xFFFFFFF0, flags=0x12)


def test_tcp_fin_without_payload() -> None:
    assert decode(bytes(tcp4(b"", seq=7, flags="FA"))) == want_tcp(b"", seq=7, flags=0x11)


def with_bytes(pkt: Packet, at: int, value: bytes) -> bytes:
    raw = bytearray(bytes(pkt))
    raw[at : at + len(value)] = value
    return bytes(raw)


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (with_bytes(udp4(), 0, b"\x44"), ("ip", "bad_header")),  # IHL 4 < 5
        (with_bytes(udp4(), 2, struct.pack("!H", 19)), ("ip", "bad_header")),  # total < IHL
        (with_bytes(udp4(), 2, struct.pack("!H", 2000)), ("ip", "truncated")),  # snaplen cut
        (bytes(udp4())[:19], ("ip", "truncated")),
        (with_bytes(udp4(), 24, struct.pack("!H", 7)), ("udp", "bad_header")),
        (with_bytes(udp4(), 24, struct.pack("!H", 2000)), ("udp", "truncated")),
        (bytes(IP(src="1.2.3.4", dst="5.6.7.8", proto=17)) + b"\0" * 4, ("udp", "truncated")),
        (with_bytes(tcp4(b"x"), 32, b"\x40"), ("tcp", "bad_header")),  # data offset 4
        (with_bytes(tcp4(b"x"), 32, b"\xf0"), ("tcp", "truncated")),  # 60-byte header
        (bytes(IP(proto=6) / (b"\0" * 19)), ("tcp", "truncated")),
        (bytes(IP() / SCTP()), ("ip", "not_udp_or_tcp")),
        (bytes(IPv6(**V6, nh=50) / (b"\0" * 16)), ("ip", "not_udp_or_tcp")),  # ESP
        (bytes(IPv6(**V6, nh=59)), ("ip", "not_udp_or_tcp")),  # no next header
        (bytes(IPv6(**V6, plen=100) / UDP()), ("ip", "truncated")),
        (bytes(IPv6(**V6) / IPv6ExtHdrHopByHop(len=8) / UDP()), ("ip", "truncated")),
    ],
    ids=["ihl", "total<ihl", "total>captured", "short-v4", "udp-len<8", "udp-len>ip",
         "short-udp", "tcp-doff", "tcp-doff>captured", "short-tcp", "sctp", "esp", "nh59",
         "v6-plen", "v6-ext-len"],
)  # fmt: skip
def test_ip_and_transport_refusals(frame: bytes, expected: tuple[str, str]) -> None:
    assert reason(frame) == expected


def test_ethertype_and_version_must_agree() -> None:
    frame = bytes(ether(udp4()))
    frame = frame[:12] + b"\x86\xdd" + frame[14:]
    with pytest.raises(DecodeError) as info:
        NetDecoder().decode(LINKTYPE_ETHERNET, frame, 0)
    assert (info.value.layer, info.value.reason) == ("ip", "bad_header")
