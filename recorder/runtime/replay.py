"""`recorder replay`: capture files through the same loop as live capture, capture time
as the clock, into an archive; returns what a one-screen summary needs."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from recorder.compliance.factory import build_core, policy_summary
from recorder.config import Config
from recorder.container.masterkey import MasterKey
from recorder.core.pipeline import RecorderCore
from recorder.runtime.runner import LoopStats, drain, feed_blocks
from recorder.runtime.session import ArchiveSession
from recorder.runtime.sources import CaptureFile
from recorder.runtime.writer import ArchiveWriter

log = logging.getLogger(__name__)


@dataclass
class ReplaySummary:
    files: int = 0
    truncated_files: list[str] = field(default_factory=list)
    skipped_packets: int = 0  # packet blocks with no usable time or interface (pcapng)
    frames: int = 0
    calls_seen: int = 0
    recorded: int = 0
    index_writes_waiting: int = 0  # the index stayed locked: made at the next start
    failed: int = 0
    recovered: int = 0
    not_recorded: Counter[str] = field(default_factory=Counter)
    drops: Counter[tuple[str, str]] = field(default_factory=Counter)
    rtp_packets: int = 0
    rtcp_packets: int = 0
    sip_messages: int = 0
    internal_errors: int = 0
    bytes_written: int = 0


def replay(
    paths: list[Path],
    root: Path,
    master: MasterKey,
    actor: str,
    *,
    config: Config | None = None,
    guard: bool = True,
    recovery_keys: Mapping[str, MasterKey] | None = None,
) -> ReplaySummary:
    """Record every call of the captures; `recovery_keys` (every master key by kid) let
    recordings a crash left open under an older key be recovered too."""
    config = config or Config()
    session = ArchiveSession(root, master, actor, config, recovery_keys=recovery_keys)
    summary = ReplaySummary(recovered=session.recovered)
    try:
        core = build_core(config)  # policy, DTMF pause/opt-out; warns when no policy is set
        session.audit.append(
            "replay.started",
            files=[p.name for p in paths],
            kid=master.kid,
            policy=policy_summary(config),
        )
        loop = LoopStats()
        starts = {path: _first_ts(path) for path in paths}  # each file opened once for it
        for path in sorted(paths, key=starts.__getitem__):
            capture = CaptureFile(path)
            start = starts[path]
            if core.now_ns and start < core.now_ns:
                # Not a continuation of the previous capture (which rotated files are):
                # its calls cannot carry on into this one.
                core.close()
                drain(core, session.writer)
            feed_blocks(capture.blocks(), core, session.writer, loop, guard=guard)
            summary.files += 1
            summary.skipped_packets += capture.skipped_blocks
            if capture.truncated:
                summary.truncated_files.append(str(path))
        core.close()
        drain(core, session.writer)
        session.writer.settle()
        _fill(summary, core, session.writer, loop)
        session.audit.append(
            "replay.finished",
            frames=summary.frames,
            skipped_packets=summary.skipped_packets,
            recorded=summary.recorded,
            not_recorded=sum(summary.not_recorded.values()),
            failed=summary.failed,
        )
    finally:
        session.close()
    return summary


def _first_ts(path: Path) -> int:
    """Capture time of a file's first frame (files are replayed in time order)."""
    frames = iter(CaptureFile(path))
    try:
        first = next(frames, None)
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()  # the reader's file is closed now, not whenever it is collected
    return first.ts_ns if first is not None else 0


def _fill(
    summary: ReplaySummary, core: RecorderCore, writer: ArchiveWriter, loop: LoopStats
) -> None:
    stats = core.stats
    summary.frames = loop.frames
    summary.internal_errors = loop.internal_errors
    summary.calls_seen = stats.calls_seen
    summary.recorded = writer.stats.closed
    summary.index_writes_waiting = writer.catalog_stats.waiting
    summary.failed = writer.stats.failed
    summary.not_recorded = Counter(stats.not_recorded)
    if writer.stats.refused:  # the writer's own refusals: disk nearly full, open-files limit
        summary.not_recorded["refused"] += writer.stats.refused
    summary.drops = Counter(stats.drops)
    summary.rtp_packets = stats.rtp_packets
    summary.rtcp_packets = stats.rtcp_packets
    summary.sip_messages = stats.sip_messages
    summary.bytes_written = writer.stats.bytes_written
