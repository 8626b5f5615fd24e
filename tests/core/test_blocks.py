"""A block of frames (`receive_block`, numpy fast path) must have exactly the effect of its
frames fed one by one (`receive_frame`): the same events in the same order and the same
counters, however the frames are cut into blocks and whatever they hold."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recorder.core.events import Event
from recorder.core.limits import CoreLimits
from recorder.core.model import Frame, FrameBlock
from recorder.core.pipeline import RecorderCore
from recorder.runtime.sources import CaptureFile
from tests.builders import CallBuilder, fast_udp, rtp, sip
from tests.core.test_batch_equivalence import build, packet_ops
from tests.core.test_timeline_rules import MS, T0

REPO = Path(__file__).resolve().parents[2]


def outcome(core: RecorderCore) -> tuple[list[Event], dict[str, object]]:
    core.close()
    return list(core.events()), dataclasses.asdict(core.stats)


def one_by_one(frames: list[Frame], limits: CoreLimits | None = None) -> tuple:
    core = RecorderCore(limits)
    for frame in frames:
        core.receive_frame(frame)
    return outcome(core)


def in_blocks(frames: list[Frame], cuts: list[int], limits: CoreLimits | None = None) -> tuple:
    """Blocks cut at `cuts` (and wherever the link type changes)."""
    core = RecorderCore(limits)
    edges = sorted({0, len(frames), *(c for c in cuts if 0 < c < len(frames))})
    for a, b in itertools.pairwise(edges):
        run: list[Frame] = []
        for frame in frames[a:b]:
            if run and frame.linktype != run[0].linktype:
                core.receive_block(FrameBlock.of(run[0].linktype, [(f.ts_ns, f.data) for f in run]))
                run = []
            run.append(frame)
        if run:
            core.receive_block(FrameBlock.of(run[0].linktype, [(f.ts_ns, f.data) for f in run]))
    return outcome(core)


def noise(kind: str, t: int, n: int) -> Frame:
    """Frames around the calls that must take the slow path (or be dropped) in a block."""
    if kind == "garbage":
        return Frame(t, 1, bytes(range(n % 60)))
    if kind == "unknown_udp":
        return Frame(t, 1, fast_udp("10.9.9.9", 4000 + n, "10.9.9.8", 4002, b"\x80" * 40))
    if kind == "nat":  # a caller behind NAT: its address is not the SDP one, its ports are
        return Frame(
            t,
            1,
            fast_udp("192.0.2.7", 17000, "10.2.0.2", 17002, rtp(0, n, n * 160, 77, b"\xff" * 160)),
        )
    if kind == "unexplained":  # one flow on the calls' SDP ports: latched once it is sure
        payload = rtp(0, n, n * 160, 78, b"\x7f" * 160) if n % 7 else b"\x00" * 20
        return Frame(t, 1, fast_udp("192.0.2.9", 40000, "192.0.2.10", 50000, payload))
    if kind == "unexplained_elsewhere":  # a flow no call ever explains
        return Frame(t, 1, fast_udp("192.0.2.11", 6000, "192.0.2.12", 6002, rtp(8, n, 0, 9, b"")))
    if kind == "bad_udp_length":
        frame = bytearray(fast_udp("10.1.0.1", 17000, "10.2.0.2", 17002, b"\x80" * 30))
        frame[38:40] = b"\xff\xff"
        return Frame(t, 1, bytes(frame))
    if kind == "fragment":
        frame = bytearray(fast_udp("10.1.0.1", 17000, "10.2.0.2", 17002, b"\x80" * 30))
        frame[20] = 0x20  # more fragments
        return Frame(t, 1, bytes(frame))
    if kind == "sll":
        return Frame(t, 113, b"\x00" * 16 + fast_udp("10.1.0.1", 1, "10.2.0.2", 2, b"x")[14:])
    return Frame(t, 1, b"\x02" * 12 + b"\x86\xdd" + b"\x60" + b"\x00" * 50)  # IPv6 stub


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    calls=st.lists(
        st.tuples(
            packet_ops, st.sampled_from([0, 8]), st.sampled_from([10, 20, 30]), st.booleans()
        ),
        min_size=1,
        max_size=4,
    ),
    noises=st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "garbage",
                    "unknown_udp",
                    "nat",
                    "unexplained",
                    "unexplained_elsewhere",
                    "bad_udp_length",
                    "fragment",
                    "sll",
                    "ipv6",
                ]
            ),
            st.integers(0, 4000),
            st.integers(0, 1000),
        ),
        max_size=80,
    ),
    backwards=st.lists(st.integers(0, 10_000), max_size=5),
    cuts=st.lists(st.integers(0, 3000), max_size=8),
    link=st.sampled_from(["ethernet", "vlan", "sll", "mixed"]),
)
def test_blocks_equal_frames_one_by_one(
    calls: list, noises: list, backwards: list[int], cuts: list[int], link: str
) -> None:
    frames: list[Frame] = []
    for n, (ops, codec, ptime, second) in enumerate(calls):
        frames += build(ops, codec, ptime, second, n)
    frames.sort(key=lambda f: f.ts_ns)
    if frames:
        start = frames[0].ts_ns
        frames += [noise(kind, start + at * MS, arg) for kind, at, arg in noises]
        frames.sort(key=lambda f: f.ts_ns)
    for b in backwards:  # capture clocks step back: timers must not run twice or late
        if frames:
            k = b % len(frames)
            frames[k] = frames[k]._replace(ts_ns=frames[k].ts_ns - 3_000 * MS)
    frames = [relink(f, link, k) for k, f in enumerate(frames)]
    assert in_blocks(frames, cuts) == one_by_one(frames)


def relink(frame: Frame, link: str, k: int) -> Frame:
    """An Ethernet frame behind one 802.1Q tag, or as Linux cooked capture (SLL)."""
    if frame.linktype != 1 or link == "ethernet" or (link == "mixed" and k % 3):
        return frame
    data = frame.data
    if link == "sll":
        return Frame(frame.ts_ns, 113, b"\0\0\0\1\0\6" + data[6:12] + b"\0\0" + data[12:])
    return Frame(frame.ts_ns, 1, data[:12] + b"\x81\x00\x00\x07" + data[12:])


def _unexplained_stream(start_ns: int, count: int, link: str) -> list[Frame]:
    """RTP from hosts no SIP named, onto the ports every test call offers (40000, 50000)."""
    return [
        relink(
            Frame(
                start_ns + i * 20 * MS,
                1,
                fast_udp(
                    "192.0.2.9", 40000, "192.0.2.10", 50000, rtp(0, i, 160 * i, 78, bytes(160))
                ),
            ),
            link,
            i,
        )
        for i in range(count)
    ]


def _unsignalled(stats: dict) -> int:
    # dataclasses.asdict rebuilds the drops Counter from its (key, count) pairs as keys.
    return dict(pair for pair, _ in stats["drops"].items()).get(("rtp", "unsignalled"), 0)


def _judged_per_frame(monkeypatch: pytest.MonkeyPatch, frames: list[Frame]) -> tuple:
    """Outcome in blocks of 256 frames, and how many frames the per-frame path found
    unexplained (a flow is known as unexplained from the block after its first packet)."""
    from recorder.core.orphans import OrphanStreams

    seen = []
    note = OrphanStreams.note
    monkeypatch.setattr(
        OrphanStreams, "note", lambda self, dg, now: seen.append(now) or note(self, dg, now)
    )
    result = in_blocks(frames, list(range(0, len(frames), 256)))
    monkeypatch.setattr(OrphanStreams, "note", note)
    return result, len(seen)


@pytest.mark.parametrize("link", ["ethernet", "vlan", "sll"])
def test_unexplained_rtp_is_counted_in_place_until_a_call_can_claim_it(
    monkeypatch: pytest.MonkeyPatch, link: str
) -> None:
    """Before the answer only the caller's port is known: the stream is unexplained, and a
    block counts its packets without the per-frame path. The answer brings the callee's
    port: from then on the stream's two ports are the call's, and it is latched."""
    call = CallBuilder(call_id="claims@test")
    call.invite(T0)
    call.answer(T0 + 8000 * MS)
    for i in range(450):
        call.rtp_from_caller(T0 + 1000 * MS + i * 20 * MS, rtp(0, i, 160 * i, 5, bytes(160)))
    frames = [relink(f, link, k) for k, f in enumerate(call.frames)]
    frames = sorted(frames + _unexplained_stream(T0 + 110 * MS, 495, link), key=lambda f: f.ts_ns)
    (events, stats), judged = _judged_per_frame(monkeypatch, frames)
    assert (events, stats) == one_by_one(frames)
    assert stats["latched"] == 1
    assert _unsignalled(stats) == 395  # 110 ms to 8 s, then latched
    assert judged < 395 // 2  # the first block's; the rest were counted in place


def test_unexplained_rtp_older_than_the_call_on_its_ports_stays_unexplained(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stream flowing 5 s before a call offers its two ports is not taken by that call
    (test_shared_ports), in blocks as one by one; and counted in place again after the
    answer changed its ports."""
    call = CallBuilder(call_id="younger@test")
    call.invite(T0)
    call.answer(T0 + 500 * MS)
    for i in range(200):
        call.rtp_from_caller(T0 + 600 * MS + i * 20 * MS, rtp(0, i, 160 * i, 5, bytes(160)))
    frames = sorted(
        call.frames + _unexplained_stream(T0 - 5000 * MS, 500, "ethernet"), key=lambda f: f.ts_ns
    )
    (events, stats), judged = _judged_per_frame(monkeypatch, frames)
    assert (events, stats) == one_by_one(frames)
    assert stats["latched"] == 0
    assert _unsignalled(stats) == 500
    assert judged < 100  # 41 here: per frame after each port change, until the next lookup


