"""Live capture as a block source for the shared loop (`runner.feed_blocks`), like a file.

`LiveCapture.blocks()` yields what libpcap hands over as `FrameBlock`s: the frames the ring
held at once, up to `BATCH_FRAMES`, written by libpcap as pcap records (`RecordBuffer`) and
read like a capture file's (`sources.records_block`). Between blocks, and at least every
`tick_s` when the interface is quiet, it calls `tick(idle)`: the service runs its timers,
watchdog, reloads and shutdown check there. `idle` is True when the ring was empty, i.e.
every packet captured so far has been processed: only then may timers run at wall-clock
time without overtaking packets still waiting in the ring. (`capture_process.py` reads the ring in a
process of its own and gives the same blocks.)
"""

from __future__ import annotations

import select
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from recorder.config import CaptureSettings
from recorder.core.model import FrameBlock
from recorder.runtime.libpcap import CaptureError, PcapHandle, PcapStats, RecordBuffer
from recorder.runtime.sources import BLOCK_BYTES, pcap_file_header, records_block

BATCH_FRAMES = 32768  # frames per block at most (big blocks: numpy pays off per call)
# Reading the ring costs a few hundred ns a frame, so on a busy link it empties every kernel
# block (a few hundred frames), and a block that small spreads over thousands of call sides,
# a packet each: the core's work per block then costs per packet (a replay of 1,000 calls
# took 1.08x the CPU with blocks of 9,000 frames, 1.37x with 560, against 70,000). So when
# the ring empties with GATHER_FROM_FRAMES or more in hand, more is waited for, up to
# MIN_BLOCK_FRAMES and at most BLOCK_WAIT_S from the block's first frames. A quiet link's
# frames go at once: a pause request then sees every frame captured before it.
GATHER_FROM_FRAMES = 256
MIN_BLOCK_FRAMES = 16384
BLOCK_WAIT_S = 0.1
GATHER_MAX_BYTES = BLOCK_BYTES  # nor more bytes than a capture file's block (jumbo frames)


@dataclass
class CaptureState:
    """What the metrics read: updated by the capture loop, read at scrape time."""

    linktype: int = 0
    frames: int = 0
    last_ts_ns: int = 0  # capture time of the newest frame
    lag_ns: int = 0  # wall time minus that capture time, soon after it was processed
    kernel: PcapStats = field(default_factory=lambda: PcapStats(0, 0, 0))


class Capture(Protocol):
    """What the service needs of a live capture (`LiveCapture`, `ProcessCapture`)."""

    warning: str
    state: CaptureState

    @property
    def linktype(self) -> int: ...

    def stop(self) -> None: ...

    def blocks(self, tick: Callable[[bool], None], tick_s: float = 0.1) -> Iterator[FrameBlock]: ...

    def close(self) -> None: ...


def open_handle(settings: CaptureSettings) -> PcapHandle:
    """The libpcap handle the settings describe."""
    return PcapHandle(
        settings.interface,
        snaplen=settings.snaplen,
        promiscuous=settings.promiscuous,
        timeout_ms=settings.timeout_ms,
        buffer_bytes=settings.buffer_bytes,
        bpf=settings.filter,
    )


class RingReader:
    """The frames waiting in a handle's ring, a block at a time."""

    def __init__(self, handle: PcapHandle, snaplen: int, buffer_bytes: int = 64 << 20) -> None:
        self.records = RecordBuffer(handle, snaplen, buffer_bytes)
        self.linktype = handle.linktype
        self.format = pcap_file_header(self.records.header)
        self._since = 0.0  # when the block in hand got its first frames

    def fill(self, now: float) -> int:
        """Take in what the ring holds, up to a block: how many frames came (0: the ring
        is empty). `now` is the monotonic clock."""
        records = self.records
        before = records.frames
        got = records.fill(BATCH_FRAMES - before)
        if got and not before:
            self._since = now
        return got

    def wait_s(self, now: float) -> float:
        """With the ring empty: how long to wait for more frames before the block goes
        (0: it goes now)."""
        frames = self.records.frames
        if frames < GATHER_FROM_FRAMES or frames >= MIN_BLOCK_FRAMES:
            return 0.0
        return max(0.0, self._since + BLOCK_WAIT_S - now)

    @property
    def has_room(self) -> bool:
        records = self.records
        return records.frames < BATCH_FRAMES and not records.full

    def take(self) -> bytes:
        """The records taken in since the last take."""
        return self.records.take()

    def block(self, data: bytes, start: int, count: int) -> FrameBlock:
        """The `count` frames that `take` gave (at `start` of `data`) as a block."""
        return ring_block(self.linktype, self.format, data, start, count)

    def close(self) -> None:
        self.records.close()


