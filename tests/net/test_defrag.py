"""IP reassembly: any fragmentation in any order gives the same bytes; caps and timeouts."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP, fragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, fragment6
from scapy.layers.l2 import GRE

from recorder.core.model import LINKTYPE_ETHERNET, LINKTYPE_RAW, Datagram
from recorder.core.net import FragmentLimits, NetDecoder, NetLimits
from recorder.errors import ConfigError, DecodeError

from .frames import ether, packed, udp4, want_udp

SRC4, DST4 = packed("10.0.0.1"), packed("10.0.0.2")
SRC6, DST6 = packed("2001:db8::1"), packed("2001:db8::2")
SEC = 1_000_000_000


def udp_bytes(data: bytes, sport: int = 5060, dport: int = 5062) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data


def frag4(piece: bytes, offset: int, more: bool, ident: int = 1, proto: int = 17) -> bytes:
    flags = (0x2000 if more else 0) | (offset // 8)
    header = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(piece), ident, flags, 64, proto, 0)
    return header + SRC4 + DST4 + piece


def frag6(piece: bytes, offset: int, more: bool, ident: int = 1, nh: int = 17) -> bytes:
    fixed = struct.pack("!IHBB", 6 << 28, 8 + len(piece), 44, 64) + SRC6 + DST6
    return fixed + struct.pack("!BBHI", nh, 0, offset | int(more), ident) + piece


def decoder(**limits: int) -> NetDecoder:
    return NetDecoder(NetLimits(fragments=FragmentLimits(**limits)))


def feed(dec: NetDecoder, frames: list[bytes], now_ns: int = 0) -> list[Datagram | None]:
    return [dec.decode(LINKTYPE_RAW, frame, now_ns) for frame in frames]


def reason_of(dec: NetDecoder, frame: bytes, now_ns: int = 0) -> str:
    with pytest.raises(DecodeError) as info:
        dec.decode(LINKTYPE_RAW, frame, now_ns)
    assert info.value.layer == "ip"
    return info.value.reason


@st.composite
def fragmentations(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, int]]]:
    """A UDP datagram and fragment windows covering it, possibly overlapping."""
    data = draw(st.binary(min_size=1, max_size=600))
    whole = udp_bytes(data)
    size = len(whole)
    units = (size - 1) // 8  # 8-byte boundaries strictly inside the datagram
    cuts = sorted(draw(st.sets(st.integers(1, units), max_size=12))) if units else []
    bounds = [0, *(8 * c for c in cuts), size]
    windows = list(itertools.pairwise(bounds))
    for _ in range(draw(st.integers(0, 4))):  # extra overlapping windows, same bytes
        start = 8 * draw(st.integers(0, units))
        stop = draw(st.sampled_from([size, *(8 * u for u in range(start // 8 + 1, units + 1))]))
        windows.append((start, stop))
    return whole, windows


def delivery(draw: st.DrawFn, windows: list[tuple[int, int]]) -> list[tuple[int, int]]:
    order = draw(st.permutations(windows))
    duplicates = draw(st.lists(st.sampled_from(windows), max_size=4))
    at = draw(st.lists(st.integers(0, len(order)), min_size=len(duplicates)))
    for window, index in zip(duplicates, at, strict=False):
        order.insert(index, window)
    return order


@settings(max_examples=300)
@given(case=fragmentations(), data=st.data(), version=st.sampled_from([4, 6]))
def test_any_fragmentation_any_order_reassembles(
    case: tuple[bytes, list[tuple[int, int]]], data: st.DataObject, version: int
) -> None:
    whole, windows = case
    order = delivery(data.draw, windows)
    build = frag4 if version == 4 else frag6
    size = len(whole)
    frames = [build(whole[a:b], a, b < size) for a, b in order]
    unfragmented = order.count((0, size))  # offset 0 without MF: a whole packet
    src, dst = (SRC4, DST4) if version == 4 else (SRC6, DST6)
    want = Datagram(17, src, dst, 5060, 5062, whole[8:])
    dec = NetDecoder()
    emitted = [got for got in feed(dec, frames) if got is not None]
    assert emitted
    assert all(got == want for got in emitted)
    assert dec.counters["fragments_reassembled"] == len(emitted) - unfragmented


WHOLE = udp_bytes(bytes(range(256)) * 2)  # 520 bytes
WANT4 = Datagram(17, SRC4, DST4, 5060, 5062, WHOLE[8:])
WANT6 = Datagram(17, SRC6, DST6, 5060, 5062, WHOLE[8:])


def halves4(ident: int = 1) -> list[bytes]:
    return [frag4(WHOLE[:256], 0, True, ident), frag4(WHOLE[256:], 256, False, ident)]


def test_two_fragments_either_order() -> None:
    first, last = halves4()
    assert feed(NetDecoder(), [first, last]) == [None, WANT4]
    assert feed(NetDecoder(), [last, first]) == [None, WANT4]


def test_scapy_fragmented_ipv4_over_ethernet() -> None:
    pkt = IP(src="10.0.0.1", dst="10.0.0.2", id=77) / UDP(sport=5060, dport=5060) / (b"x" * 3000)
    frames = [bytes(ether(f)) for f in fragment(pkt, fragsize=1480)]
    dec = NetDecoder()
    got = [dec.decode(LINKTYPE_ETHERNET, f, 0) for f in reversed(frames)]
    assert got == [None, None, want_udp(b"x" * 3000)]
    assert dec.pending_fragment_datagrams == 0
    assert dec.pending_fragment_bytes == 0


def test_scapy_fragmented_ipv6_with_destination_options_after_fragment_header() -> None:
    pkt = (
        IPv6(src="2001:db8::1", dst="2001:db8::2")
        / IPv6ExtHdrFragment(id=9)
        / IPv6ExtHdrDestOpt()
        / UDP(sport=5060, dport=5062)
        / (b"y" * 2000)
    )
    frames = [bytes(f) for f in fragment6(pkt, 1280)]
    assert len(frames) == 2
    assert feed(NetDecoder(), frames) == [None, Datagram(17, SRC6, DST6, 5060, 5062, b"y" * 2000)]


def test_fragmented_tunnel_packet() -> None:
    outer = IP(src="192.0.2.1", dst="192.0.2.2", id=5) / GRE() / udp4(b"z" * 2000)
    frames = [bytes(ether(f)) for f in fragment(outer, fragsize=1000)]
    dec = NetDecoder()
    got = [dec.decode(LINKTYPE_ETHERNET, f, 0) for f in frames]
    assert got[-1] == want_udp(b"z" * 2000)
    assert got[:-1] == [None] * (len(frames) - 1)


def test_ipv6_key_ignores_next_header_of_later_fragments() -> None:
    frames = [frag6(WHOLE[:256], 0, True), frag6(WHOLE[256:], 256, False, nh=59)]
    assert feed(NetDecoder(), frames) == [None, WANT6]


def test_ipv4_key_includes_protocol() -> None:
    dec = NetDecoder()
    assert feed(dec, [frag4(WHOLE[:256], 0, True), frag4(WHOLE[256:], 256, False, proto=6)]) == [
        None,
        None,
    ]
    assert dec.pending_fragment_datagrams == 2


def test_conflicting_overlap_poisons_the_datagram() -> None:
    dec = decoder(timeout_ns=10 * SEC)
    first, last = halves4()
    forged = frag4(b"X" * 8 + WHOLE[8:256], 0, True)
    assert feed(dec, [first]) == [None]
    assert reason_of(dec, forged) == "fragment_overlap"
    assert dec.pending_fragment_bytes == 0
    assert reason_of(dec, last) == "fragment_overlap"  # the key stays dead until it expires
    dec.expire(10 * SEC)
    assert dec.counters["fragment_timeouts"] == 0  # a dropped datagram is not a timeout
    assert feed(dec, [first, last], 10 * SEC) == [None, WANT4]


@pytest.mark.parametrize(
    "frames",
    [
        [frag4(WHOLE[256:], 256, False), frag4(WHOLE[256:512], 256, False)],  # two ends
        [frag4(WHOLE[256:512], 256, False), frag4(WHOLE[256:], 256, True)],  # past the end
        [frag4(WHOLE[256:], 256, True), frag4(WHOLE[256:512], 256, False)],  # end inside data
        [frag6(WHOLE[:256], 0, True, nh=17), frag6(WHOLE[:256], 0, True, nh=6)],
    ],
    ids=["two-ends", "past-end", "end-inside", "first-protocols"],
)
def test_inconsistent_fragments_are_overlaps(frames: list[bytes]) -> None:
    dec = NetDecoder()
    assert feed(dec, frames[:1]) == [None]
    assert reason_of(dec, frames[1]) == "fragment_overlap"


@pytest.mark.parametrize(
    "frame",
    [
        frag4(WHOLE[:100], 0, True),  # not a multiple of 8 and not last
        frag4(b"", 8, True),  # empty middle fragment
        frag4(b"\0" * 16, 65528, False),  # ends past 65535
        frag6(b"\0" * 12, 8, True),
    ],
    ids=["odd-length", "empty", "too-long", "v6-odd-length"],
)
def test_bad_fragments(frame: bytes) -> None:
    assert reason_of(NetDecoder(), frame) == "bad_fragment"


def test_datagram_cap_evicts_oldest() -> None:
    dec = decoder(max_datagrams=2)
    assert feed(dec, [halves4(i)[0] for i in (1, 2, 3)]) == [None] * 3
    assert dec.counters["fragment_evictions"] == 1
    assert dec.pending_fragment_datagrams == 2
    assert feed(dec, [halves4(1)[1]]) == [None]  # datagram 1 was evicted: starts over
    assert feed(dec, [halves4(3)[1]]) == [WANT4]


def test_byte_cap_evicts_oldest() -> None:
    dec = decoder(max_bytes=600)
    assert feed(dec, [halves4(1)[0], halves4(2)[0]]) == [None, None]
    assert dec.pending_fragment_bytes == 512
    assert feed(dec, [halves4(3)[0]]) == [None]
    assert dec.counters["fragment_evictions"] == 1  # the oldest made room
    assert dec.pending_fragment_bytes == 512
    assert feed(dec, [halves4(1)[1]]) == [None]  # datagram 1 is gone: starts over
    assert dec.counters["fragment_evictions"] == 2


def test_datagram_bigger_than_byte_budget_is_given_up() -> None:
    dec = decoder(max_bytes=300)
    first, last = halves4()
    assert feed(dec, [first]) == [None]
    assert reason_of(dec, last) == "fragment_limit"
    assert dec.pending_fragment_bytes == 0
    assert reason_of(dec, first) == "fragment_limit"


def test_fragments_per_datagram_cap() -> None:
    dec = decoder(max_fragments_per_datagram=2)
    pieces = [frag4(WHOLE[i : i + 64], i, True) for i in (0, 64, 128)]
    assert feed(dec, pieces[:2]) == [None, None]
    assert reason_of(dec, pieces[2]) == "fragment_limit"
    assert reason_of(dec, frag4(WHOLE[192:], 192, False)) == "fragment_limit"
    assert dec.pending_fragment_bytes == 0


def test_exact_duplicate_is_not_stored_twice() -> None:
    dec = NetDecoder()
    first, last = halves4()
    assert feed(dec, [first, first, first]) == [None] * 3
    assert dec.pending_fragment_bytes == 256
    assert feed(dec, [last]) == [WANT4]


def test_timeout_on_capture_time() -> None:
    dec = decoder(timeout_ns=5 * SEC)
    assert dec.next_expiry_ns() is None
    assert feed(dec, [halves4()[0]], now_ns=SEC) == [None]
    assert dec.next_expiry_ns() == 6 * SEC
    dec.expire(6 * SEC - 1)
    assert dec.pending_fragment_datagrams == 1
    dec.expire(6 * SEC)
    assert dec.pending_fragment_datagrams == 0
    assert dec.pending_fragment_bytes == 0
    assert dec.counters["fragment_timeouts"] == 1
    assert dec.next_expiry_ns() is None


def test_late_fragment_after_timeout_starts_over() -> None:
    dec = decoder(timeout_ns=5 * SEC)
    first, last = halves4()
    assert feed(dec, [first], now_ns=0) == [None]
    assert feed(dec, [last], now_ns=5 * SEC) == [None]  # decode expires the old set first
    assert dec.counters["fragment_timeouts"] == 1


def test_default_timeout_is_30_seconds() -> None:
    dec = NetDecoder()
    feed(dec, [halves4()[0]], now_ns=7)
    assert dec.next_expiry_ns() == 30 * SEC + 7


def test_deadlines_never_go_back_when_the_capture_clock_does() -> None:
    dec = decoder(timeout_ns=5 * SEC)
    feed(dec, [halves4(1)[0]], now_ns=100 * SEC)
    feed(dec, [halves4(2)[0]], now_ns=10 * SEC)  # capture clock stepped back
    assert dec.next_expiry_ns() == 105 * SEC
    dec.expire(104 * SEC)
    assert dec.pending_fragment_datagrams == 2
    dec.expire(105 * SEC)
    assert dec.pending_fragment_datagrams == 0
    assert dec.counters["fragment_timeouts"] == 2


@pytest.mark.parametrize("field", ["timeout_ns", "max_datagrams", "max_bytes"])
def test_limits_must_be_positive(field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        FragmentLimits(**{field: 0})
