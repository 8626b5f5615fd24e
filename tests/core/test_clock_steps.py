"""A step of the system clock in the middle of live calls (core/clock.py): calls go on,
every packet's audio is where it was, and wall-clock times stay wall-clock times.

Without the stepped clock, the same captures lost audio: stepped back, everything after
the step fell behind what was written (10 of 20 s kept, with no drop counted); stepped
forward past the idle time-out, the call ended and the rest of its RTP was dropped."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pytest

from recorder.core.clock import SteppedClock
from recorder.core.events import (
    Event,
    RecordingAudio,
    RecordingEnded,
    RecordingMarker,
    RecordingStarted,
)
from recorder.core.model import LINKTYPE_ETHERNET, Frame, FrameBlock
from recorder.core.pipeline import RecorderCore
from tests.builders import CallBuilder, rtp

NS = 1_000_000_000
T0 = 1_700_000_000 * NS
HOUR = 3600 * NS
BLOCK = 100  # frames a block, as a live ring hands them over


def call_frames(builder: CallBuilder, start_ns: int, packets: int, tone: int) -> list[Frame]:
    """A call: INVITE, 200/ACK, `packets` 20 ms of PCMU each way (distinct bytes per
    packet, so that a misplaced packet shows), BYE."""
    builder.invite(start_ns)
    builder.answer(start_ns + NS // 10)
    first = start_ns + NS // 5
    for i in range(packets):
        t = first + i * 20_000_000
        builder.rtp_from_caller(t, rtp(0, i, i * 160, 0x1111, bytes([tone + i % 50]) * 160))
        builder.rtp_from_callee(t + 1000, rtp(0, i, i * 160, 0x2222, bytes([0x80 + i % 50]) * 160))
    builder.bye(first + packets * 20_000_000 + NS // 10)
    return builder.sorted_frames()


@dataclass
class Outcome:
    pcm: dict[int, bytes] = field(default_factory=dict)
    starts: dict[int, int] = field(default_factory=dict)
    ends: dict[int, int] = field(default_factory=dict)
    markers: list[RecordingMarker] = field(default_factory=list)
    drops: dict[tuple[str, str], int] = field(default_factory=dict)


def run(
    frames: list[Frame],
    clock: SteppedClock | None = None,
    steps: dict[int, int] | None = None,
    pause_at: int | None = None,
) -> Outcome:
    """Feed `frames` in blocks; before block b, `clock.stepped(steps[b])` (what the live
    shell does when it notices a step before reading a block off the ring)."""
    core = RecorderCore()
    pcm: dict[int, bytearray] = defaultdict(bytearray)
    out = Outcome()

    def take(event: Event) -> None:
        if clock is not None:
            event = clock.event(event)
        if isinstance(event, RecordingAudio):
            pcm[event.serial] += event.pcm
        elif isinstance(event, RecordingStarted):
            out.starts[event.serial] = event.start_ns
        elif isinstance(event, RecordingEnded):
            out.ends[event.serial] = event.end_ns
        elif isinstance(event, RecordingMarker):
            out.markers.append(event)

    for b, at in enumerate(range(0, len(frames), BLOCK)):
        if clock is not None and steps and b in steps:
            clock.stepped(steps[b])
        block = block_of(frames[at : at + BLOCK])
        if clock is not None:
            block = clock.block(block, core.now_ns)
        core.receive_block(block)
        if pause_at is not None and at <= pause_at < at + BLOCK:
            serial = core.find_calls(call_id=CallBuilder.call_id)[0]
            core.pause(serial, core.now_ns, "test")
            core.resume(serial, core.now_ns + NS, "test")
        for event in core.events():
            take(event)
    core.close()
    for event in core.events():
        take(event)
    out.pcm = {serial: bytes(data) for serial, data in pcm.items()}
    out.drops = dict(core.stats.drops)
    return out


def block_of(frames: list[Frame]) -> FrameBlock:
    return FrameBlock.of(LINKTYPE_ETHERNET, ((f.ts_ns, f.data) for f in frames))


def stepped_at(frames: list[Frame], k: int, delta: int) -> list[Frame]:
    """The frames as a clock stepped by `delta` just before frame k stamps them."""
    return [*frames[:k], *(Frame(f.ts_ns + delta, f.linktype, f.data) for f in frames[k:])]


CALL = call_frames(CallBuilder(), T0, 1000, 0x10)  # 20 s
SWITCH = len(CALL) // 2 + 7  # inside block 10, not on its edge


@pytest.mark.parametrize("delta", [-HOUR, -5 * NS, 5 * NS, HOUR, -3 * 86400 * NS])
def test_a_step_mid_call_loses_nothing_and_keeps_wall_times(delta: int) -> None:
    reference = run(CALL)
    assert len(reference.pcm[1]) == 20 * 8000 * 4  # 20 s of stereo s16le

    frames = stepped_at(CALL, SWITCH, delta)
    unguarded = run(frames)
    assert unguarded.pcm != reference.pcm  # what this fixes: audio lost, or a gap added

    clock = SteppedClock()
    stepped = run(frames, clock, {SWITCH // BLOCK: delta})
    assert stepped.pcm == reference.pcm  # every sample where it was
    assert stepped.starts == reference.starts  # started before the step: its wall time
    assert stepped.ends == reference.ends  # its start plus its audio
    assert stepped.drops == reference.drops
    assert [(s.delta_ns, s.at_ns) for s in clock.applied] == [
        (delta, CALL[SWITCH].ts_ns)  # taken at the first frame stamped after it
    ]


def test_a_step_noticed_blocks_before_its_frames_waits_for_them() -> None:
    """The shell may notice a step before the frames stamped after it are read: blocks of
    frames stamped before it keep their times."""
    frames = stepped_at(CALL, SWITCH, -HOUR)
    clock = SteppedClock()
    early = SWITCH // BLOCK - 3
    stepped = run(frames, clock, {early: -HOUR})
    assert stepped.pcm == run(CALL).pcm
    assert clock.applied[0].at_ns == CALL[SWITCH].ts_ns


def test_a_call_after_the_step_has_the_new_wall_clock() -> None:
    """A call set up after the step is stamped by the stepped (corrected) clock; one
    running across it keeps the clock it started with."""
    second = CallBuilder(
        call_id="call-2@test", caller_ip="10.0.1.1", callee_ip="10.0.1.2", caller="+4930333"
    )
    later = call_frames(second, T0 + 14 * NS, 300, 0x30)  # starts 4 s after the step
    frames = sorted(CALL + later, key=lambda f: f.ts_ns)
    switch = next(k for k, f in enumerate(frames) if f.ts_ns >= CALL[SWITCH].ts_ns)
    reference = run(frames)
    clock = SteppedClock()
    stepped = run(stepped_at(frames, switch, -HOUR), clock, {switch // BLOCK: -HOUR})
    assert stepped.pcm == reference.pcm
    assert stepped.starts[1] == reference.starts[1]
    assert stepped.starts[2] == reference.starts[2] - HOUR  # the clock it was set up by
    assert stepped.ends[2] == reference.ends[2] - HOUR
    assert stepped.ends[1] == reference.ends[1]


def test_a_pause_after_the_step_is_audited_at_wall_time() -> None:
    """PCI pause and resume markers carry the wall clock; the silenced span is the same."""
    pause_at = SWITCH + 300
    reference = run(CALL, pause_at=pause_at)
    clock = SteppedClock()
    stepped = run(stepped_at(CALL, SWITCH, HOUR), clock, {SWITCH // BLOCK: HOUR}, pause_at)
    assert stepped.pcm == reference.pcm
    assert [m.kind for m in stepped.markers] == ["paused", "resumed"]
    assert [m.at_ns for m in stepped.markers] == [m.at_ns + HOUR for m in reference.markers]


def test_on_a_quiet_link_the_next_tick_takes_the_step() -> None:
    clock = SteppedClock()
    now = T0 + 10 * NS  # the core's newest time
    clock.stepped(-HOUR)
    assert clock.core_time(T0 + 11 * NS - HOUR) == T0 + 11 * NS  # never early, while pending
    assert clock.time(T0 + 11 * NS - HOUR, now) == T0 + 11 * NS
    assert clock.shift_ns == HOUR and clock.pending_ns is None
    assert clock.core_time(T0 + 12 * NS - HOUR) == T0 + 12 * NS
    assert clock.wall(T0 + 12 * NS) == T0 + 12 * NS - HOUR
    assert clock.wall(T0 + 10 * NS) == T0 + 10 * NS  # before the step: unchanged
    block = FrameBlock.of(LINKTYPE_ETHERNET, [(T0 + 13 * NS - HOUR, b"x" * 60)])
    assert clock.block(block, T0 + 12 * NS).times.tolist() == [T0 + 13 * NS]


def test_a_step_before_any_frame_is_the_clock_itself() -> None:
    clock = SteppedClock()
    clock.stepped(HOUR)
    block = FrameBlock.of(LINKTYPE_ETHERNET, [(T0, b"x" * 60), (T0 + NS, b"x" * 60)])
    assert clock.block(block, 0).times.tolist() == [T0, T0 + NS]
    assert clock.shift_ns == 0 and not clock.applied and clock.pending_ns is None


def test_pending_resume_stamps_are_never_early() -> None:
    """While a step is pending, a control request's stamp is the later reading: a PCI
    resume must not take effect before it arrived."""
    for delta in (HOUR, -HOUR):
        clock = SteppedClock()
        clock.stepped(delta)
        wall = T0 + 20 * NS
        assert clock.core_time(wall) == max(wall, wall - delta)


def test_without_a_step_blocks_pass_unchanged() -> None:
    clock = SteppedClock()
    block = FrameBlock.of(LINKTYPE_ETHERNET, [(T0, b"x" * 60)])
    assert clock.block(block, T0) is block
    assert clock.event(RecordingMarker(1, "paused", T0)) == RecordingMarker(1, "paused", T0)
    assert np.array_equal(block.times, [T0])
