"""The service's small shells: sd_notify, the metrics endpoint, journald log lines."""

from __future__ import annotations

import logging
import socket
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from recorder.core.pipeline import RecorderCore
from recorder.runtime.libpcap import PcapStats
from recorder.runtime.live import CaptureState
from recorder.runtime.logsetup import JournalFormatter
from recorder.runtime.metrics import MetricsServer, Sources, make_registry, parse_address
from recorder.runtime.runner import LoopStats
from recorder.runtime.sdnotify import Notifier
from tests.service.harness import free_port


def test_notify_sends_datagrams_and_paces_the_watchdog(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        notifier = Notifier(str(path), watchdog_usec=2_000_000)
        assert notifier.notify("READY=1", "STATUS=capturing on lo")
        assert server.recv(100) == b"READY=1\nSTATUS=capturing on lo"
        assert [notifier.watchdog_due(t) for t in (10.0, 10.5, 10.99, 11.0)] == [
            True, False, False, True,
        ]  # fmt: skip
        for _ in range(50):  # nobody reads: the queue fills, and we must not block
            notifier.notify("WATCHDOG=1")
        notifier.close()


def test_notify_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not Notifier.from_environment().notify("READY=1")
    monkeypatch.setenv("NOTIFY_SOCKET", "@abstract")
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", "1")  # another process's watchdog: not ours
    assert Notifier.from_environment().watchdog_s == 0


def test_metrics_endpoint_serves_the_counters() -> None:
    core = RecorderCore()
    core.stats.calls_seen = 3
    core.stats.drops.update(Counter({("udp", "unmatched"): 7, ("sip", "bad_start_line"): 1}))
    core.stats.not_recorded["not_answered"] = 2
    capture = CaptureState(linktype=1, lag_ns=250_000_000, kernel=PcapStats(100, 4, 1))
    sources = Sources(core=core, loop=LoopStats(frames=96), capture=capture, libpcap="x")
    port = free_port()
    server = MetricsServer(f"127.0.0.1:{port}", make_registry(sources))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    finally:
        server.close()
    lines = set(text.splitlines())
    for sample in [
        "recorder_capture_packets_total 96.0",
        "recorder_capture_kernel_dropped_packets_total 4.0",
        "recorder_capture_interface_dropped_packets_total 1.0",
        "recorder_capture_lag_seconds 0.25",
        'recorder_decode_dropped_total{layer="udp",reason="unmatched"} 7.0',
        'recorder_decode_dropped_total{layer="sip",reason="bad_start_line"} 1.0',
        "recorder_calls_started_total 3.0",
        'recorder_calls_ended_total{outcome="not_answered"} 2.0',
        "recorder_calls_active 0.0",
    ]:
        assert sample in lines, sample
    names = {ln.split(" ")[2] for ln in lines if ln.startswith("# TYPE")}
    assert all(n.startswith("recorder_") for n in names)
    counters = {
        ln.split(" ")[2] for ln in lines if ln.startswith("# TYPE") and ln.endswith("counter")
    }
    assert counters and all(n.endswith("_total") for n in counters)


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:9750") == ("127.0.0.1", 9750)
    assert parse_address("[::1]:9750") == ("::1", 9750)


def test_journal_lines_carry_the_priority_and_stay_one_line() -> None:
    fmt = JournalFormatter("%(name)s: %(message)s")
    record = logging.LogRecord("recorder.service", logging.ERROR, "f", 1, "a\nb", None, None)
    assert fmt.format(record) == "<3>recorder.service: a\\nb"
    record.levelno = logging.INFO
    assert fmt.format(record) == "<6>recorder.service: a\\nb"
