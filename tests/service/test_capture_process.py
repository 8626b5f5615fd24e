"""The ring read by a process of its own: frames arrive whole and in order, quiet times
tick as idle, a stop drains what was captured, errors are one line, and the child never
outlives the recording process."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from recorder.config import CaptureSettings
from recorder.core.model import FrameBlock
from recorder.runtime import capture_process as cp
from recorder.runtime import sources
from recorder.runtime.capture_process import ProcessCapture
from recorder.runtime.libpcap import CaptureError
from recorder.runtime.live import CaptureState
from tests.net.capwrite import PCAP_NS, pcap
from tests.service.harness import collect_blocks, free_udp_ports, require_capture

pytestmark = pytest.mark.slow


def settings(port: int) -> CaptureSettings:
    return CaptureSettings(
        interface="lo", filter=f"udp dst port {port}", timeout_ms=20, buffer_bytes=1 << 22
    )


def test_frames_arrive_whole_in_order_and_a_stop_drains(tmp_path: Path) -> None:
    require_capture()
    (port,) = free_udp_ports(1)
    capture = ProcessCapture(settings(port))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent = [i.to_bytes(4, "big") + bytes([i % 251]) * (i % 300) for i in range(5000)]
    ticks: list[bool] = []
    blocks: list[FrameBlock] = []
    try:
        assert capture.linktype == 1  # lo is Ethernet
        state = {"sent": False}

        def tick(idle: bool) -> None:
            ticks.append(idle)
            if idle and not state["sent"]:
                state["sent"] = True
                for payload in sent:
                    sender.sendto(payload, ("127.0.0.1", port))
            elif idle and state["sent"] and sum(len(b) for b in blocks) >= len(sent):
                capture.stop()

        collect_blocks(capture, tick, blocks)
    finally:
        sender.close()
        capture.close()
    frames = [f for b in blocks for f in b.frames()]
    assert [f.data[42:] for f in frames] == sent  # UDP payload after Ethernet/IPv4/UDP
    times = [f.ts_ns for f in frames]
    assert times == sorted(times) and abs(times[0] - time.time_ns()) < 60 * 10**9
    assert len(blocks) < len(sent) / 10  # batched, not a message per frame
    assert True in ticks
    assert capture.state.frames == len(sent)
    assert capture.state.kernel.dropped == 0
    assert not capture._process.is_alive()


def test_an_interface_that_does_not_exist_is_one_line() -> None:
    require_capture()
    with pytest.raises(CaptureError) as info:
        ProcessCapture(CaptureSettings(interface="nosuch0", filter="udp"))
    message = str(info.value)
    assert "nosuch0" in message and "\n" not in message


def test_the_child_ends_when_the_recording_process_is_gone() -> None:
    require_capture()
    (port,) = free_udp_ports(1)
    capture = ProcessCapture(settings(port))
    child = capture._process
    assert child.is_alive()
    capture._conn.close()  # what the recording process's death does to the pipe
    child.join(timeout=5)
    assert not child.is_alive()


def test_a_capture_process_that_does_not_start_is_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import recorder.runtime.capture_process as capture_process

    monkeypatch.setattr(capture_process, "_START_TIMEOUT_S", 0.001)  # never in time
    with pytest.raises(CaptureError) as info:
        ProcessCapture(CaptureSettings(interface="lo", filter="udp"))
    assert str(info.value) == "the capture process did not start in 0 s"


def test_a_silent_child_does_not_make_the_tick_idle() -> None:
    """Idle means the child just found the ring empty. A child that has no CPU (stopped
    here) says nothing, and frames may wait in the ring: the recording process must not
    run the core's timers at wall-clock time ahead of them (before, it did after 0.1 s of
    silence, and a backlog of 8 s of calls was then placed in one sweep, 3x slower)."""
    require_capture()
    (port,) = free_udp_ports(1)
    capture = ProcessCapture(settings(port))
    pid = capture._process.pid
    assert pid is not None
    phases: dict[str, list[bool]] = {"before": [], "stopped": [], "after": []}
    phase = ["before"]
    started = time.monotonic()

    def tick(idle: bool) -> None:
        phases[phase[0]].append(idle)
        elapsed = time.monotonic() - started
        if phase[0] == "before" and elapsed > 0.5:
            os.kill(pid, signal.SIGSTOP)
            time.sleep(0.05)  # a report already in the pipe is read before the stop counts
            while capture._conn.poll(0):
                capture._conn.recv_bytes()
            phase[0] = "stopped"
        elif phase[0] == "stopped" and elapsed > 1.5:
            os.kill(pid, signal.SIGCONT)
            phase[0] = "after"
        elif phase[0] == "after" and elapsed > 2.5:
            capture.stop()

    try:
        for _ in capture.blocks(tick, 0.05):
            pass
    finally:
        os.kill(pid, signal.SIGCONT)
        capture.close()
    assert True in phases["before"] and True in phases["after"]
    assert len(phases["stopped"]) >= 10 and True not in phases["stopped"]


def test_busy_batches_are_gathered_into_one_block_and_quiet_ones_are_not() -> None:
    """On a busy link the child finds the ring empty every few hundred frames; the
    recording process gathers such batches (up to MIN_BLOCK_FRAMES, within BLOCK_WAIT_S)
    into one block, because the core's work per block costs per call side. A quiet link's
    batches go at once: a pause request must see every frame that came before it."""
    require_capture()
    (port,) = free_udp_ports(1)
    capture = ProcessCapture(settings(port))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    bursts = [[bytes([b]) + i.to_bytes(4, "big") for i in range(600)] for b in range(4)]
    blocks: list[FrameBlock] = []
    state = {"step": 0}

    def tick(idle: bool) -> None:
        if not idle:
            return
        if state["step"] == 0:  # busy: four batches of 600 within about 20 ms
            for burst in bursts:
                for payload in burst:
                    sender.sendto(payload, ("127.0.0.1", port))
                time.sleep(0.005)
        elif state["step"] == 1:  # quiet: one frame
            sender.sendto(b"quiet", ("127.0.0.1", port))
        elif sum(len(b) for b in blocks) >= 2401:
            capture.stop()
        state["step"] += 1

    try:
        collect_blocks(capture, tick, blocks)
    finally:
        sender.close()
        capture.close()
    payloads = [f.data[42:] for b in blocks for f in b.frames()]
    assert payloads == [p for burst in bursts for p in burst] + [b"quiet"]
    sizes = [len(b) for b in blocks]
    assert sizes[-1] == 1  # the quiet frame was not held back for company
    assert len(sizes) <= 3, sizes  # the 2,400 busy frames: gathered, not one block a batch


def piped_capture() -> tuple[ProcessCapture, Connection]:
    """A ProcessCapture with no child process: the test writes the child's messages on the
    returned end of its pipe."""
    ours, child = multiprocessing.Pipe(duplex=True)
    capture = ProcessCapture.__new__(ProcessCapture)
    capture._conn, capture._linktype, capture.stopped, capture._stop_sent = ours, 1, False, True
    capture._error = None
    capture._format = sources.pcap_file_header(pcap([], magic=PCAP_NS))
    capture.state = CaptureState(linktype=1)
    return capture, child


def frames_message(first: int, count: int, size: int = 4, sent_ns: int | None = None) -> bytes:
    """An idle-marked FRAMES message of `count` frames of `size` bytes, numbered from
    `first` (the number is both the nanoseconds of the time and the first 4 bytes), sent
    at `sent_ns` (now)."""
    records = [
        (1_800_000_000, n, n.to_bytes(4, "big") + bytes(size - 4))
        for n in range(first, first + count)
    ]
    sent = time.monotonic_ns() if sent_ns is None else sent_ns
    head = cp._HEAD.pack(True, 0, 0, 0, count, sent)
    return cp._FRAMES + head + pcap(records, magic=PCAP_NS)[24:]


def test_an_error_while_gathering_comes_after_the_frames_before_it() -> None:
    """Three busy batches are gathered into one block, and an ERROR that follows them is
    raised only once that block is out, so the frames captured before a capture failure
    are still recorded."""
    capture, child = piped_capture()
    for k in range(3):
        child.send_bytes(frames_message(300 * k, 300))
    child.send_bytes(cp._ERROR + b"capture failed: interface went down")
    blocks: list[FrameBlock] = []
    with pytest.raises(CaptureError, match="interface went down"):
        blocks.extend(capture.blocks(lambda idle: None, 0.05))
    assert [len(b) for b in blocks] == [900]
    assert blocks[0].times.tolist() == [1_800_000_000 * 10**9 + i for i in range(900)]
    capture._conn.close()
    child.close()


def test_gathering_stops_at_a_capture_blocks_worth_of_bytes() -> None:
    """Jumbo frames: four batches of 300 frames of 20,000 bytes (6 MB each) are gathered
    only until 16 MiB is in hand, not into one block of 24 MB (at 16,384 frames of 64 KiB,
    that would be a GiB held, then copied)."""
    capture, child = piped_capture()

    def send() -> None:
        for k in range(4):
            child.send_bytes(frames_message(300 * k, 300, 20_000))
        child.send_bytes(cp._ERROR + b"capture failed: end of test")

    sender = threading.Thread(target=send)
    sender.start()
    blocks: list[FrameBlock] = []
    with pytest.raises(CaptureError, match="end of test"):
        blocks.extend(capture.blocks(lambda idle: None, 0.05))
    sender.join()
    assert [len(b) for b in blocks] == [900, 300]
    got = [int.from_bytes(f.data[:4], "big") for b in blocks for f in b.frames()]
    assert got == list(range(1200))
    capture._conn.close()
    child.close()


def test_an_idle_report_read_late_does_not_make_the_tick_idle() -> None:
    """The child found the ring empty, but the report was read 0.3 s later (the recording
    process busy): frames captured meanwhile may wait, so that tick is not idle; a report
    read at once is."""
    capture, child = piped_capture()

    def send() -> None:
        child.send_bytes(frames_message(0, 1, sent_ns=time.monotonic_ns() - 300_000_000))
        time.sleep(0.2)
        child.send_bytes(frames_message(1, 1))
        time.sleep(0.2)
        child.send_bytes(cp._ERROR + b"capture failed: end of test")

    sender = threading.Thread(target=send)
    sender.start()
    ticks: list[bool] = []
    with pytest.raises(CaptureError, match="end of test"):
        for _ in capture.blocks(ticks.append, 0.05):
            pass
    sender.join()
    assert ticks[0] is False  # right after the late report (then silence: not idle either)
    assert ticks.count(True) == 1  # the report read at once
    capture._conn.close()
    child.close()
