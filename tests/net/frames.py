"""Frame builders for the net tests (scapy, test-only) and expected Datagrams."""

from __future__ import annotations

import ipaddress

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from recorder.core.model import PROTO_TCP, PROTO_UDP, Datagram

MAC_A = "02:00:00:00:00:01"
MAC_B = "02:00:00:00:00:02"
SIP = b"INVITE sip:bob@example.com SIP/2.0\r\nContent-Length: 0\r\n\r\n"


def packed(addr: str) -> bytes:
    return ipaddress.ip_address(addr).packed


def udp4(
    payload: bytes = SIP,
    src: str = "10.0.0.1",
    dst: str = "10.0.0.2",
    sport: int = 5060,
    dport: int = 5060,
) -> Packet:
    return IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / payload


def udp6(
    payload: bytes = SIP,
    src: str = "2001:db8::1",
    dst: str = "2001:db8::2",
    sport: int = 5060,
    dport: int = 5060,
) -> Packet:
    return IPv6(src=src, dst=dst) / UDP(sport=sport, dport=dport) / payload


def ether(inner: Packet) -> Packet:
    return Ether(src=MAC_A, dst=MAC_B) / inner


def want_udp(
    payload: bytes = SIP,
    src: str = "10.0.0.1",
    dst: str = "10.0.0.2",
    sport: int = 5060,
    dport: int = 5060,
) -> Datagram:
    return Datagram(PROTO_UDP, packed(src), packed(dst), sport, dport, payload)


def want_udp6(payload: bytes = SIP) -> Datagram:
    return want_udp(payload, "2001:db8::1", "2001:db8::2")


def tcp4(payload: bytes, seq: int = 1000, flags: str = "PA") -> Packet:
    return (
        IP(src="10.0.0.1", dst="10.0.0.2")
        / TCP(sport=5060, dport=40000, seq=seq, flags=flags)
        / payload
    )


def want_tcp(payload: bytes, seq: int = 1000, flags: int = 0x18) -> Datagram:
    return Datagram(
        PROTO_TCP, packed("10.0.0.1"), packed("10.0.0.2"), 5060, 40000, payload, seq, flags
    )
