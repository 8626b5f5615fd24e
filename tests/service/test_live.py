"""`recorder run` as a process capturing on lo, with calls sent through the kernel:
SIGTERM closes open calls as complete recordings, SIGHUP reloads, SIGKILL is recovered."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from tests.service.harness import Recorder, port_filter, require_capture
from tests.service.peers import LoopbackCall
from tests.service.recordings import export_pcm, find, recordings, ulaw, verify

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("reader_process", [True, False], ids=["reader-process", "one-process"])
def test_sigterm_records_finished_and_open_calls_complete(
    tmp_path: Path, reader_process: bool
) -> None:
    require_capture()
    first = LoopbackCall("live-1@test")
    second = LoopbackCall("live-2@test")
    config = tmp_path / "recorder.yaml"
    config.write_text(f"capture:\n  reader_process: {str(reader_process).lower()}\n")
    recorder = Recorder(tmp_path, bpf=port_filter(first.ports + second.ports), config=config)
    try:
        recorder.start()
        first.setup()
        first.talk(50)
        first.bye()
        second.setup()
        second.talk(40)
        metrics = recorder.scrape_until("recorder_calls_active", 1)  # the first one ended
        notes = recorder.notifications + _drain(recorder)
        assert recorder.stop() == 0  # `second` is still up: closed by the shutdown
    finally:
        first.close()
        second.close()
        recorder.close()
    assert metrics["recorder_calls_started_total"] == 2
    assert metrics["recorder_calls_active"] == 1
    assert metrics['recorder_calls_ended_total{outcome="recorded"}'] == 1
    assert metrics["recorder_recordings_open"] == 1
    assert metrics["recorder_capture_kernel_dropped_packets_total"] == 0
    assert metrics["recorder_audit_records_total"] >= 3  # started, 2 x opened, closed
    assert "WATCHDOG=1" in notes
    assert "no recording policy is configured: every call is recorded" in recorder.log()

    rows = {r["call_id"]: r for r in recordings(recorder.archive)}
    assert set(rows) == {"live-1@test", "live-2@test"}
    assert all(r["complete"] for r in rows.values())
    assert "2/2 recordings authentic" in verify(recorder.archive, recorder.key)
    for call, name in ((first, "live-1@test"), (second, "live-2@test")):
        pcm = export_pcm(recorder.archive, recorder.key, str(rows[name]["id"]), tmp_path / "x.wav")
        caller = ulaw(b"".join(call.sent[0]))
        callee = ulaw(b"".join(call.sent[1]))
        assert find(pcm[:, 0], caller) == 0  # sample 0: the first RTP packet
        assert 0 <= find(pcm[:, 1], callee) < 80  # the callee's first packet, < 10 ms later
    stopped = recorder.wait_audit("service.stopped")
    assert stopped["reason"] == "SIGTERM" and stopped["recordings_closed"] == 1
    events = [r["event"] for r in recorder.audit()]
    assert events[events.index("service.stopped") - 1] == "recording.closed"


def _drain(recorder: Recorder) -> list[str]:
    recorder.notify.settimeout(0.01)
    out: list[str] = []
    try:
        while True:
            out += recorder.notify.recv(4096).decode().split("\n")
    except TimeoutError:
        return out


def test_sighup_applies_safe_settings_and_reports_the_rest(tmp_path: Path) -> None:
    require_capture()
    config = tmp_path / "recorder.yaml"
    config.write_text("log:\n  level: INFO\n")
    recorder = Recorder(tmp_path, config=config, bpf="udp port 9")
    try:
        recorder.start()
        config.write_text(
            "log:\n  level: DEBUG\narchive:\n  min_free_bytes: 1024\ncapture:\n  snaplen: 2000\n"
        )
        recorder.signal(signal.SIGHUP)
        reloaded = recorder.wait_audit("config.reloaded")
        assert reloaded["applied"] == {"archive.min_free_bytes": "1024", "log.level": "DEBUG"}
        assert reloaded["needs_restart"] == ["capture.snaplen"]
        assert recorder.scrape()["recorder_storage_min_free_bytes"] == 1024
        config.write_text("log:\n  level: LOUD\n")
        recorder.signal(signal.SIGHUP)
        failed = recorder.wait_audit("config.reload_failed")
        assert failed["reason"] == (
            f"{config}: log.level must be one of 'DEBUG', 'INFO', 'WARNING', 'ERROR', not 'LOUD'"
        )
        assert recorder.scrape()["recorder_config_reloads_total"] == 1
        assert recorder.stop() == 0
    finally:
        recorder.close()
    assert "config reloaded; needs a restart to apply: capture.snaplen" in recorder.log()


def test_sigkill_mid_call_then_restart_recovers_the_prefix(tmp_path: Path) -> None:
    """What a SIGKILL may lose (writer.py): the audio still in the jitter window and the
    flush interval (1 s + 1 s, here waited out), what the append thread has not written
    (one turn of the loop, also waited out) and the unsealed tail of the last 16 KiB
    segment: under 4096 stereo frames (0.512 s at 8 kHz)."""
    require_capture()
    call = LoopbackCall("killed@test")
    recorder = Recorder(tmp_path, bpf=port_filter(call.ports))
    try:
        recorder.start()
        call.setup()
        call.talk(200, sides=(0,))  # 4 s from the caller only
        time.sleep(2.6)  # past the jitter window and a flush: handed to the writer
        recorder.kill()
        assert list(recorder.archive.rglob("*.rec.partial"))

        again = Recorder(tmp_path, bpf=port_filter(call.ports))
        again.start()  # recovery runs as the archive opens
        assert again.scrape()["recorder_recordings_recovered_total"] == 1
        assert again.stop() == 0
        again.close()
    finally:
        call.close()
        recorder.close()
    rows = recordings(recorder.archive)
    assert len(rows) == 1 and rows[0]["complete"] is False
    assert "1/1 recordings authentic" in verify(recorder.archive, recorder.key)
    recovered = [r for r in recorder.audit() if r["event"] == "recording.recovered"]
    assert len(recovered) == 1 and recovered[0]["recording_id"] == rows[0]["id"]
    pcm = export_pcm(recorder.archive, recorder.key, str(rows[0]["id"]), tmp_path / "k.wav")
    sent = ulaw(b"".join(call.sent[0]))
    # While the call is up its recording goes on in silence, so more than `sent` may be
    # there; at most the unsealed segment may be missing.
    assert len(pcm) >= len(sent) - 4096
    kept = min(len(pcm), len(sent))
    assert np.array_equal(pcm[:kept, 0], sent[:kept])
    assert not pcm[kept:].any() and not pcm[:, 1].any()


def test_a_locked_index_does_not_stop_the_service(tmp_path: Path) -> None:
    """An operator's `sqlite3` shell holds the index's write lock while calls end: the
    service records on, shows the waiting writes, and catches up once it is released.
    (Before, it waited 10 s and exited with "database is locked".)"""
    require_capture()
    first = LoopbackCall("locked-1@test")
    second = LoopbackCall("locked-2@test")
    recorder = Recorder(tmp_path, bpf=port_filter(first.ports + second.ports))
    try:
        recorder.start()
        lock = sqlite3.connect(recorder.archive / "index.sqlite", isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        for call in (first, second):
            call.setup()
            call.talk(40)
            call.bye()
        held = recorder.scrape_until("recorder_index_writes_waiting", 4, timeout=15)
        assert held["recorder_recordings_written_total"] == 2  # final: only their rows wait
        assert recordings(recorder.archive) == []
        time.sleep(12)  # longer than the old 10 s wait: the service lives on
        assert recorder.proc is not None and recorder.proc.poll() is None
        lock.execute("ROLLBACK")
        lock.close()
        metrics = recorder.scrape_until("recorder_index_writes_waiting", 0, timeout=10)
        assert recorder.stop() == 0
    finally:
        first.close()
        second.close()
        recorder.close()
    assert metrics["recorder_index_write_deferrals_total"] >= 1
    rows = {r["call_id"]: r for r in recordings(recorder.archive)}
    assert {name: r["state"] for name, r in rows.items()} == {
        "locked-1@test": "closed",
        "locked-2@test": "closed",
    }
    assert "2/2 recordings authentic" in verify(recorder.archive, recorder.key)
    for call in (first, second):
        pcm = export_pcm(
            recorder.archive, recorder.key, str(rows[call.call_id]["id"]), tmp_path / "x.wav"
        )
        assert find(pcm[:, 0], ulaw(b"".join(call.sent[0]))) == 0
