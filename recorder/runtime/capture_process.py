"""Live capture read by a process of its own, so that one core reads the ring while the other
records (`capture.reader_process`).

The child opens the libpcap handle, has libpcap write what the ring holds as pcap records
(`live.RingReader`) and sends them to the recording process in batches over a pipe: a batch
goes when it holds `BATCH_FRAMES` frames, when the ring is empty (then marked idle:
everything captured so far has been sent), or at least every `FLUSH_S`; a quiet ring is
reported idle every `FLUSH_S` (an empty batch). Only such a report, read within
`IDLE_FRESH_S` of the child sending it, makes a tick idle in the recording process: silence
from the child (no CPU, say) says nothing of the ring, and an old report says nothing of the
frames captured since. The recording
process reads each batch's records into one `FrameBlock` for the core, in capture order, so
recording is exactly what the in-process capture gives; only the reading moved. No Python
runs per frame in the child.

Why not a flow hash over several recording processes (PACKET_FANOUT): a call's SIP and its
RTP are different flows, and its two RTP directions (NAT'd ones especially) hash apart, so
no hash of the packet alone puts a whole call in one process; every recording process
would have to read every packet to follow the signalling.

Messages (a tag byte, then): READY linktype, the records' pcap file header (byte order and
time precision) and warning; FRAMES idle flag, kernel counters, frame count and the time
it was sent (monotonic clock), then the pcap records; ERROR a message; END.
The recording process says STOP; the child then sends what the ring holds for one block
timeout and ends. If the recording process dies, the child sees its pipe close and exits.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import select
import signal
import struct
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection

from recorder.config import CaptureSettings
from recorder.core.model import FrameBlock
from recorder.runtime.libpcap import CaptureError, PcapHandle, PcapStats
from recorder.runtime.live import (
    BLOCK_WAIT_S,
    GATHER_FROM_FRAMES,
    GATHER_MAX_BYTES,
    MIN_BLOCK_FRAMES,
    CaptureState,
    RingReader,
    open_handle,
    ring_block,
)
from recorder.runtime.sources import pcap_file_header

FLUSH_S = 0.1  # under load, a batch goes at least this often (the ring never empties)
_READY, _FRAMES, _ERROR, _END, _STOP = b"R", b"F", b"E", b"N", b"S"
_HEAD = struct.Struct("<BQQQIq")  # idle, received, dropped, if_dropped, frames, sent_ns
# An idle report read later than this says too little: timers would run at wall-clock time
# ahead of frames captured since it was sent (the core flushes audio a jitter window behind).
IDLE_FRESH_S = 0.05
_START_TIMEOUT_S = 60.0
_NICE = 5


class ProcessCapture:
    """`LiveCapture`'s interface, read by a child process. Raises CaptureError here if the
    child cannot open the capture."""

    def __init__(self, settings: CaptureSettings) -> None:
        self.settings = settings
        context = multiprocessing.get_context("spawn")  # no threads or locks carried over
        self._conn, child_end = context.Pipe(duplex=True)
        self._process = context.Process(
            target=_child, args=(settings, child_end), name="recorder-capture", daemon=True
        )
        self._process.start()
        child_end.close()
        self.stopped = False
        self._stop_sent = False
        self._error: CaptureError | None = None  # came while frames were being gathered
        try:
            message = self._receive(_START_TIMEOUT_S)
        except BaseException:
            self.close()
            raise
        if message[:1] != _READY:
            self.close()
            if not message:
                raise CaptureError(f"the capture process did not start in {_START_TIMEOUT_S:.0f} s")
            raise CaptureError(f"capture process: unexpected first message {message[:1]!r}")
        self._linktype = int.from_bytes(message[1:5], "little")
        self._format = pcap_file_header(message[5:29])
        self.warning = message[29:].decode("utf-8", "replace")
        self.state = CaptureState(linktype=self._linktype)

    @property
    def linktype(self) -> int:
        return self._linktype

    def stop(self) -> None:
        """Make `blocks()` return once the child has sent what it holds (signal-safe: the
        STOP message itself is sent by the loop)."""
        self.stopped = True

    def _receive(self, timeout: float | None) -> bytes:
        """The next message; ERROR raises CaptureError; b"" when nothing came in time."""
        if not self._conn.poll(timeout):
            return b""
        try:
            message = self._conn.recv_bytes()
        except (EOFError, OSError):
            raise CaptureError("the capture process ended unexpectedly") from None
        if message[:1] == _ERROR:
            raise CaptureError(message[1:].decode("utf-8", "replace"))
        return message

    def blocks(self, tick: Callable[[bool], None], tick_s: float = 0.1) -> Iterator[FrameBlock]:
        state = self.state
        clock = time.monotonic
        next_tick = clock() + tick_s
        while True:
            if self.stopped and not self._stop_sent:
                self._stop_sent = True
                self._conn.send_bytes(_STOP)
            message = self._receive(tick_s)
            if not message:
                # The child said nothing, not even that the ring is empty (it reports that
                # every FLUSH_S when quiet): it may have had no CPU, and frames may wait in
                # the ring, so this tick is not idle and the core's timers wait for them.
                tick(False)
                next_tick = clock() + tick_s
                continue
            if message[:1] == _END:
                return
            messages, ended = self._gather(message, clock)
            block, idle = self._block(messages)
            if len(block):
                state.frames += len(block)
                state.last_ts_ns = int(block.times[-1])
                state.lag_ns = max(0, time.time_ns() - state.last_ts_ns)
                yield block
            if self._error is not None:
                raise self._error
            if ended:
                return
            if idle and not self._conn.poll(0):
                tick(True)
                next_tick = clock() + tick_s
            elif clock() >= next_tick:
                tick(False)
                next_tick = clock() + tick_s

    def _gather(self, first: bytes, clock: Callable[[], float]) -> tuple[list[bytes], bool]:
        """`first` and the FRAMES messages that follow within BLOCK_WAIT_S, while they hold
        fewer than MIN_BLOCK_FRAMES frames and GATHER_MAX_BYTES in all; and whether END
        came. The child sends whenever it finds the ring empty, which it reads in a few
        hundred ns a frame, so on a busy link its batches are small (see
        `live.MIN_BLOCK_FRAMES`); jumbo frames must not make a block of a GiB. Ticks (timers,
        control requests) wait for the gathered frames, so a request still applies after
        every frame the child sent before it."""
        messages = [first]
        count, size = _HEAD.unpack_from(first, 1)[4], len(first)
        if count < GATHER_FROM_FRAMES:  # a quiet link: no wait (see live.GATHER_FROM_FRAMES)
            return messages, False
        deadline = clock() + BLOCK_WAIT_S
        while count < MIN_BLOCK_FRAMES and size < GATHER_MAX_BYTES and not self.stopped:
            left = deadline - clock()
            if left <= 0 or not self._conn.poll(left):
                break
            try:
                message = self._receive(0)
            except CaptureError as exc:  # raised once the frames before it are recorded
                self._error = exc
                break
            if message[:1] == _END:
                return messages, True
            if message[:1] == _FRAMES:
                messages.append(message)
                count += _HEAD.unpack_from(message, 1)[4]
                size += len(message)
        return messages, False

    def _block(self, messages: list[bytes]) -> tuple[FrameBlock, bool]:
        """One block of the frames of FRAMES `messages`, and whether the last said idle
        and was read while fresh (`IDLE_FRESH_S`)."""
        at = 1 + _HEAD.size
        count = 0
        for message in messages:
            idle, received, dropped, if_dropped, frames, sent_ns = _HEAD.unpack_from(message, 1)
            count += frames
        self.state.kernel = PcapStats(received, dropped, if_dropped)
        if len(messages) == 1:
            data, start = messages[0], at
        else:  # the records back to back (about 25 ns a frame to copy)
            data, start = b"".join(memoryview(m)[at:] for m in messages), 0
        fresh = time.monotonic_ns() - sent_ns <= IDLE_FRESH_S * 1e9
        return ring_block(self._linktype, self._format, data, start, count), bool(idle) and fresh

    def close(self) -> None:
        if self._process.is_alive() and not self._stop_sent:
            try:
                self._stop_sent = True
                self._conn.send_bytes(_STOP)
            except OSError:
                pass
        self._process.join(timeout=self.settings.timeout_ms / 1000 + 5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._conn.close()


def _child(settings: CaptureSettings, conn: Connection) -> None:
    """The capture process: read the ring, send batches, until STOP or a closed pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the recording process decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # Reading costs a fraction of recording: when the cores are short, the recording process
    # should get them first (the kernel ring holds what waits meanwhile). The systemd unit's
    # filter denies @resources (setpriority): then the reader just keeps its priority.
    with contextlib.suppress(OSError):
        os.nice(_NICE)
    try:
        handle = open_handle(settings)
    except CaptureError as exc:
        conn.send_bytes(_ERROR + str(exc).encode())
        return
    reader: RingReader | None = None
    try:
        reader = RingReader(handle, settings.snaplen)
        linktype = handle.linktype.to_bytes(4, "little")
        conn.send_bytes(_READY + linktype + reader.records.header + handle.warning.encode())
        _read(handle, reader, conn, settings.timeout_ms)
    except CaptureError as exc:
        with contextlib.suppress(OSError):  # the recording process may be gone already
            conn.send_bytes(_ERROR + str(exc).encode())
    except (BrokenPipeError, EOFError, ConnectionResetError):
        pass  # the recording process is gone: nothing to send to
    finally:
        if reader is not None:
            reader.close()
        handle.close()


