"""The one loop that feeds blocks of frames to the core and the core's events to the writer.

Replay and live capture share it: only the block source differs (a capture file's reads,
the live ring). The core is guarded per frame in production: an unexpected exception on
one frame is counted and logged, and the loop goes on, so one strange packet cannot end
the recording of every other call. Tests run with `guard=False` so that bugs surface.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from recorder.core.model import FrameBlock
from recorder.core.pipeline import RecorderCore
from recorder.runtime.writer import ArchiveWriter

log = logging.getLogger(__name__)


# The cyclic collector's generation thresholds while recording. The packet path allocates
# containers by the hundred thousand a second, all freed by reference counting (no cycles),
# while the state of thousands of calls stays alive: at the default (700, 10, 10) the
# collector kept rescanning that state, 23 % of a replay of 10,000 concurrent calls.
GC_THRESHOLDS = (100_000, 50, 100)


def tune_gc() -> None:
    """Collect rarely, and never rescan what exists now (modules, configuration)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


@dataclass
class LoopStats:
    frames: int = 0
    internal_errors: int = 0


def feed_blocks(
    blocks: Iterable[FrameBlock],
    core: RecorderCore,
    writer: ArchiveWriter,
    stats: LoopStats,
    *,
    guard: bool = True,
) -> None:
    """Run every block through the core, handing its events to the writer after each block
    (up to 16 MiB of a capture file, or what the live ring held). Guarded: a frame that
    raises is skipped, and the rest of its block goes one frame at a time, each guarded."""
    for block in blocks:
        stats.frames += len(block)
        if not guard:
            core.receive_block(block)
        else:
            try:
                core.receive_block(block)
            except Exception:  # a bug must cost one frame, not the block or the process
                _internal_error(stats)
                for k in range(core.block_position + 1, len(block)):
                    try:
                        core.receive_frame(block.frame(k))
                    except Exception:
                        _internal_error(stats)
        drain(core, writer)


def _internal_error(stats: LoopStats) -> None:
    stats.internal_errors += 1
    if stats.internal_errors <= 10:
        log.exception("internal error on a frame; frame skipped")


def drain(core: RecorderCore, writer: ArchiveWriter) -> None:
    pending = core.pending_events
    while pending:
        writer.handle(pending.popleft())
    getattr(writer, "commit", _nothing)()


def _nothing() -> None:
    """For a writer without group commits."""
