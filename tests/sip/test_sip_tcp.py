"""TcpSipStreams: stream reassembly and Content-Length framing of SIP over TCP."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from recorder.core.sip.message import parse_sip
from recorder.core.sip.tcp import FIN, RST, SYN, StreamKey, TcpSipStreams

from .samples import ACK, COMPACT_BYE, FOLDED_OPTIONS, INVITE, OK, RINGING, STREAM_MESSAGES

KEY: StreamKey = (bytes([192, 0, 2, 10]), 5060, bytes([198, 51, 100, 7]), 5060)
OTHER: StreamKey = (bytes([198, 51, 100, 7]), 5060, bytes([192, 0, 2, 10]), 5060)
ISN = 1000
MASK = 0xFFFFFFFF
SECOND = 1_000_000_000


def opened(isn: int = ISN, key: StreamKey = KEY, **caps: int) -> TcpSipStreams:
    streams = TcpSipStreams(**caps)
    assert streams.feed(key, isn, SYN, b"", 0) == []
    return streams


def at(offset: int, isn: int = ISN) -> int:
    """The sequence number of stream byte `offset` after a SYN with `isn`."""
    return (isn + 1 + offset) & MASK


def test_several_messages_and_keepalives_in_one_segment() -> None:
    streams = opened()
    data = b"\r\n\r\n" + INVITE + b"\r\n" + RINGING + OK
    assert streams.feed(KEY, at(0), 0, data, 1) == [INVITE, RINGING, OK]
    assert streams.counters["messages"] == 3
    assert streams.counters["keepalives"] == 2
    assert parse_sip(streams.feed(KEY, at(len(data)), 0, ACK, 2)[0]).method == "ACK"


def test_one_message_over_many_segments() -> None:
    streams = opened()
    out: list[bytes] = []
    for i in range(len(INVITE)):
        out += streams.feed(KEY, at(i), 0, INVITE[i : i + 1], i)
        if i < len(INVITE) - 1:
            assert out == []
    assert out == [INVITE]


def test_directions_are_separate_streams() -> None:
    streams = opened()
    streams.feed(OTHER, 77, SYN, b"", 0)
    assert streams.feed(KEY, at(0), 0, INVITE[:100], 1) == []
    assert streams.feed(OTHER, 78, 0, RINGING, 2) == [RINGING]
    assert streams.feed(KEY, at(100), 0, INVITE[100:], 3) == [INVITE]
    assert len(streams) == 2


def test_out_of_order_segments_wait_for_the_hole() -> None:
    streams = opened()
    data = INVITE + RINGING
    a, b, c = data[:300], data[300:700], data[700:]
    assert streams.feed(KEY, at(700), 0, c, 1) == []
    assert streams.feed(KEY, at(300), 0, b, 2) == []
    assert streams.feed(KEY, at(0), 0, a, 3) == [INVITE, RINGING]
    assert streams.counters["gaps"] == 0
    assert streams.counters["duplicate_bytes"] == 0


def test_retransmissions_and_overlaps_are_trimmed() -> None:
    streams = opened()
    data = INVITE + OK  # 764 + 532 bytes
    assert streams.feed(KEY, at(0), 0, data[:500], 1) == []
    assert streams.feed(KEY, at(0), 0, data[:500], 2) == []  # full retransmission
    assert streams.feed(KEY, at(400), 0, data[400:700], 3) == []  # 100 old bytes
    assert streams.feed(KEY, at(600), 0, data[600:900], 4) == [INVITE]  # 100 old bytes
    assert streams.feed(KEY, at(0), 0, data[:1000], 5) == []  # 900 old bytes
    assert streams.feed(KEY, at(1000), 0, data[1000:], 5) == [OK]
    assert streams.counters["duplicate_bytes"] == 500 + 100 + 100 + 900


def test_overlapping_out_of_order_segments() -> None:
    streams = opened()
    data = INVITE
    assert streams.feed(KEY, at(200), 0, data[200:600], 1) == []
    assert streams.feed(KEY, at(200), 0, data[200:400], 1) == []  # shorter at the same offset
    assert streams.feed(KEY, at(300), 0, data[300:], 2) == []
    assert streams.feed(KEY, at(0), 0, data[:250], 3) == [INVITE]
    assert streams.counters["duplicate_bytes"] == 200 + 50 + 300


def test_gap_is_skipped_after_timeout_and_framing_resyncs() -> None:
    streams = opened(gap_timeout_ns=SECOND)
    data = INVITE + RINGING + OK
    hole_end = len(INVITE) + 10  # lose the tail of INVITE and the start of RINGING
    assert streams.feed(KEY, at(0), 0, data[:100], 0) == []
    assert streams.feed(KEY, at(hole_end), 0, data[hole_end:], 10) == []
    assert streams.feed(KEY, at(hole_end), 0, b"", SECOND - 1 + 10) == []  # not yet
    assert streams.feed(OTHER, 5, 0, ACK, SECOND + 10) == [ACK]  # other streams don't help
    released = streams.expire(SECOND + 10)
    assert released == [(KEY, OK)]
    assert streams.counters["gaps"] == 1
    assert streams.counters["gap_bytes"] == hole_end - 100
    assert streams.counters["discarded_bytes"] == 100 + len(RINGING) - 10
    # The stream carries on in sync after the skipped hole.
    assert streams.feed(KEY, at(len(data)), 0, ACK, SECOND + 11) == [ACK]


def test_gap_timeout_also_fires_on_a_later_segment() -> None:
    streams = opened(gap_timeout_ns=SECOND)
    data = INVITE + OK
    assert streams.feed(KEY, at(len(INVITE)), 0, OK, 0) == []
    assert streams.feed(KEY, at(len(data)), 0, ACK, SECOND) == [OK, ACK]
    assert streams.counters["gap_bytes"] == len(INVITE)


def test_pending_overflow_skips_the_gap() -> None:
    streams = opened(max_pending_bytes=len(OK) + len(ACK) - 1)
    assert streams.feed(KEY, at(len(INVITE)), 0, OK, 0) == []
    assert streams.feed(KEY, at(len(INVITE) + len(OK)), 0, ACK, 0) == [OK, ACK]
    assert streams.counters["pending_overflow"] == 1
    assert streams.counters["gap_bytes"] == len(INVITE)


def test_pending_segment_count_cap() -> None:
    streams = opened(max_pending_segments=3)
    base = len(INVITE)
    out: list[bytes] = []
    for i in range(4):  # four 1-byte segments ahead of the hole
        out += streams.feed(KEY, at(base + i), 0, OK[i : i + 1], 0)
    out += streams.feed(KEY, at(base + 4), 0, OK[4:], 0)
    assert out == [OK]
    assert streams.counters["pending_overflow"] == 1


def test_segment_beyond_window_is_dropped() -> None:
    streams = opened(window=1000)
    assert streams.feed(KEY, at(2000), 0, OK, 0) == []
    assert streams.counters["out_of_window"] == 1
    assert streams.feed(KEY, at(0), 0, INVITE, 0) == [INVITE]


def test_sequence_wrap_around() -> None:
    isn = MASK - 100  # stream bytes cross 2**32 inside INVITE
    streams = opened(isn=isn)
    data = INVITE + RINGING + OK
    cuts = [0, 50, 99, 100, 101, 700, len(INVITE) + 3, len(data)]
    pieces = [(at(a, isn), data[a:b]) for a, b in itertools.pairwise(cuts)]
    out: list[bytes] = []
    for seq, piece in reversed(pieces):
        out += streams.feed(KEY, seq, 0, piece, 0)
    assert out == [INVITE, RINGING, OK]
    assert streams.feed(KEY, at(len(data), isn), 0, ACK, 0) == [ACK]


def test_stream_seen_midway_resyncs_on_next_message() -> None:
    streams = TcpSipStreams()
    data = INVITE + RINGING
    assert streams.feed(KEY, 5_000_000, 0, data[200:], 0) == [RINGING]
    assert streams.counters["discarded_bytes"] == len(INVITE) - 200
    assert streams.feed(KEY, 5_000_000 + len(data) - 200, 0, OK, 0) == [OK]


def test_stream_seen_midway_at_a_message_boundary() -> None:
    streams = TcpSipStreams()
    assert streams.feed(KEY, 42, 0, OK + ACK, 0) == [OK, ACK]
    assert streams.counters["discarded_bytes"] == 0


def test_pure_ack_of_unknown_stream_creates_nothing() -> None:
    streams = TcpSipStreams()
    assert streams.feed(KEY, 1, 0, b"", 0) == []
    assert streams.feed(KEY, 1, FIN, b"", 0) == []
    assert len(streams) == 0


def test_syn_with_data_and_syn_retransmission() -> None:
    streams = TcpSipStreams()
    assert streams.feed(KEY, ISN, SYN, INVITE[:10], 0) == []  # TCP Fast Open data
    assert streams.feed(KEY, ISN, SYN, b"", 1) == []  # retransmitted SYN keeps the stream
    assert streams.feed(KEY, at(10), 0, INVITE[10:], 2) == [INVITE]
    assert streams.counters["streams_opened"] == 1


def test_new_syn_on_same_ports_starts_a_new_stream() -> None:
    streams = opened()
    assert streams.feed(KEY, at(0), 0, INVITE[:50], 0) == []
    assert streams.feed(KEY, 9_999, SYN, b"", 1) == []
    assert streams.feed(KEY, 10_000, 0, OK, 2) == [OK]
    assert streams.counters["streams_opened"] == 2


def test_fin_closes_after_last_byte_even_out_of_order() -> None:
    streams = opened()
    assert streams.feed(KEY, at(len(INVITE)), FIN, OK, 0) == []
    assert len(streams) == 1  # the FIN waits for the hole
    assert streams.feed(KEY, at(0), 0, INVITE, 1) == [INVITE, OK]
    assert len(streams) == 0
    assert streams.counters["streams_closed"] == 1
    assert streams.counters["incomplete_at_close"] == 0


def test_fin_with_incomplete_message_is_counted() -> None:
    streams = opened()
    assert streams.feed(KEY, at(0), FIN, INVITE[:-1], 0) == []
    assert len(streams) == 0
    assert streams.counters["incomplete_at_close"] == 1
    assert streams.counters["discarded_bytes"] == len(INVITE) - 1


def test_rst_drops_the_stream() -> None:
    streams = opened()
    streams.feed(KEY, at(0), 0, INVITE[:10], 0)
    assert streams.feed(KEY, at(10), RST, b"", 1) == []
    assert len(streams) == 0
    assert streams.counters["streams_reset"] == 1
    assert streams.buffered_bytes == 0


def test_bad_start_line_resyncs() -> None:
    streams = opened()
    junk = b"HELLO WORLD\r\nfoo: bar\r\n\r\n"
    assert streams.feed(KEY, at(0), 0, junk + OK, 0) == [OK]
    assert streams.counters["bad_start_line"] == 1
    assert streams.counters["discarded_bytes"] == len(junk)


def test_binary_garbage_is_not_buffered_without_bound() -> None:
    streams = opened()
    garbage = bytes(range(256)).replace(b"\n", b"") * 100  # no line end at all
    assert streams.feed(KEY, at(0), 0, garbage, 0) == []
    assert streams.counters["bad_start_line"] == 1
    assert streams.buffered_bytes == 0


def test_bad_content_length_resyncs() -> None:
    streams = opened()
    bad = b"BYE sip:a@b SIP/2.0\r\nContent-Length: x\r\n\r\n"
    assert streams.feed(KEY, at(0), 0, bad + OK, 0) == [OK]
    assert streams.counters["bad_content_length"] == 1


def test_missing_content_length_means_empty_body() -> None:
    streams = opened()
    msg = b"ACK sip:a@b SIP/2.0\r\nCall-ID: x\r\n\r\n"
    assert streams.feed(KEY, at(0), 0, msg + RINGING, 0) == [msg, RINGING]
    assert streams.counters["missing_content_length"] == 1


def test_lf_only_messages_are_framed() -> None:
    streams = opened()
    msg = b"ACK sip:a@b SIP/2.0\nCall-ID: x\nl: 2\n\nhi"
    assert streams.feed(KEY, at(0), 0, msg + ACK, 0) == [msg, ACK]


def test_oversize_declared_body_resyncs() -> None:
    streams = opened(max_message=4096)
    big = b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000
    assert streams.feed(KEY, at(0), 0, big[:3000], 0) == []
    assert streams.feed(KEY, at(3000), 0, big[3000:] + ACK, 0) == [ACK]
    assert streams.counters["oversize"] == 1
    assert streams.counters["discarded_bytes"] == len(big)
    assert streams.counters["bad_start_line"] == 0


def test_oversize_head_resyncs() -> None:
    streams = opened(max_message=4096)
    head = b"MESSAGE sip:a@b SIP/2.0\r\n" + b"X-Pad: yyyyyyyy\r\n" * 300
    assert streams.feed(KEY, at(0), 0, head, 0) == []
    assert streams.counters["oversize"] == 1
    assert streams.feed(KEY, at(len(head)), 0, b"\r\n" + OK, 0) == [OK]


def test_lru_eviction_at_max_streams() -> None:
    streams = TcpSipStreams(max_streams=2)
    keys = [(bytes(4), port, bytes(4), 5060) for port in (1, 2, 3)]
    streams.feed(keys[0], 1, SYN, b"", 0)
    streams.feed(keys[1], 1, SYN, b"", 1)
    streams.feed(keys[0], 2, 0, INVITE[:10], 2)  # keys[0] is now the most recent
    streams.feed(keys[2], 1, SYN, b"", 3)
    assert streams.counters["streams_evicted"] == 1
    assert streams.feed(keys[0], 12, 0, INVITE[10:], 4) == [INVITE]
    assert len(streams) == 2


def test_total_memory_cap_evicts_least_recent() -> None:
    streams = TcpSipStreams(max_total_bytes=1500)
    first: StreamKey = (bytes(4), 1, bytes(4), 5060)
    data = INVITE + OK + RINGING + ACK  # 764 + 532 + 309 + 273 bytes
    streams.feed(first, 1, SYN, b"", 0)
    streams.feed(first, 2, 0, data[:700], 0)
    streams.feed(KEY, 1, SYN, b"", 1)
    streams.feed(KEY, 2, 0, data[:700], 1)
    assert streams.buffered_bytes == 1400
    assert streams.feed(KEY, 702, 0, data[700:1000], 1) == [INVITE]  # 236 bytes of OK left
    assert streams.buffered_bytes == 936
    assert streams.counters["evicted_for_memory"] == 0
    assert streams.feed(KEY, 1102, 0, data[1100:1700], 1) == []  # 600 held: 1536 in all
    assert streams.counters["evicted_for_memory"] == 1
    assert len(streams) == 1
    assert streams.buffered_bytes == 836
    assert streams.feed(KEY, 1002, 0, data[1000:1100], 1) == [OK, RINGING]


def test_idle_streams_expire() -> None:
    streams = opened(idle_timeout_ns=10 * SECOND)
    streams.feed(KEY, at(0), 0, INVITE[:10], 0)
    streams.feed(OTHER, 1, SYN, b"", 5 * SECOND)
    assert streams.expire(10 * SECOND) == []
    assert len(streams) == 1
    assert streams.counters["streams_expired"] == 1
    assert streams.counters["discarded_bytes"] == 10
    assert streams.expire(15 * SECOND) == []
    assert len(streams) == 0
    assert streams.buffered_bytes == 0


def test_buffered_bytes_tracks_holdings() -> None:
    streams = opened()
    streams.feed(KEY, at(0), 0, INVITE[:100], 0)
    streams.feed(KEY, at(200), 0, INVITE[200:300], 0)
    assert streams.buffered_bytes == 200
    streams.feed(KEY, at(100), 0, INVITE[100:], 0)
    assert streams.buffered_bytes == 0


# -- any segmentation, any order, with duplicates, gives the same messages -----------------


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[int, list[bytes], list[tuple[int, bytes]]]:
    """(ISN, the messages, segments as (stream offset, bytes) in delivery order)."""
    messages = draw(st.lists(st.sampled_from(STREAM_MESSAGES), min_size=1, max_size=5))
    keepalive = st.sampled_from([b"", b"", b"\r\n", b"\r\n\r\n"])
    data = b"".join(draw(keepalive) + m for m in messages)
    cuts = sorted(draw(st.sets(st.integers(1, len(data) - 1), max_size=30)))
    bounds = [0, *cuts, len(data)]
    segments = [(a, data[a:b]) for a, b in itertools.pairwise(bounds)]
    extra = draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(1, 400))))
    segments += [(a, data[a : a + n]) for a, n in extra]  # retransmits, other boundaries
    order = draw(st.permutations(segments))
    isn = draw(st.one_of(st.integers(0, MASK), st.integers(MASK - 2000, MASK)))
    return isn, messages, order


@settings(max_examples=300, deadline=None)
@given(deliveries())
def test_any_segmentation_and_order_gives_the_same_messages(
    case: tuple[int, list[bytes], list[tuple[int, bytes]]],
) -> None:
    isn, messages, segments = case
    streams = opened(isn=isn)
    out: list[bytes] = []
    for offset, piece in segments:
        out += streams.feed(KEY, at(offset, isn), 0, piece, 0)
    assert out == messages
    assert streams.counters["gaps"] == 0
    assert streams.counters["discarded_bytes"] == 0
    assert streams.buffered_bytes == 0


@settings(max_examples=100, deadline=None)
@given(deliveries(), st.integers(0, MASK))
def test_without_syn_first_segment_defines_the_start(
    case: tuple[int, list[bytes], list[tuple[int, bytes]]], isn: int
) -> None:
    _, messages, segments = case
    streams = TcpSipStreams()
    first = min(segments, key=lambda seg: seg[0])
    out = streams.feed(KEY, at(0, isn), 0, first[1], 0)
    for offset, piece in segments:
        out += streams.feed(KEY, at(offset, isn), 0, piece, 0)
    assert out == messages


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=3000), st.lists(st.integers(0, 3000), max_size=10))
def test_arbitrary_bytes_never_raise_and_stay_bounded(data: bytes, cuts: list[int]) -> None:
    streams = opened(max_message=1024)
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    for a, b in itertools.pairwise(bounds):
        for msg in streams.feed(KEY, at(a), 0, data[a:b], 0):
            assert len(msg) <= 1024
    assert streams.buffered_bytes <= 1024 + len(data)


def test_samples_round_trip_through_the_framer() -> None:
    streams = opened()
    data = b"".join(STREAM_MESSAGES)
    assert streams.feed(KEY, at(0), 0, data, 0) == list(STREAM_MESSAGES)
    for raw in (COMPACT_BYE, FOLDED_OPTIONS):
        assert parse_sip(raw).call_id


def test_fin_behind_a_hole_closes_when_expire_skips_it() -> None:
    streams = opened(gap_timeout_ns=SECOND)
    assert streams.feed(KEY, at(len(INVITE)), FIN, OK, 0) == []
    assert streams.expire(SECOND) == [(KEY, OK)]
    assert len(streams) == 0
    assert streams.counters["streams_closed"] == 1
    assert streams.counters["gap_bytes"] == len(INVITE)
    assert streams.buffered_bytes == 0


def test_rst_and_new_syn_count_what_was_held() -> None:
    streams = opened()
    streams.feed(KEY, at(0), 0, INVITE[:40], 0)
    streams.feed(KEY, 5, SYN, b"", 1)  # a new connection on the same ports
    assert streams.counters["discarded_bytes"] == 40
    streams.feed(KEY, 6, 0, INVITE[:30], 2)
    streams.feed(KEY, 36, RST, b"", 3)
    assert streams.counters["discarded_bytes"] == 70
    assert (len(streams), streams.buffered_bytes) == (0, 0)
