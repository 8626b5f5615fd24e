"""Hostile traffic: memory stays bounded by the core's caps (evictions counted), nothing
raises, and no call already being recorded is lost to a flood."""

from __future__ import annotations

import os
import struct

import numpy as np

from recorder.core.events import CallNotRecorded, RecordingEnded
from recorder.core.limits import CoreLimits
from recorder.core.media_path import MAX_PENDING
from recorder.core.model import Frame
from recorder.core.pipeline import RecorderCore
from tests.builders import CallBuilder, fast_udp, rtp
from tests.core.test_timeline_rules import CALLER_START, MS, T0, base_call, expected, full


def test_endless_invites_are_capped_and_the_recorded_call_survives() -> None:
    recorded = base_call()
    frames = list(recorded.frames)
    for n in range(3000):  # INVITEs that are never answered nor ended, one per ms
        flood = CallBuilder(call_id=f"flood-{n}", caller_ip=f"10.9.{n // 250}.{n % 250 + 1}")
        flood.invite(T0 + 600 * MS + n * MS // 3)
        frames += flood.frames
    core = RecorderCore(CoreLimits(max_calls=500))
    for f in sorted(frames, key=lambda f: f.ts_ns):
        core.receive_frame(f)
        assert len(core.calls) <= 500
    core.close()
    events = list(core.events())
    assert core.stats.calls_evicted >= 2500
    (ended,) = [e for e in events if isinstance(e, RecordingEnded)]
    assert ended.reason == "bye"  # the answered, recording call was never evicted
    assert sum(isinstance(e, CallNotRecorded) for e in events) == 3000


def test_flood_of_unmatched_rtp_is_bounded() -> None:
    core = RecorderCore()
    for n in range(30_000):  # a new RTP-looking flow per packet
        data = fast_udp(
            "10.8.0.1",
            1024 + n % 60000,
            "10.8.0.2",
            2000 + n // 60000,
            rtp(0, n, 160 * n, n, bytes(160)),
        )
        core.receive_frame(Frame(T0 + n * 1000, 1, data))
    assert len(core.orphans._flows) <= 10_000
    assert core.orphans.evicted >= 20_000
    assert core.stats.drops[("rtp", "unsignalled")] == 30_000


def test_flood_onto_a_known_endpoint_is_placed_in_bounded_queues() -> None:
    call = base_call(caller_packets=range(0), callee_packets=range(0))
    core = RecorderCore()
    for f in call.sorted_frames()[:3]:
        core.receive_frame(f)
    for n in range(3 * MAX_PENDING):  # all within one millisecond: no sweep in between
        data = fast_udp(
            call.caller_ip,
            call.caller_rtp,
            call.callee_ip,
            call.callee_rtp,
            rtp(0, n, 160 * n, 0xAAAA, os.urandom(160)),
        )
        core.receive_frame(Frame(CALLER_START + n, 1, data))
        active = next(iter(core.calls))
        assert len(active.pending_times[0]) < MAX_PENDING


def test_garbage_never_raises() -> None:
    core = RecorderCore()
    rng = np.random.default_rng(7)
    for n in range(5000):
        size = int(rng.integers(0, 300))
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        if n % 3 == 0 and size > 14:  # make it look like IPv4/UDP more often
            data = data[:12] + b"\x08\x00\x45" + data[15:]
        core.receive_frame(Frame(T0 + n, [1, 113, 101, 0, 276][n % 5], data))
    core.close()
    assert core.stats.frames == 5000


def test_a_loss_burst_leaves_exact_silence() -> None:
    result_frames = base_call(
        caller_packets=[i for i in range(50) if not 10 <= i < 30]
    ).sorted_frames()
    from tests.core.test_timeline_rules import run

    result = run(result_frames)
    np.testing.assert_array_equal(
        result.pcm, expected(full(0, skip=tuple(range(10, 30))), full(1), 8800)
    )
    _ = struct