def test_unexplained_rtp_is_claimed_when_a_call_sharing_its_ports_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two calls offer the same ports: the stream is ambiguous, unexplained. When one of
    them has ended (BYE, then the sweep), it is the other's."""
    frames: list[Frame] = []
    for n, bye_at in enumerate((None, 3000)):
        call = CallBuilder(
            call_id=f"shared-{n}@test", caller_ip=f"10.0.{n}.1", callee_ip=f"10.0.{n}.2"
        )
        call.invite(T0 + n * MS)
        call.answer(T0 + 500 * MS + n * MS)
        for i in range(300 if bye_at is None else 115):  # the second stops before its BYE
            call.rtp_from_caller(T0 + 600 * MS + i * 20 * MS, rtp(0, i, 160 * i, 5 + n, bytes(160)))
        if bye_at is not None:
            call.bye(T0 + bye_at * MS)
        frames += call.frames
    frames = sorted(
        frames + _unexplained_stream(T0 + 700 * MS, 300, "ethernet"), key=lambda f: f.ts_ns
    )
    (events, stats), judged = _judged_per_frame(monkeypatch, frames)
    assert (events, stats) == one_by_one(frames)
    assert stats["latched"] == 1
    assert 100 < _unsignalled(stats) < 300
    assert judged < 100