def _read(handle: PcapHandle, reader: RingReader, conn: Connection, timeout_ms: int) -> None:
    poller = select.poll()
    poller.register(handle.fd, select.POLLIN)
    poller.register(conn.fileno(), select.POLLIN)
    clock = time.monotonic
    drain_until = 0.0
    flush_at = 0.0  # an idle report goes at once

    def send(idle: bool) -> None:
        stats = handle.stats()
        count = reader.records.frames
        received, dropped, if_dropped = stats.received, stats.dropped, stats.if_dropped
        # CLOCK_MONOTONIC is one clock for every process of the host, and a step of the
        # wall clock (NTP) cannot make an old idle report look fresh.
        head = _HEAD.pack(idle, received, dropped, if_dropped, count, time.monotonic_ns())
        conn.send_bytes(b"".join((_FRAMES, head, reader.take())))

    while True:
        if reader.fill(clock()):
            if not reader.has_room or clock() >= flush_at:
                send(False)
                flush_at = clock() + FLUSH_S
            continue
        if reader.records.frames or clock() >= flush_at:
            send(True)  # the ring is empty: all captured so far goes now, or that it is quiet
            flush_at = clock() + FLUSH_S
        if drain_until and clock() >= drain_until:
            conn.send_bytes(_END)
            return
        for fd, _ in poller.poll(min(timeout_ms, int(FLUSH_S * 1000)) if not drain_until else 10):
            # recv_bytes raises EOFError when the pipe closed (the recording process died)
            if fd == conn.fileno() and not drain_until and conn.recv_bytes() == _STOP:
                drain_until = clock() + timeout_ms / 1000
