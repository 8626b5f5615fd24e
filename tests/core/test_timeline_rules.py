"""The recording's timeline contract, checked sample for sample on scapy-made calls.

Expected audio is computed independently of the recorder: G.711 through `audioop` (the
C reference that shipped with Python up to 3.12) and G.722 through a fresh decoder."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pytest

from recorder.core.events import RecordingAudio, RecordingEnded, RecordingStarted
from recorder.core.pipeline import RecorderCore
from tests.builders import NS, CallBuilder, rtp

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

T0 = 1_700_000_000 * NS
MS = 1_000_000
CALLER_START = T0 + 1000 * MS
CALLEE_START = T0 + 1100 * MS  # 100 ms later: 800 samples into the recording


@dataclass
class Result:
    started: RecordingStarted
    ended: RecordingEnded
    pcm: np.ndarray  # shape (n, 2)


def run(frames: list) -> Result:
    core = RecorderCore()
    for frame in frames:
        core.receive_frame(frame)
    core.close()
    events = list(core.events())
    started = [e for e in events if isinstance(e, RecordingStarted)]
    ended = [e for e in events if isinstance(e, RecordingEnded)]
    assert len(started) == 1 and len(ended) == 1, events
    pcm = b"".join(e.pcm for e in events if isinstance(e, RecordingAudio))
    return Result(started[0], ended[0], np.frombuffer(pcm, "<i2").reshape(-1, 2))


def payload(i: int, side: int) -> bytes:
    return bytes((i * 7 + k * (3 + side)) % 256 for k in range(160))


def ulaw(data: bytes) -> np.ndarray:
    return np.frombuffer(audioop.ulaw2lin(data, 2), "<i2")


def base_call(
    caller_packets: Iterable[int] = range(50), callee_packets: Iterable[int] = range(50)
) -> CallBuilder:
    call = CallBuilder()
    call.invite(T0)
    call.answer(T0 + 500 * MS)
    for i in caller_packets:
        call.rtp_from_caller(
            CALLER_START + i * 20 * MS, rtp(0, 100 + i, 1000 + 160 * i, 0xAAAA, payload(i, 0))
        )
    for i in callee_packets:
        call.rtp_from_callee(
            CALLEE_START + i * 20 * MS, rtp(0, 7 + i, 5000 + 160 * i, 0xBBBB, payload(i, 1))
        )
    call.bye(T0 + 3000 * MS)
    return call


def expected(caller: dict[int, bytes], callee: dict[int, bytes], length: int) -> np.ndarray:
    out = np.zeros((length, 2), dtype="<i2")
    for i, data in caller.items():
        out[i * 160 : (i + 1) * 160, 0] = ulaw(data)
    for i, data in callee.items():
        out[800 + i * 160 : 800 + (i + 1) * 160, 1] = ulaw(data)
    return out


def full(side: int, skip: tuple[int, ...] = ()) -> dict[int, bytes]:
    return {i: payload(i, side) for i in range(50) if i not in skip}


def test_both_sides_placed_from_the_first_packet_of_each() -> None:
    result = run(base_call().sorted_frames())
    assert result.started.sample_rate == 8000 and result.started.channels == 2
    assert result.started.start_ns == CALLER_START
    assert result.started.caller == "+4930111" and result.started.callee == "+4930222"
    np.testing.assert_array_equal(result.pcm, expected(full(0), full(1), 800 + 50 * 160))
    assert result.ended.end_ns == CALLER_START + (800 + 50 * 160) * NS // 8000
    assert result.ended.codecs == ("PCMU",)


def test_lost_packet_is_silence() -> None:
    result = run(base_call(caller_packets=[i for i in range(50) if i != 10]).sorted_frames())
    np.testing.assert_array_equal(result.pcm, expected(full(0, skip=(10,)), full(1), 8800))


def test_duplicate_counts_once() -> None:
    call = base_call()
    call.rtp_from_caller(
        CALLER_START + 5 * 20 * MS + 3 * MS, rtp(0, 105, 1000 + 160 * 5, 0xAAAA, payload(5, 0))
    )
    result = run(call.sorted_frames())
    np.testing.assert_array_equal(result.pcm, expected(full(0), full(1), 8800))
    assert result.ended.stats["duplicates"] == 1


def test_reordered_packets_go_back_to_their_place() -> None:
    frames = base_call().sorted_frames()
    times = [f.ts_ns for f in frames]
    rtp_idx = [k for k, f in enumerate(frames) if f.data[36:38] == (50000).to_bytes(2, "big")]
    a, b = rtp_idx[7], rtp_idx[9]  # caller packets 7 and 9 arrive swapped
    frames[a], frames[b] = frames[b], frames[a]
    frames = [type(f)(t, f.linktype, f.data) for f, t in zip(frames, times, strict=True)]
    result = run(frames)
    np.testing.assert_array_equal(result.pcm, expected(full(0), full(1), 8800))


def test_dtmf_events_leave_silence() -> None:
    call = base_call(caller_packets=[i for i in range(50) if not 20 <= i < 25])
    for i in range(20, 25):
        event = bytes([5, 0x0A]) + (160 * (i - 19)).to_bytes(
            2, "big"
        )  # RFC 4733: digit 5, volume 10, duration
        call.rtp_from_caller(
            CALLER_START + i * 20 * MS, rtp(101, 100 + i, 1000 + 160 * 20, 0xAAAA, event)
        )
    result = run(call.sorted_frames())
    np.testing.assert_array_equal(
        result.pcm, expected(full(0, skip=(20, 21, 22, 23, 24)), full(1), 8800)
    )


def test_ssrc_change_reanchors_at_capture_time() -> None:
    call = base_call(caller_packets=range(25))
    for i in range(25, 50):  # new SSRC with an unrelated timestamp base
        call.rtp_from_caller(
            CALLER_START + i * 20 * MS, rtp(0, 9000 + i, 777777 + 160 * i, 0xCCCC, payload(i, 0))
        )
    result = run(call.sorted_frames())
    np.testing.assert_array_equal(result.pcm, expected(full(0), full(1), 8800))


def test_late_beyond_jitter_window_is_dropped_and_counted() -> None:
    call = base_call(caller_packets=[i for i in range(50) if i != 3])
    call.rtp_from_caller(
        CALLER_START + 2500 * MS, rtp(0, 103, 1000 + 160 * 3, 0xAAAA, payload(3, 0))
    )
    result = run(call.sorted_frames())
    np.testing.assert_array_equal(result.pcm, expected(full(0, skip=(3,)), full(1), 8800))
    assert result.ended.stats["late"] == 1


def test_g722_records_at_16khz_from_an_8khz_rtp_clock() -> None:
    import G722

    call = CallBuilder(pts={9: "G722/8000"})
    call.invite(T0)
    call.answer(T0 + 500 * MS)
    payloads = [bytes((i * 11 + k) % 256 for k in range(160)) for i in range(30)]
    for i, data in enumerate(payloads):
        if i != 4:  # one lost packet
            call.rtp_from_caller(CALLER_START + i * 20 * MS, rtp(9, i, 160 * i, 0x1234, data))
    result = run(call.sorted_frames())
    assert result.started.sample_rate == 16000
    reference = G722.G722(16000, 64000)
    want = np.zeros((30 * 320, 2), dtype="<i2")
    for i, data in enumerate(payloads):
        if i != 4:
            want[i * 320 : (i + 1) * 320, 0] = np.frombuffer(reference.decode(data), "<i2")
    np.testing.assert_array_equal(result.pcm, want)
    assert result.ended.codecs == ("G722",)


@pytest.mark.parametrize("wrap_at", [0xFFFFFFFF - 160 * 10, 0xFFFF - 10])
def test_timestamp_and_sequence_wrap_around(wrap_at: int) -> None:
    call = base_call(caller_packets=range(0))
    for i in range(50):
        call.rtp_from_caller(
            CALLER_START + i * 20 * MS,
            rtp(0, wrap_at + i, wrap_at + 160 * i, 0xAAAA, payload(i, 0)),
        )
    result = run(call.sorted_frames())
    np.testing.assert_array_equal(result.pcm, expected(full(0), full(1), 8800))