def ring_block(
    linktype: int, fmt: tuple[str, int, int, int], data: bytes, start: int, count: int
) -> FrameBlock:
    """The `count` pcap records that libpcap wrote (from `start` of `data`, in the format
    `fmt` of `sources.pcap_file_header`) as a block; every record must be whole."""
    order, frac_ns, record_size, _ = fmt
    block, pos, bad = records_block(linktype, data, start, order, frac_ns, record_size)
    if bad or pos != len(data) or len(block) != count:  # libpcap wrote them: a bug
        raise CaptureError(f"capture records do not parse: {len(block)} of {count} frames")
    return block


def open_capture(settings: CaptureSettings) -> Capture:
    """The ring read by a process of its own (`capture.reader_process`), or in this one."""
    if settings.reader_process:
        from recorder.runtime.capture_process import ProcessCapture  # imports this module

        return ProcessCapture(settings)
    return LiveCapture(settings)


class LiveCapture:
    """An open live capture on `settings.interface` (needs CAP_NET_RAW)."""

    def __init__(self, settings: CaptureSettings) -> None:
        self.settings = settings
        self._pcap = open_handle(settings)
        try:
            self._reader = RingReader(self._pcap, settings.snaplen)
        except BaseException:
            self._pcap.close()
            raise
        self.warning = self._pcap.warning
        self.state = CaptureState(linktype=self._pcap.linktype)
        self.stopped = False
        self._frames_at_tick = 0

    @property
    def linktype(self) -> int:
        return self._pcap.linktype

    def stop(self) -> None:
        """Make `blocks()` return at its next tick (safe from a signal handler)."""
        self.stopped = True

    def blocks(self, tick: Callable[[bool], None], tick_s: float = 0.1) -> Iterator[FrameBlock]:
        """Blocks until `stop()`; then what the ring still holds, for one block timeout
        (packets captured before the stop are still recorded)."""
        poller = select.poll()
        poller.register(self._pcap.fd, select.POLLIN)
        timeout_ms = max(1, int(tick_s * 1000))
        reader = self._reader
        state = self.state
        clock = time.monotonic
        next_tick = clock() + tick_s
        drain_until = 0.0
        while True:
            if self.stopped and not drain_until:
                drain_until = clock() + self.settings.timeout_ms / 1000
            try:
                got = reader.fill(clock())
            except CaptureError:
                count = reader.records.frames
                if count:  # what was read before the failure is recorded first
                    yield reader.block(reader.take(), 0, count)
                raise
            if got and reader.has_room and clock() < next_tick:
                continue
            count = reader.records.frames
            if not got and not drain_until:
                wait = reader.wait_s(clock())
                if wait:  # the ring is empty, the block small on a busy link: more comes soon
                    poller.poll(max(1, int(wait * 1000)))
                    continue
            if count:  # the ring is empty, the block is full, or it is time to tick
                block = reader.block(reader.take(), 0, count)
                state.frames += count
                state.last_ts_ns = int(block.times[-1])
                yield block
                if got:  # more may be waiting: a busy tick, between two blocks
                    if clock() >= next_tick:
                        self._update()
                        if drain_until and clock() >= drain_until:
                            return
                        if not drain_until:
                            tick(False)
                        next_tick = clock() + tick_s
                    continue
            self._update()
            if drain_until:
                if clock() >= drain_until:
                    return
            else:
                tick(True)
                next_tick = clock() + tick_s
            poller.poll(timeout_ms)  # EINTR by a signal: PEP 475 retries, tick soon

    def _update(self) -> None:
        state = self.state
        if state.frames != self._frames_at_tick:  # lag of the newest frame, just processed
            self._frames_at_tick = state.frames
            state.lag_ns = max(0, time.time_ns() - state.last_ts_ns)
        state.kernel = self._pcap.stats()

    def close(self) -> None:
        self.state.kernel = self._pcap.stats()
        self._reader.close()
        self._pcap.close()
