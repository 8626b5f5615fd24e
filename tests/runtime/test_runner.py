"""The shared loop's guard: a frame the core raises on costs that frame, not the block."""

from __future__ import annotations

from typing import Any

import pytest

from recorder.core.events import Event
from recorder.core.model import Frame, FrameBlock
from recorder.core.pipeline import RecorderCore
from recorder.runtime.runner import LoopStats, drain, feed_blocks
from tests.core.test_batch_equivalence import build

POISON = b"poison"


class Fragile(RecorderCore):
    """A core with a bug: it raises on every frame that ends with POISON (frames the block
    fast path does not take: known RTP never reaches `receive_frame` there)."""

    def receive_frame(self, frame: Frame) -> None:
        if frame.data.endswith(POISON):
            raise RuntimeError("bug")
        super().receive_frame(frame)


class Collect:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def handle(self, event: Event) -> None:
        self.events.append(event)

    def commit(self) -> None:
        pass


def run(frames: list[Frame], blocks: bool) -> tuple[list[Event], LoopStats]:
    core, writer, stats = Fragile(), Collect(), LoopStats()
    w: Any = writer
    if blocks:
        pairs = [(f.ts_ns, f.data) for f in frames]
        feed_blocks([FrameBlock.of(1, pairs[:500]), FrameBlock.of(1, pairs[500:])], core, w, stats)
    else:  # the reference: frame by frame, each guarded
        for frame in frames:
            stats.frames += 1
            try:
                core.receive_frame(frame)
            except RuntimeError:
                stats.internal_errors += 1
            drain(core, w)
    core.close()
    drain(core, w)
    return writer.events, stats


def test_a_raising_frame_is_skipped_and_the_block_goes_on() -> None:
    frames = sorted(build([("ok", 0)] * 400, 0, 20, True), key=lambda f: f.ts_ns)
    frames[3] = frames[3]._replace(data=frames[3].data + POISON)  # the INVITE's answer
    for k in (250, 251, 600, len(frames) - 1):  # amid media, two in a row, the last
        frames[k] = frames[k]._replace(data=b"junk" + POISON)
    events, stats = run(frames, blocks=True)
    expected, expected_stats = run(frames, blocks=False)
    assert stats.internal_errors == expected_stats.internal_errors == 5
    assert stats.frames == expected_stats.frames == len(frames)
    assert events == expected
    assert any(type(e).__name__ == "RecordingEnded" for e in events)


def test_a_bug_in_the_block_path_costs_no_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    """Should the numpy path itself raise, the block goes on one frame at a time."""
    import recorder.core.blocks as blocks

    def broken(*_: object) -> None:
        raise RuntimeError("bug")

    frames = sorted(build([("ok", 0)] * 400, 0, 20, True), key=lambda f: f.ts_ns)
    expected, _ = run(frames, blocks=False)
    monkeypatch.setattr(blocks, "_Classified", broken)
    events, stats = run(frames, blocks=True)
    assert stats.internal_errors == 2  # once per block
    assert events == expected  # not one frame lost
