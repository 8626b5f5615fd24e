"""The live service across a step of the system clock: the service notices it
(`ClockWatch`), takes it out of the capture times, audits it, and the call in progress is
recorded whole, with its wall-clock start. The capture is a stand-in that hands over the
blocks a ring would (the same frames as tests/core/test_clock_steps.py), and the watch a
stand-in that reports the step as the real one would on the block read after it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import generate_latest

from recorder.core.model import LINKTYPE_ETHERNET, FrameBlock
from recorder.core.pipeline import RecorderCore
from recorder.runtime import logsetup
from recorder.runtime.clockwatch import ClockWatch
from recorder.runtime.keyfile import generate_master_key, write_key_file
from recorder.runtime.live import CaptureState
from recorder.runtime.metrics import make_registry
from recorder.runtime.service import STEP_SETTLE_S, Service
from recorder.runtime.servicecfg import load_keys, load_service_config
from tests.core.test_clock_steps import BLOCK, CALL, HOUR, SWITCH, block_of, run, stepped_at
from tests.service.harness import free_port
from tests.service.recordings import export_pcm, recordings, verify


class SteppingWatch(ClockWatch):
    def __init__(self) -> None:
        self.next_step: int | None = None

    def step(self) -> int | None:
        step, self.next_step = self.next_step, None
        return step


class BlocksCapture:
    """The frames a ring would hand over, BLOCK at a time; the wall clock is stepped by
    `delta` just before frame SWITCH was stamped."""

    warning = ""

    def __init__(self, watch: SteppingWatch, delta: int) -> None:
        self.watch, self.delta = watch, delta
        self.state = CaptureState(linktype=LINKTYPE_ETHERNET)

    @property
    def linktype(self) -> int:
        return LINKTYPE_ETHERNET

    def stop(self) -> None:
        pass

    def close(self) -> None:
        pass

    def blocks(self, tick: Callable[[bool], None], tick_s: float = 0.1) -> Iterator[FrameBlock]:
        frames = stepped_at(CALL, SWITCH, self.delta)
        for at in range(0, len(frames), BLOCK):
            if at <= SWITCH < at + BLOCK:
                self.watch.next_step = self.delta  # noticed when this block is read
            yield block_of(frames[at : at + BLOCK])
            tick(False)  # (busy ticks: an idle one would bring today's wall clock)


@pytest.mark.parametrize("delta", [-HOUR, HOUR])
def test_the_service_records_a_call_whole_across_a_clock_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, delta: int
) -> None:
    monkeypatch.setattr(logsetup, "configure", lambda level: None)  # pytest's handlers stay
    key = tmp_path / "master.key"
    write_key_file(key, generate_master_key())
    archive = tmp_path / "archive"
    config = load_service_config(
        None,
        {
            "interface": "lo",
            "archive": archive,
            "key": key,
            "metrics_address": f"127.0.0.1:{free_port()}",
        },
    )
    watch = SteppingWatch()
    service = Service(
        config,
        load_keys(config),
        "test",
        capture_factory=lambda settings: BlocksCapture(watch, delta),
        clock_watch=lambda: watch,
    )
    assert service.run() == 0

    [row] = recordings(archive)
    assert (row["start"], row["end"]) == (  # the first RTP's wall clock, and 20 s on
        "2023-11-14T22:13:20.200000Z",
        "2023-11-14T22:13:40.200000Z",
    )
    assert row["complete"] is True and row["reason"] == "bye"
    pcm = export_pcm(archive, key, str(row["id"]), tmp_path / "call.wav")
    expected = np.frombuffer(run(CALL).pcm[1], "<i2").reshape(-1, 2)
    assert np.array_equal(pcm, expected)  # 20 s, every sample where it was
    metrics = generate_latest(make_registry(service.sources)).decode().splitlines()
    assert "recorder_clock_steps_total 1.0" in metrics
    trail = (archive / "audit" / "audit.jsonl").read_text().splitlines()
    audit = [json.loads(line) for line in trail]
    [step] = [a for a in audit if a["event"] == "capture.clock_stepped"]
    assert step["delta_ms"] == delta // 1_000_000
    assert "altered" not in verify(archive, key)


def test_the_watch_tells_a_step_from_slewing() -> None:
    ms = 1_000_000
    wall, boot = [1_800_000_000 * 10**9], [5 * 10**9]
    watch = ClockWatch(lambda: wall[0], lambda: boot[0])
    for _ in range(36_000):  # an hour of looks 100 ms apart, NTP slewing at 500 ppm
        boot[0] += 100 * ms
        wall[0] += 100 * ms + ms // 20
        assert watch.step() is None  # 1.8 s in all: never one step
    wall[0] -= HOUR
    assert watch.step() == -HOUR
    assert watch.step() is None
    wall[0] += 1500 * ms
    assert watch.step() == 1500 * ms
    assert ClockWatch().step() is None  # this machine's own clocks


def test_the_watch_sees_no_step_in_a_read_it_was_descheduled_in() -> None:
    """Preempted (or stopped) for 3 s just after reading the wall clock, before reading
    the boot clock: no step happened, and none is reported (the read is taken again)."""
    now = [0]
    stall = [False, False]  # armed, done

    def wall() -> int:
        if stall[0] and not stall[1]:
            stall[1] = True  # the next read of the boot clock comes 3 s late
        return 1_800_000_000 * 10**9 + now[0]

    def boot() -> int:
        if stall[1] and stall[0]:
            now[0] += 3 * 10**9
            stall[0] = False
        now[0] += 1_000
        return 5 * 10**9 + now[0]

    watch = ClockWatch(wall, boot)
    stall[0] = True
    assert watch.step() is None
    assert watch.step() is None


def test_on_a_quiet_link_a_tick_takes_the_step_once_the_ring_has_emptied(
    tmp_path: Path,
) -> None:
    """No frame may show a step on a quiet link: an idle tick takes it, but only
    STEP_SETTLE_S after it was noticed (frames stamped before it may still wait in the
    kernel's unfinished block); until then the timers wait, rather than run an hour
    early or late."""
    key = tmp_path / "master.key"
    write_key_file(key, generate_master_key())
    config = load_service_config(None, {"key": key})
    watch = SteppingWatch()
    service = Service(config, load_keys(config), "test", clock_watch=lambda: watch)
    service._clock_watch = watch
    service.core = core = RecorderCore()
    t0 = 1_800_000_000 * 10**9
    core.handle_timer(t0)
    assert service._core_time(t0 + 10**8) == t0 + 10**8
    watch.next_step = -HOUR
    assert service._core_time(t0 + 2 * 10**8 - HOUR) is None  # noticed: wait
    assert service._core_time(t0 + 3 * 10**8 - HOUR) is None
    service._step_noticed -= STEP_SETTLE_S  # the ring has emptied since
    assert service._core_time(t0 + 4 * 10**8 - HOUR) == t0 + 4 * 10**8
    assert [step.delta_ns for step in service.clock.applied] == [-HOUR]
