"""Hostile input: every prefix and any mutation of a valid frame gives a Datagram,
None or DecodeError, never another exception; the fast path equals the full one."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.contrib.erspan import ERSPAN_II, ERSPAN_III
from scapy.contrib.gtp import GTP_U_Header
from scapy.contrib.mpls import MPLS
from scapy.layers.inet import IP, TCP, UDP, fragment
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    fragment6,
)
from scapy.layers.l2 import GRE, CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether
from scapy.layers.ppp import PPP, PPPoE
from scapy.layers.vxlan import VXLAN

from recorder.core.model import (
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    Datagram,
)
from recorder.core.net import DROP_REASONS, NetDecoder
from recorder.core.net.link import LINKTYPE_ERF
from recorder.errors import DecodeError

from .frames import MAC_A, MAC_B, ether, tcp4, udp4, udp6

OUTER = {"src": "192.0.2.1", "dst": "192.0.2.2"}
ETH = Ether(src=MAC_A, dst=MAC_B)


def valid_frames() -> list[tuple[str, int, bytes]]:
    big = IP(**OUTER, id=3) / UDP(sport=5060, dport=5060) / (b"a" * 600)
    big6 = (
        IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrFragment(id=4) / UDP() / (b"b" * 600)
    )
    cases = {
        "eth-udp": (LINKTYPE_ETHERNET, ether(udp4())),
        "eth-tcp": (LINKTYPE_ETHERNET, ether(tcp4(b"SIP/2.0 200 OK\r\n"))),
        "qinq-udp6": (LINKTYPE_ETHERNET, ETH / Dot1AD(vlan=1) / Dot1Q(vlan=2) / udp6()),
        "mpls": (LINKTYPE_ETHERNET, ETH / MPLS(s=1) / udp4()),
        "pppoe": (LINKTYPE_ETHERNET, ETH / PPPoE() / PPP(proto=0x21) / udp4()),
        "sll": (LINKTYPE_LINUX_SLL, CookedLinux() / udp4()),
        "sll2": (LINKTYPE_LINUX_SLL2, CookedLinuxV2(proto=0x0800) / udp4()),
        "null": (LINKTYPE_NULL, struct.pack("<I", 2) + bytes(udp4())),
        "v6-ext": (
            LINKTYPE_RAW,
            IPv6(src="::1", dst="::2") / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting() / UDP(),
        ),
        "gre-key-seq": (
            LINKTYPE_ETHERNET,
            ether(IP(**OUTER) / GRE(key_present=1, seqnum_present=1) / udp4()),
        ),
        "erspan2": (
            LINKTYPE_ETHERNET,
            ether(IP(**OUTER) / GRE(proto=0x88BE, seqnum_present=1) / ERSPAN_II() / ETH / udp4()),
        ),
        "erspan3": (
            LINKTYPE_ETHERNET,
            ether(IP(**OUTER) / GRE(proto=0x22EB) / ERSPAN_III() / ETH / udp4()),
        ),
        "vxlan": (
            LINKTYPE_ETHERNET,
            ether(IP(**OUTER) / UDP(dport=4789) / VXLAN() / ETH / udp4()),
        ),
        "gtpu": (
            LINKTYPE_ETHERNET,
            ether(IP(**OUTER) / UDP(dport=2152) / GTP_U_Header() / udp6()),
        ),
        "ipip": (LINKTYPE_ETHERNET, ether(IP(**OUTER) / udp4())),
        "erf": (
            LINKTYPE_ERF,
            b"\0" * 8 + bytes([2, 4, 0, 0, 0, 0, 0, 0]) + b"\0\0" + bytes(ether(udp4())),
        ),
    }
    out = [(name, lt, bytes(pkt)) for name, (lt, pkt) in cases.items()]
    out += [
        (f"frag4-{i}", LINKTYPE_ETHERNET, bytes(ether(f))) for i, f in enumerate(fragment(big, 256))
    ]
    out += [(f"frag6-{i}", LINKTYPE_RAW, bytes(f)) for i, f in enumerate(fragment6(big6, 400))]
    return out


FRAMES = valid_frames()


def decode_safely(dec: NetDecoder, linktype: int, frame: bytes) -> Datagram | str | None:
    try:
        return dec.decode(linktype, frame, 0)
    except DecodeError as exc:
        error = exc
    assert error.reason in DROP_REASONS[error.layer], (error.layer, error.reason)
    return f"{error.layer}:{error.reason}"


@pytest.mark.parametrize(("name", "linktype", "frame"), FRAMES, ids=[f[0] for f in FRAMES])
def test_every_prefix_is_a_datagram_or_a_decode_error(
    name: str, linktype: int, frame: bytes
) -> None:
    dec = NetDecoder()
    assert not isinstance(decode_safely(NetDecoder(), linktype, frame), str), name
    for cut in range(len(frame)):
        got = decode_safely(dec, linktype, frame[:cut])
        assert got is None or isinstance(got, Datagram | str)


@settings(max_examples=400)
@given(
    case=st.sampled_from(FRAMES),
    flips=st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), min_size=1, max_size=6),
)
def test_mutated_frames_only_raise_decode_error(
    case: tuple[str, int, bytes], flips: list[tuple[int, int]]
) -> None:
    _, linktype, frame = case
    raw = bytearray(frame)
    for at, value in flips:
        raw[at % len(raw)] = value
    decode_safely(NetDecoder(), linktype, bytes(raw))


@settings(max_examples=300)
@given(linktype=st.sampled_from([0, 1, 101, 108, 113, 197, 228, 229, 276, 9]), data=st.binary())
def test_random_bytes_only_raise_decode_error(linktype: int, data: bytes) -> None:
    decode_safely(NetDecoder(), linktype, data)


def general(dec: NetDecoder, linktype: int, frame: bytes) -> Datagram | str | None:
    try:
        return dec.decode_general(linktype, frame, 0)
    except DecodeError as exc:
        return f"{exc.layer}:{exc.reason}"


FAST_PATH_LINKS = [
    (LINKTYPE_ETHERNET, bytes(ETH)[:12] + b"\x08\x00"),
    (LINKTYPE_ETHERNET, bytes(ETH / Dot1Q(vlan=7))[:16] + b"\x08\x00"),
    (LINKTYPE_LINUX_SLL, bytes(CookedLinux(proto=0x0800))),
]


@settings(max_examples=600)
@given(
    link=st.sampled_from(FAST_PATH_LINKS),
    payload=st.binary(max_size=64),
    flips=st.lists(st.tuples(st.integers(0, 45), st.integers(0, 255)), max_size=3),
    pad=st.binary(max_size=8),
)
def test_fast_path_equals_full_decoder(
    link: tuple[int, bytes], payload: bytes, flips: list[tuple[int, int]], pad: bytes
) -> None:
    linktype, header = link
    raw = bytearray(header + bytes(udp4(payload)) + pad)
    for at, value in flips:
        raw[at % len(raw)] = value
    frame = bytes(raw)
    fast = decode_safely(NetDecoder(), linktype, frame)
    assert fast == general(NetDecoder(), linktype, frame)


def test_tcp_is_not_on_the_fast_path_but_decodes() -> None:
    frame = bytes(ether(IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=2) / b"x"))
    got = decode_safely(NetDecoder(), LINKTYPE_ETHERNET, frame)
    assert got == general(NetDecoder(), LINKTYPE_ETHERNET, frame)


def test_reasons_used_by_the_code_are_catalogued() -> None:
    import re
    from pathlib import Path

    import recorder.core.net as net

    source = "".join(p.read_text() for p in Path(net.__file__).parent.glob("*.py"))
    used = set(re.findall(r'DecodeError\("(\w+)", "(\w+)"\)', source))
    used |= {(layer, r) for r in re.findall(r'DecodeError\(layer, "(\w+)"\)', source)
             for layer in ("link", "tunnel")}  # fmt: skip
    used |= {("ip", r) for r in re.findall(r'_poison\(entry, "(\w+)"\)', source)}
    catalogued = {(layer, r) for layer, reasons in DROP_REASONS.items() for r in reasons}
    assert used == catalogued
