"""Tunnels: GRE, ERSPAN II/III, VXLAN, GTP-U, IP-in-IP, PPTP; nesting is bounded."""

from __future__ import annotations

import pytest
from scapy.contrib.erspan import ERSPAN_I, ERSPAN_II, ERSPAN_III, ERSPAN_PlatformSpecific
from scapy.contrib.gtp import GTP_U_Header, GTPPDUSessionContainer
from scapy.contrib.mpls import MPLS
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import GRE, GRE_PPTP, Dot1Q, Ether
from scapy.layers.ppp import PPP
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet, Raw

from recorder.core.model import LINKTYPE_ETHERNET
from recorder.core.net import NetDecoder, NetLimits
from recorder.errors import DecodeError

from .frames import MAC_A, MAC_B, ether, udp4, udp6, want_udp, want_udp6

OUTER = {"src": "192.0.2.1", "dst": "192.0.2.2"}
INNER_ETH = Ether(src=MAC_A, dst=MAC_B)
ETH = INNER_ETH


def decode(pkt: Packet, limits: NetLimits | None = None) -> object:
    return NetDecoder(limits).decode(LINKTYPE_ETHERNET, bytes(ether(pkt)), 0)


def reason(pkt: Packet) -> tuple[str, str]:
    with pytest.raises(DecodeError) as info:
        decode(pkt)
    return info.value.layer, info.value.reason


@pytest.mark.parametrize(
    "gre",
    [
        GRE(),
        GRE(key_present=1, key=0x1234),
        GRE(seqnum_present=1, seqence_number=9),
        GRE(chksum_present=1, key_present=1, key=1, seqnum_present=1, seqence_number=2),
    ],
    ids=["plain", "key", "seq", "csum+key+seq"],
)
def test_gre_ipv4(gre: GRE) -> None:
    assert decode(IP(**OUTER) / gre / udp4()) == want_udp()


def test_gre_ipv6_over_ipv6() -> None:
    assert decode(IPv6(src="2001:db8::a", dst="2001:db8::b") / GRE() / udp6()) == want_udp6()


def test_gre_transparent_ethernet_bridging() -> None:
    pkt = IP(**OUTER) / GRE(proto=0x6558) / INNER_ETH / Dot1Q(vlan=3) / udp4()
    assert decode(pkt) == want_udp()


def test_erspan_type_1() -> None:
    pkt = IP(**OUTER) / GRE(proto=0x88BE) / ERSPAN_I() / INNER_ETH / udp4()
    assert decode(pkt) == want_udp()


def test_erspan_type_2() -> None:
    pkt = IP(**OUTER) / GRE(proto=0x88BE, seqnum_present=1) / ERSPAN_II(session_id=5)
    assert decode(pkt / INNER_ETH / udp4()) == want_udp()


def test_erspan_type_3() -> None:
    pkt = IP(**OUTER) / GRE(proto=0x22EB, seqnum_present=1) / ERSPAN_III(session_id=5, o=0)
    assert decode(pkt / INNER_ETH / udp6()) == want_udp6()


def test_erspan_type_3_with_platform_subheader() -> None:
    pkt = IP(**OUTER) / GRE(proto=0x22EB, seqnum_present=1) / ERSPAN_III(o=1)
    pkt = pkt / ERSPAN_PlatformSpecific(platf_id=3) / INNER_ETH / udp4()
    assert decode(pkt) == want_udp()


def test_erspan_type_3_ip_frame_type() -> None:
    pkt = IP(**OUTER) / GRE(proto=0x22EB) / ERSPAN_III(ft=2) / udp4()
    assert decode(pkt) == want_udp()


def test_vxlan() -> None:
    pkt = IP(**OUTER) / UDP(sport=55555, dport=4789) / VXLAN(vni=42) / INNER_ETH / udp4()
    assert decode(pkt) == want_udp()


def test_vxlan_port_without_vxlan_header_is_plain_udp() -> None:
    pkt = udp4(b"\x80\x00rtp-looking", sport=4000, dport=4789)
    assert decode(pkt) == want_udp(b"\x80\x00rtp-looking", sport=4000, dport=4789)


def test_vxlan_port_is_configurable() -> None:
    pkt = IP(**OUTER) / UDP(sport=1, dport=8472) / VXLAN(vni=1) / INNER_ETH / udp4()
    assert decode(pkt, NetLimits(vxlan_ports=frozenset({8472}))) == want_udp()


