"""Link layers: each one decoded to the exact Datagram, and each refusal to its reason."""

from __future__ import annotations

import struct

import pytest
from scapy.contrib.mpls import MPLS
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import ARP, CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether
from scapy.layers.ppp import PPP, PPPoE
from scapy.packet import Raw

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
from recorder.core.net import NetDecoder
from recorder.core.net.link import LINKTYPE_ERF, LINKTYPE_PPP
from recorder.errors import DecodeError

from .frames import MAC_A, MAC_B, SIP, ether, udp4, udp6, want_udp, want_udp6


def decode(linktype: int, frame: bytes) -> object:
    return NetDecoder().decode(linktype, frame, 0)


def reason(linktype: int, frame: bytes) -> tuple[str, str]:
    with pytest.raises(DecodeError) as info:
        NetDecoder().decode(linktype, frame, 0)
    return info.value.layer, info.value.reason


def test_ethernet_ipv4_udp() -> None:
    assert decode(LINKTYPE_ETHERNET, bytes(ether(udp4()))) == want_udp()


def test_ethernet_ipv6_udp() -> None:
    assert decode(LINKTYPE_ETHERNET, bytes(ether(udp6()))) == want_udp6()


def test_ethernet_padding_and_fcs_are_trimmed_by_ip_length() -> None:
    short = bytes(ether(udp4(b"hi")))
    assert len(short) < 60
    padded = short.ljust(60, b"\0") + b"\xde\xad\xbe\xef"  # minimum frame + FCS
    assert decode(LINKTYPE_ETHERNET, padded) == want_udp(b"hi")


def test_udp_length_shorter_than_ip_payload_wins() -> None:
    frame = bytearray(bytes(ether(udp4(b"abcdef"))))
    frame[38:40] = struct.pack("!H", 8 + 3)  # UDP length says 3 payload bytes
    frame[40:42] = b"\0\0"  # no checksum
    assert decode(LINKTYPE_ETHERNET, bytes(frame)) == want_udp(b"abc")


def test_ipv4_options_are_skipped() -> None:
    pkt = (
        IP(src="10.0.0.1", dst="10.0.0.2", options=[b"\x94\x04\x00\x00"])
        / UDP(sport=5060, dport=5060)
        / SIP
    )
    frame = bytes(ether(pkt))
    assert frame[14] == 0x46
    assert decode(LINKTYPE_ETHERNET, frame) == want_udp()


def test_ipv4_total_length_zero_uses_captured_length() -> None:
    frame = bytearray(bytes(ether(udp4())))
    frame[16:18] = b"\0\0"  # what TSO leaves in locally captured packets
    assert decode(LINKTYPE_ETHERNET, bytes(frame)) == want_udp()


@pytest.mark.parametrize(
    "tags",
    [
        [Dot1Q(vlan=10)],
        [Dot1AD(vlan=100), Dot1Q(vlan=10)],
        [Dot1Q(vlan=5), Dot1Q(vlan=6), Dot1Q(vlan=7)],
    ],
    ids=["802.1q", "qinq-88a8", "three-tags"],
)
def test_vlan_tags(tags: list[Dot1Q]) -> None:
    pkt = Ether(src=MAC_A, dst=MAC_B)
    for tag in tags:
        pkt = pkt / tag
    assert decode(LINKTYPE_ETHERNET, bytes(pkt / udp4())) == want_udp()


def test_qinq_9100_tpid() -> None:
    frame = bytes(Ether(src=MAC_A, dst=MAC_B, type=0x9100) / Dot1Q(vlan=10) / udp4())
    assert decode(LINKTYPE_ETHERNET, frame) == want_udp()


def test_too_many_vlan_tags() -> None:
    frame = bytes(Ether(src=MAC_A, dst=MAC_B, type=0x8100)) + b"\x00\x01\x81\x00" * 9
    assert reason(LINKTYPE_ETHERNET, frame + bytes(udp4())) == ("link", "bad_header")


def test_mpls_label_stack() -> None:
    pkt = Ether(src=MAC_A, dst=MAC_B) / MPLS(label=16, s=0) / MPLS(label=17, s=1) / udp6()
    assert decode(LINKTYPE_ETHERNET, bytes(pkt)) == want_udp6()


def test_mpls_pseudowire_with_control_word() -> None:
    inner = bytes(ether(udp4()))
    frame = bytes(Ether(src=MAC_A, dst=MAC_B) / MPLS(label=16, s=1)) + b"\0\0\0\0" + inner
    assert decode(LINKTYPE_ETHERNET, frame) == want_udp()


def test_pppoe_session() -> None:
    pkt = Ether(src=MAC_A, dst=MAC_B) / PPPoE(sessionid=7) / PPP(proto=0x0021) / udp4()
    assert decode(LINKTYPE_ETHERNET, bytes(pkt)) == want_udp()


def test_sll() -> None:
    pkt = CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6, src=b"\x02\0\0\0\0\x01\0\0") / udp4()
    assert decode(LINKTYPE_LINUX_SLL, bytes(pkt)) == want_udp()


