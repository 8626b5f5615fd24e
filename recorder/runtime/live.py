"""Live capture as a block source for the shared loop (`runner.feed_blocks`), like a file.

`LiveCapture.blocks()` yields what libpcap hands over as `FrameBlock`s: the frames the ring
held at once, up to `BATCH_FRAMES`. Between blocks, and at least every `tick_s` when the
interface is quiet, it calls `tick(idle)`: the service runs its timers, watchdog, reloads
and shutdown check there. `idle` is True when the ring was empty, i.e. every packet
captured so far has been processed: only then may timers run at wall-clock time without
overtaking packets still waiting in the ring. (`capture_process.py` reads the ring in a
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
from recorder.runtime.libpcap import PcapHandle, PcapStats

BATCH_FRAMES = 32768  # frames per block at most (big blocks: numpy pays off per call)
_CHECK_EVERY = 64  # frames between two looks at the clock under load


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
        linktype = self._pcap.linktype
        next_packet = self._pcap.next
        state = self.state
        clock = time.monotonic
        next_tick = clock() + tick_s
        drain_until = 0.0
        batch: list[tuple[int, bytes]] = []
        while True:
            if self.stopped and not drain_until:
                drain_until = clock() + self.settings.timeout_ms / 1000
            got = next_packet()
            if got is not None:
                batch.append(got)
                if len(batch) < BATCH_FRAMES and (len(batch) % _CHECK_EVERY or clock() < next_tick):
                    continue
            if batch:  # the ring is empty, the batch is full, or it is time to tick
                state.frames += len(batch)
                state.last_ts_ns = batch[-1][0]
                yield FrameBlock.of(linktype, batch)
                batch = []
                if got is not None:  # more waiting: a busy tick, between two blocks
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
        self._pcap.close()