def test_gtp_u() -> None:
    pkt = IP(**OUTER) / UDP(sport=2152, dport=2152) / GTP_U_Header(teid=7) / udp6()
    assert decode(pkt) == want_udp6()


def test_gtp_u_with_extension_header() -> None:
    gtp = GTP_U_Header(teid=7, E=1, next_ex=0x85) / GTPPDUSessionContainer(type=1, QFI=9)
    assert decode(IP(**OUTER) / UDP(sport=2152, dport=2152) / gtp / udp4()) == want_udp()


def test_gtp_echo_is_plain_udp() -> None:
    echo = bytes(GTP_U_Header(gtp_type=1, teid=0))
    assert decode(udp4(echo, sport=2152, dport=2152)) == want_udp(echo, sport=2152, dport=2152)


@pytest.mark.parametrize(
    ("outer", "inner", "want"),
    [
        (IP(**OUTER), udp4(), want_udp()),  # proto 4
        (IP(**OUTER), udp6(), want_udp6()),  # proto 41 (6in4)
        (IPv6(src="2001:db8::a", dst="2001:db8::b"), udp4(), want_udp()),
    ],
    ids=["ipip", "6in4", "4in6"],
)
def test_ip_in_ip(outer: Packet, inner: Packet, want: object) -> None:
    assert decode(outer / inner) == want


def test_pptp_gre_ppp() -> None:
    pkt = IP(**OUTER) / GRE_PPTP(seqnum_present=1, acknum_present=1, call_id=3) / PPP() / udp4()
    assert decode(pkt) == want_udp()


def nested_ipip(levels: int) -> Packet:
    pkt = udp4()
    for _ in range(levels):
        pkt = IP(**OUTER) / pkt
    return pkt


def test_tunnel_depth_limit() -> None:
    assert decode(nested_ipip(4)) == want_udp()
    assert reason(nested_ipip(5)) == ("tunnel", "too_deep")


def test_each_kind_of_tunnel_counts_one_level() -> None:
    inner = IP(**OUTER) / UDP(dport=4789) / VXLAN() / ETH / udp4()  # VXLAN
    inner = IP(**OUTER) / GRE(proto=0x6558) / ETH / inner  # GRE bridging
    inner = IP(**OUTER) / UDP(dport=2152) / GTP_U_Header() / inner  # GTP-U
    assert decode(IP(**OUTER) / inner) == want_udp()  # IP-in-IP: 4 levels
    assert reason(IP(**OUTER) / IP(**OUTER) / inner) == ("tunnel", "too_deep")


def test_nested_mpls_pseudowires_are_bounded() -> None:
    frame = bytes(ether(udp4()))
    for _ in range(6):
        frame = bytes(ETH / MPLS(s=1)) + b"\0\0\0\0" + frame
    with pytest.raises(DecodeError) as info:
        NetDecoder().decode(LINKTYPE_ETHERNET, frame, 0)
    assert (info.value.layer, info.value.reason) == ("tunnel", "too_deep")


BAD = ("tunnel", "bad_header")
SHORT = ("tunnel", "truncated")


@pytest.mark.parametrize(
    ("pkt", "expected"),
    [
        (IP(**OUTER) / GRE(routing_present=1) / udp4(), ("tunnel", "unsupported")),
        (IP(**OUTER) / GRE(version=2) / udp4(), ("tunnel", "unsupported")),
        (IP(**OUTER) / GRE(proto=0x88BE, seqnum_present=1) / ERSPAN_III() / udp4(), BAD),
        (IP(**OUTER) / GRE(proto=0x22EB) / ERSPAN_II() / udp4(), BAD),
        (IP(**OUTER) / GRE(proto=0x22EB) / ERSPAN_III(ft=3) / udp4(), ("tunnel", "unsupported")),
        (IP(**OUTER, proto=47) / Raw(b"\x20\x00\x08\x00\0\0"), SHORT),
        (IP(**OUTER) / GRE(proto=0x0806) / Raw(b"\0" * 28), ("link", "not_ip")),
        (IP(**OUTER) / UDP(dport=2152) / GTP_U_Header(length=500) / udp4(), SHORT),
    ],
    ids=["gre-routing", "gre-version", "erspan2-version", "erspan3-version", "erspan3-ft",
         "gre-short", "gre-arp", "gtp-length"],
)  # fmt: skip
def test_tunnel_refusals(pkt: Packet, expected: tuple[str, str]) -> None:
    assert reason(pkt) == expected