def test_sll2() -> None:
    pkt = CookedLinuxV2(proto=0x86DD, ifindex=3, lladdrtype=1, pkttype=4, lladdrlen=6) / udp6()
    assert decode(LINKTYPE_LINUX_SLL2, bytes(pkt)) == want_udp6()


@pytest.mark.parametrize("linktype", [LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6])
def test_raw_ip(linktype: int) -> None:
    assert decode(linktype, bytes(udp4())) == want_udp()
    assert decode(linktype, bytes(udp6())) == want_udp6()


@pytest.mark.parametrize(
    ("linktype", "header", "ipv6"),
    [
        (LINKTYPE_NULL, struct.pack("<I", 2), False),  # little-endian host
        (LINKTYPE_NULL, struct.pack(">I", 2), False),  # big-endian host
        (LINKTYPE_NULL, struct.pack("<I", 24), True),  # NetBSD/OpenBSD AF_INET6
        (LINKTYPE_NULL, struct.pack("<I", 28), True),  # FreeBSD
        (LINKTYPE_NULL, struct.pack("<I", 30), True),  # macOS
        (LINKTYPE_LOOP, struct.pack(">I", 2), False),
        (LINKTYPE_LOOP, struct.pack(">I", 24), True),
    ],
)
def test_bsd_loopback(linktype: int, header: bytes, ipv6: bool) -> None:
    if ipv6:
        assert decode(linktype, header + bytes(udp6())) == want_udp6()
    else:
        assert decode(linktype, header + bytes(udp4())) == want_udp()


def test_loopback_other_family() -> None:
    assert reason(LINKTYPE_NULL, struct.pack("<I", 7) + bytes(udp4())) == ("link", "not_ip")


@pytest.mark.parametrize("prefix", [b"\xff\x03\x00\x21", b"\x00\x21", b"\x21"])
def test_ppp(prefix: bytes) -> None:
    assert decode(LINKTYPE_PPP, prefix + bytes(udp4())) == want_udp()


def test_ppp_not_ip() -> None:
    assert reason(LINKTYPE_PPP, b"\xc0\x21" + bytes(udp4())) == ("link", "not_ip")


def erf_record(rtype: int, body: bytes, extensions: int = 0) -> bytes:
    if extensions:
        rtype |= 0x80
    exts = b"".join(
        bytes([0x80 if i < extensions - 1 else 0]) + b"\0" * 7 for i in range(extensions)
    )
    rlen = 16 + len(exts) + len(body)
    return struct.pack("<Q", 0) + struct.pack("!BBHHH", rtype, 4, rlen, 0, len(body)) + exts + body


@pytest.mark.parametrize("extensions", [0, 2])
def test_erf_ethernet(extensions: int) -> None:
    frame = erf_record(2, b"\0\0" + bytes(ether(udp4())), extensions)
    assert decode(LINKTYPE_ERF, frame) == want_udp()


def test_erf_ipv6() -> None:
    assert decode(LINKTYPE_ERF, erf_record(23, bytes(udp6()))) == want_udp6()


@pytest.mark.parametrize(
    ("linktype", "frame", "expected"),
    [
        (147, bytes(ether(udp4())), ("link", "unsupported_linktype")),
        (LINKTYPE_ETHERNET, bytes(Ether() / ARP()), ("link", "not_ip")),
        (LINKTYPE_ETHERNET, bytes(Ether(type=0x05DC) / Raw(b"\xaa" * 40)), ("link", "not_ip")),
        (LINKTYPE_ETHERNET, bytes(ether(udp4()))[:13], ("link", "truncated")),
        (
            LINKTYPE_ETHERNET,
            bytes(Ether() / PPPoE(version=2) / PPP() / udp4()),
            ("link", "bad_header"),
        ),
        (
            LINKTYPE_LINUX_SLL,
            bytes(CookedLinux(lladdrtype=824, proto=0x0800) / udp4()),
            ("link", "not_ip"),
        ),
        (LINKTYPE_RAW, b"\x50" + bytes(udp4())[1:], ("link", "not_ip")),
        (LINKTYPE_RAW, b"", ("link", "truncated")),
        (LINKTYPE_ERF, erf_record(1, bytes(udp4())), ("link", "not_ip")),
    ],
    ids=[
        "linktype",
        "arp",
        "llc",
        "short-eth",
        "pppoe-version",
        "netlink",
        "version5",
        "empty",
        "erf-hdlc",
    ],
)
def test_link_refusals(linktype: int, frame: bytes, expected: tuple[str, str]) -> None:
    assert reason(linktype, frame) == expected


def test_icmp_is_not_udp_or_tcp() -> None:
    frame = bytes(ether(IP(src="10.0.0.1", dst="10.0.0.2") / ICMP()))
    assert reason(LINKTYPE_ETHERNET, frame) == ("ip", "not_udp_or_tcp")
