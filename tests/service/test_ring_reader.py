"""The live ring read a block at a time: libpcap writes what the ring holds as pcap records
into our buffer (`RecordBuffer`), and they are read like a capture file's. Frames come out
whole, in order and with their nanosecond times; a small buffer never cuts a record; the
in-process capture gives the same blocks as the reader process; and no executable memory is
needed (the unit's MemoryDenyWriteExecute=yes)."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from recorder.config import CaptureSettings
from recorder.core.model import FrameBlock
from recorder.runtime.libpcap import CaptureError, PcapHandle, RecordBuffer, is_loopback
from recorder.runtime.live import GATHER_FROM_FRAMES, LiveCapture, RingReader
from recorder.runtime.sources import pcap_file_header
from tests.service.harness import collect_blocks, free_udp_ports, require_capture

pytestmark = pytest.mark.slow

_UDP_PAYLOAD_AT = 42  # Ethernet (lo) + IPv4 + UDP


def payloads(count: int, first: int = 0) -> list[bytes]:
    """Distinct payloads of lengths 4 to 1,403 bytes (runs of one length, and breaks)."""
    return [
        i.to_bytes(4, "big") + bytes([i % 251]) * (i // 7 % 1400)
        for i in range(first, first + count)
    ]


@contextmanager
def handle_on_lo(port: int, snaplen: int = 65535) -> Iterator[PcapHandle]:
    handle = PcapHandle(
        "lo",
        snaplen=snaplen,
        promiscuous=False,
        timeout_ms=20,
        buffer_bytes=1 << 24,
        bpf=f"udp dst port {port}",
    )
    try:
        yield handle
    finally:
        handle.close()


def send(port: int, data: list[bytes]) -> float:
    """Send `data` to `port` on loopback; the wall time (ns) just before."""
    before = time.time_ns()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for payload in data:
            sender.sendto(payload, ("127.0.0.1", port))
    return before


def read_all(reader: RingReader, expected: int, deadline_s: float = 10.0) -> list[FrameBlock]:
    blocks: list[FrameBlock] = []
    got = 0
    deadline = time.monotonic() + deadline_s
    while got < expected and time.monotonic() < deadline:
        reader.fill(time.monotonic())
        while reader.has_room and reader.fill(time.monotonic()):
            pass
        count = reader.records.frames
        if count:
            blocks.append(reader.block(reader.take(), 0, count))
            got += count
        else:
            time.sleep(0.01)
    return blocks


def test_records_are_pcap_with_nanosecond_times() -> None:
    require_capture()
    (port,) = free_udp_ports(1)
    with handle_on_lo(port) as handle:
        records = RecordBuffer(handle, 65535)
        try:
            order, frac_ns, record_size, linktype = pcap_file_header(records.header)
            assert (frac_ns, record_size, linktype) == (1, 16, handle.linktype)
            assert order == ("<" if sys.byteorder == "little" else ">")
        finally:
            records.close()


def test_frames_come_whole_in_order_with_their_times() -> None:
    require_capture()
    (port,) = free_udp_ports(1)
    sent = payloads(3000)
    with handle_on_lo(port) as handle:
        reader = RingReader(handle, 65535)
        try:
            before = send(port, sent)
            after = time.time_ns()
            blocks = read_all(reader, len(sent))
        finally:
            reader.close()
    frames = [f for b in blocks for f in b.frames()]
    assert [f.data[_UDP_PAYLOAD_AT:] for f in frames] == sent
    times = [f.ts_ns for f in frames]
    assert times == sorted(times)
    assert before - 10**6 <= times[0] and times[-1] <= after + 10**6  # ns, not us: exact
    assert len({t % 1000 for t in times}) > 1  # nanosecond digits present


def test_on_loopback_each_packet_takes_one_ring_slot() -> None:
    """lo hands a capture every packet twice (leaving and arriving); the handle asks the
    kernel for the arriving copy only, so the kernel counts and the ring hold each packet
    once, and the frames read are exactly those sent, once each. Only loopback devices are
    asked so (on `any` or a real device the packets the host sends are wanted)."""
    require_capture()
    (port,) = free_udp_ports(1)
    sent = payloads(2000)
    with handle_on_lo(port) as handle:
        assert handle.ignores_outgoing
        reader = RingReader(handle, 65535)
        try:
            send(port, sent)
            blocks = read_all(reader, len(sent))
            time.sleep(0.05)
            assert reader.fill(time.monotonic()) == 0  # nothing more: no second copies
            kernel = handle.stats()
        finally:
            reader.close()
    assert [f.data[_UDP_PAYLOAD_AT:] for b in blocks for f in b.frames()] == sent
    assert kernel.received == len(sent)  # 4,000 without the socket option
    assert not is_loopback("any") and not is_loopback("../lo") and is_loopback("lo")


def test_a_small_buffer_never_cuts_a_record() -> None:
    """Room for 15 frames at a snaplen of 65,535 (1 MiB): every dispatch asks for no more
    than fits, so 2,000 frames come in many takes, each made of whole records."""
    require_capture()
    (port,) = free_udp_ports(1)
    sent = payloads(2000)
    with handle_on_lo(port) as handle:
        reader = RingReader(handle, 65535, buffer_bytes=1 << 20)
        takes: list[int] = []
        frames: list[bytes] = []
        try:
            send(port, sent)
            deadline = time.monotonic() + 10
            while len(frames) < len(sent) and time.monotonic() < deadline:
                got = reader.records.fill(1 << 20)
                assert got <= 15
                count = reader.records.frames
                if count:
                    block = reader.block(reader.take(), 0, count)  # checks every record whole
                    frames += [f.data[_UDP_PAYLOAD_AT:] for f in block.frames()]
                    takes.append(count)
                elif not got:
                    time.sleep(0.01)
        finally:
            reader.close()
    assert frames == sent
    assert len(takes) >= len(sent) / 15


def test_the_in_process_capture_gives_blocks_and_drains_on_stop() -> None:
    require_capture()
    (port,) = free_udp_ports(1)
    capture = LiveCapture(
        CaptureSettings(
            interface="lo",
            filter=f"udp dst port {port}",
            timeout_ms=20,
            buffer_bytes=1 << 24,
            reader_process=False,
        )
    )
    sent = payloads(5000)
    blocks: list[FrameBlock] = []
    ticks: list[bool] = []
    state = {"sent": False}

    def tick(idle: bool) -> None:
        ticks.append(idle)
        if idle and not state["sent"]:
            state["sent"] = True
            send(port, sent)
        elif idle and sum(len(b) for b in blocks) >= len(sent):
            capture.stop()

    try:
        collect_blocks(capture, tick, blocks)
    finally:
        capture.close()
    frames = [f for b in blocks for f in b.frames()]
    assert [f.data[_UDP_PAYLOAD_AT:] for f in frames] == sent
    assert len(blocks) < len(sent) / 10  # batched
    assert capture.state.frames == len(sent) and capture.state.kernel.dropped == 0


def test_no_executable_memory_is_needed() -> None:
    """With the kernel refusing writable-then-executable memory (PR_SET_MDWE, what the
    unit's MemoryDenyWriteExecute=yes enforces by seccomp), the ring is still read: the
    callback is libpcap's own pcap_dump, not a ctypes trampoline."""
    require_capture()
    (port,) = free_udp_ports(1)
    script = textwrap.dedent(
        f"""
        import ctypes, mmap, socket, sys
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
            print("no-mdwe"); sys.exit(0)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_long]
        wx = libc.mmap(None, 4096, 7, 0x22, -1, 0)  # RWX, private anonymous
        assert wx in (None, ctypes.c_void_p(-1).value), "MDWE is not enforced"
        from recorder.runtime.libpcap import PcapHandle
        from recorder.runtime.live import RingReader
        h = PcapHandle("lo", snaplen=65535, promiscuous=False, timeout_ms=20,
                       buffer_bytes=1 << 22, bpf="udp dst port {port}")
        reader = RingReader(h, 65535)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for i in range(100):
            s.sendto(i.to_bytes(4, "big"), ("127.0.0.1", {port}))
        import time
        got = 0
        deadline = time.monotonic() + 10
        while got < 100 and time.monotonic() < deadline:
            reader.fill(time.monotonic())
            count = reader.records.frames
            if count:
                got += len(reader.block(reader.take(), 0, count))
        print("read", got)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    if result.stdout.strip() == "no-mdwe":
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3 and later)")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "read 100"


def test_the_buffer_is_released_on_close() -> None:
    require_capture()
    (port,) = free_udp_ports(1)
    with handle_on_lo(port) as handle:
        records = RecordBuffer(handle, 65535, size=1 << 20)
        memory = records._memory
        records.close()
        records.close()  # twice is harmless
        assert memory.closed


def test_frames_read_before_a_capture_failure_are_handed_over_first() -> None:
    """A failure of the capture while a busy batch is held for more (gathered): the frames
    already read from the ring are handed over before the error is raised."""
    require_capture()
    (port,) = free_udp_ports(1)
    capture = LiveCapture(
        CaptureSettings(
            interface="lo", filter=f"udp dst port {port}", timeout_ms=20, reader_process=False
        )
    )
    sent: list[bytes] = []
    records = capture._reader.records
    real_fill = records.fill
    read = [0]

    def failing_fill(limit: int) -> int:
        got = real_fill(limit)
        read[0] += got
        if not got and records.frames >= GATHER_FROM_FRAMES:  # held, waiting for more
            raise CaptureError("capture failed: the interface went down")
        return got

    records.fill = failing_fill  # type: ignore[method-assign]
    blocks: list[FrameBlock] = []

    def tick(idle: bool) -> None:
        # A burst on every idle tick until one is read whole: on a stalled machine the ring
        # can hand a burst over in pieces of fewer than GATHER_FROM_FRAMES, none held.
        if idle:
            burst = payloads(1000, len(sent))
            sent.extend(burst)
            send(port, burst)

    try:
        with pytest.raises(CaptureError, match="interface went down"):
            collect_blocks(capture, tick, blocks)
    finally:
        capture.close()
    handed = [f.data[_UDP_PAYLOAD_AT:] for b in blocks for f in b.frames()]
    assert read[0] >= GATHER_FROM_FRAMES and handed == sent[: read[0]]