def test_unexplained_rtp_is_claimed_once_its_address_sends_sip(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two calls offer the same ports (ambiguous); the stream comes from an address no SIP
    came from, until the first caller's SIP comes from there (a new NAT binding): then
    that caller's port with that address is the first call's, and the stream is latched."""
    moved = "198.51.9.99"
    frames: list[Frame] = []
    for n in range(2):
        call = CallBuilder(
            call_id=f"moves-{n}@test", caller_ip=f"10.0.{n}.1", callee_ip=f"10.0.{n}.2"
        )
        call.invite(T0 + n * MS)
        call.answer(T0 + 500 * MS + n * MS)
        for i in range(400):
            call.rtp_from_caller(T0 + 600 * MS + i * 20 * MS, rtp(0, i, 160 * i, 5 + n, bytes(160)))
        if n == 0:
            info = sip("INFO sip:b@example.com SIP/2.0", [*call._dialog(True), ("CSeq", "2 INFO")])
            call.add(T0 + 5000 * MS, fast_udp(moved, 5060, call.callee_ip, 5060, info))
        frames += call.frames
    stream = [
        Frame(
            T0 + 610 * MS + i * 20 * MS,
            1,
            fast_udp(moved, 40000, "203.0.200.1", 50000, rtp(0, i, 160 * i, 78, bytes(160))),
        )
        for i in range(350)
    ]
    frames = sorted(frames + stream, key=lambda f: f.ts_ns)
    (events, stats), judged = _judged_per_frame(monkeypatch, frames)
    assert (events, stats) == one_by_one(frames)
    assert stats["latched"] == 1
    assert _unsignalled(stats) == 220  # 610 ms to 5 s, then latched
    assert judged < 220 // 2


def test_an_unexplained_flow_pushed_out_of_its_table_is_a_new_flow_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With room for two unexplained flows, a third pushes the oldest out in the middle of
    a block: that flow's next packets start a new entry, as one by one, not a count on the
    entry that is gone."""
    from recorder.core.orphans import OrphanStreams

    init = OrphanStreams.__init__
    monkeypatch.setattr(
        OrphanStreams, "__init__", lambda self, **kw: init(self, **{**kw, "max_flows": 2})
    )

    def packet(host: int, i: int) -> Frame:
        data = rtp(0, i, 160 * i, host, bytes(160))
        return Frame(T0 + i * MS, 1, fast_udp(f"192.0.2.{host}", 7000, "192.0.2.99", 7002, data))

    frames = [packet(1, 0), packet(2, 1)]
    frames += [packet(1 + i % 2, 2 + i) for i in range(20)]  # both known: counted in place
    frames += [packet(3, 22)]  # pushes flow 1 out
    frames += [packet(1 + i % 2, 23 + i) for i in range(20)]
    frames = [f._replace(ts_ns=T0 + k * MS) for k, f in enumerate(frames)]
    blocks = in_blocks(frames, [2])
    assert blocks == one_by_one(frames)
    reported = {e.call_id: e for e in blocks[0]}
    again = reported["rtp:192.0.2.1:7000 -> 192.0.2.99:7002"]  # its new entry
    assert (again.first_ns, again.reason.split(",")[0]) == (T0 + 23 * MS, "10 RTP packets")


def test_many_calls_in_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """A block long enough for the window to grow, sweeps inside it, calls ending in it;
    its headers gathered in many slices."""
    import recorder.core.blocks as blocks

    monkeypatch.setattr(blocks, "_GATHER", 97)
    frames: list[Frame] = []
    for n in range(12):
        ops = (
            [("ok", 0)] * (150 + 7 * n) + [("dup", 0), ("swap", 0), ("late", 2)] + [("ok", 0)] * 40
        )
        frames += build(ops, [0, 8][n % 2], [10, 20, 30][n % 3], True, n)
    frames.sort(key=lambda f: f.ts_ns)
    events, stats = in_blocks(frames, [])
    assert (events, stats) == one_by_one(frames)
    assert sum(1 for e in events if type(e).__name__ == "RecordingEnded") == 12


def test_a_block_of_empty_frames() -> None:
    """Records of zero bytes (a pcap may hold them): no header to read, nothing to crash on."""
    frames = [Frame(10**18 + k, 1, b"") for k in range(40)]
    assert in_blocks(frames, []) == one_by_one(frames)


@pytest.mark.parametrize("link", ["vlan", "sll"])
def test_tagged_and_cooked_frames_take_the_block_fast_path(
    link: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """802.1Q and SLL media go through the block path (not one by one) and give the same."""
    import recorder.core.blocks as blocks

    frames = sorted(build([("ok", 0)] * 300, 0, 20, True), key=lambda f: f.ts_ns)
    frames = [relink(f, link, k) for k, f in enumerate(frames)]
    queued: list[int] = []
    real_queue = blocks._queue

    def spy(
        core: RecorderCore, block: FrameBlock, c: object, codes: object, a: int, b: int
    ) -> None:
        queued.append(b - a)
        real_queue(core, block, c, codes, a, b)  # type: ignore[arg-type]

    monkeypatch.setattr(blocks, "_queue", spy)
    assert in_blocks(frames, []) == one_by_one(frames)
    assert sum(queued) >= 550  # nearly all of the 600 media frames


def test_flood_flushes_at_the_same_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    """A side whose queue fills between sweeps is flushed at the frame that fills it."""
    import recorder.core.blocks as blocks
    import recorder.core.media_path as media_path
    import recorder.core.pipeline as pipeline

    for module in (blocks, media_path, pipeline):
        monkeypatch.setattr(module, "MAX_PENDING", 20)
    flushes: list[int] = []
    real_flush = media_path.MediaPath.flush

    def counted(self: media_path.MediaPath, call: object, now_ns: int) -> None:
        flushes.append(now_ns)
        real_flush(self, call, now_ns)  # type: ignore[arg-type]

    monkeypatch.setattr(media_path.MediaPath, "flush", counted)
    ops = [("ok", 0)] * 200
    frames = sorted(build(ops, 0, 10, True, 0) + build(ops, 8, 10, True, 1), key=lambda f: f.ts_ns)
    # Squeeze the media into a tenth of a second: many packets per sweep.
    first = frames[0].ts_ns
    frames = [f._replace(ts_ns=first + (f.ts_ns - first) // 20) for f in frames]
    events, stats = in_blocks(frames, [])
    in_block_flushes = sorted(flushes)
    flushes.clear()
    expected_events, expected_stats = one_by_one(frames)
    assert len(flushes) > 10  # the queues did fill between sweeps
    assert in_block_flushes == sorted(flushes)  # at the same frames' times
    assert stats == expected_stats
    # Each call's events are the same; between calls, a flush comes after a whole group.
    for serial in (1, 2):
        mine = [e for e in events if getattr(e, "serial", None) == serial]
        assert mine == [e for e in expected_events if getattr(e, "serial", None) == serial]
    assert sorted(map(repr, events)) == sorted(map(repr, expected_events))


@pytest.mark.parametrize("pcap", sorted((REPO / "pcaps").glob("*.pcap*")), ids=lambda p: p.name)
def test_shipped_captures_in_blocks(pcap: Path) -> None:
    frames = list(CaptureFile(pcap))
    assert in_blocks(frames, [len(frames) // 3]) == one_by_one(frames)


def test_shared_corpus_in_blocks(shared_pcaps: Path) -> None:
    """Every capture of the corpus: the reader's own blocks give what its frames give."""
    paths = sorted(p for p in shared_pcaps.glob("*") if p.suffix in (".pcap", ".pcapng", ".cap"))
    assert paths
    for path in paths:
        try:
            capture = CaptureFile(path)
        except Exception:
            continue  # not a capture (the corpus outcome test covers those)
        frames = list(capture)
        core = RecorderCore()
        for block in CaptureFile(path).blocks():
            core.receive_block(block)
        assert outcome(core) == one_by_one(frames), path.name


@settings(max_examples=300, deadline=None)
@given(
    runs=st.lists(st.tuples(st.integers(1, 300), st.integers(0, 260)), min_size=1, max_size=12),
    tail=st.integers(0, 60),
)
def test_headers_from_strided_runs_equal_the_gathered_ones(
    runs: list[tuple[int, int]], tail: int
) -> None:
    """Runs of evenly spaced starts (any spacing, overlapping headers included) read
    through strided views give exactly the bytes of an index gather, up to the buffer's
    end (where the last byte stands in)."""
    import numpy as np

    from recorder.core.blocks import _HEADER, gather_headers

    starts, at = [], 0
    for count, spacing in runs:
        for _ in range(count):
            starts.append(at)
            at += spacing
    size = max(starts) + tail + 1
    buf = np.frombuffer(bytes((i * 7 + i // 251) % 256 for i in range(size)), dtype=np.uint8)
    first = np.array(starts, dtype=np.int64)
    index = np.minimum(first[:, None] + _HEADER, size - 1)
    np.testing.assert_array_equal(gather_headers(buf, first), buf[index])
