"""The service's retention thread: one run at a time, failures counted and audited, a run
interrupted between two deletions at shutdown; the metrics of the compliance controls."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from recorder.compliance.retention import RetentionReport, run_retention
from recorder.config import Config, parse_config
from recorder.core.pipeline import RecorderCore
from recorder.runtime.archive import Archive
from recorder.runtime.housekeeping import RetentionStats, RetentionWorker
from recorder.runtime.metrics import EventCounts, MetricsServer, Sources, make_registry
from tests.compliance.helpers import T_2023, capture, make_call, new_archive
from tests.service.harness import free_port

FAST = parse_config("retention: {interval_s: 0.02}")


def audit_events(root: Path) -> list[dict[str, object]]:
    text = (root / "audit" / "audit.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_runs_never_overlap_and_stop_waits_for_the_current_one(tmp_path: Path) -> None:
    active, overlaps, runs = [0], [0], []
    release = threading.Event()

    def runner(archive: Archive, config: Config, actor: str, now: int, **kw: object) -> object:
        active[0] += 1
        overlaps[0] = max(overlaps[0], active[0])
        runs.append(now)
        if len(runs) == 2:
            release.wait(5)  # a run longer than many intervals
        active[0] -= 1
        return RetentionReport(now, deleted=["r1"] if len(runs) == 1 else [])

    worker = RetentionWorker(Archive(tmp_path), FAST, "test", runner=runner, clock=lambda: 7)
    worker.start()
    time.sleep(0.2)
    assert len(runs) == 2 and overlaps[0] == 1  # the second run blocks the third
    release.set()
    time.sleep(0.1)
    assert worker.stop(timeout_s=2)
    assert overlaps[0] == 1 and len(runs) >= 3
    assert worker.stats.deleted == 1 and worker.stats.runs == len(runs)
    assert worker.stats.last_success_ns == 7


def test_a_failed_run_is_logged_audited_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls = []

    def runner(*args: object, **kw: object) -> RetentionReport:
        calls.append(1)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        return RetentionReport(0)

    worker = RetentionWorker(Archive(tmp_path), FAST, "svc", runner=runner)
    worker.start()
    time.sleep(0.15)
    assert worker.stop()
    assert worker.stats.failures == 1 and worker.stats.runs >= 1
    (failed,) = [r for r in audit_events(tmp_path) if r["event"] == "retention.failed"]
    assert (failed["outcome"], failed["actor"]) == ("failure", "svc")
    assert failed["reason"] == "OSError: [Errno 28] No space left on device"
    assert "retention run failed: [Errno 28] No space left on device" in caplog.messages


def test_a_cancelled_run_stops_between_deletions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = "retention: {classes: {default: {days: 1}}}\n"
    ctx = new_archive(tmp_path, capsys, config)
    calls = [make_call(T_2023, n, f"+44{n}", "+4930222") for n in (1, 2)]
    ctx.replay(capsys, capture(tmp_path / "c.pcap", *calls))
    asked = []

    def cancelled() -> bool:  # shutdown arrives after the first deletion
        asked.append(1)
        return len(asked) > 1

    archive = Archive(ctx.root)
    report = run_retention(
        archive, parse_config(config), "svc", time.time_ns(), cancelled=cancelled
    )
    assert report.interrupted and len(report.deleted) == 1
    finished = [r for r in audit_events(ctx.root) if r["event"] == "retention.finished"]
    assert (finished[-1]["deleted"], finished[-1]["interrupted"]) == (1, True)
    again = run_retention(archive, parse_config(config), "svc", time.time_ns())
    assert len(again.deleted) == 1 and not again.interrupted  # the next run finishes


def test_metrics_of_the_compliance_controls() -> None:
    core = RecorderCore()
    core.stats.latched = 3
    core.stats.recordings_started = 5
    core.stats.anomalies["sip_body_shorter_than_content_length"] = 2
    events = EventCounts(
        started=Counter({"pcm_s16le": 3, "rtp": 1}), markers=Counter({"paused": 2, "stopped": 1})
    )
    retention = RetentionStats(runs=4, failures=1, deleted=6, kept=2, last_success_ns=10**18)
    sources = Sources(core=core, events=events, retention=retention, control_requests=3)
    port = free_port()
    server = MetricsServer(f"127.0.0.1:{port}", make_registry(sources))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            lines = set(r.read().decode().splitlines())
    finally:
        server.close()
    for sample in [
        "recorder_rtp_endpoints_latched_total 3.0",
        "recorder_recordings_requested_total 5.0",
        'recorder_anomalies_total{kind="sip_body_shorter_than_content_length"} 2.0',
        'recorder_recording_markers_total{kind="paused"} 2.0',
        'recorder_recording_markers_total{kind="stopped"} 1.0',
        "recorder_control_requests_total 3.0",
        "recorder_retention_runs_total 4.0",
        "recorder_retention_failures_total 1.0",
        "recorder_retention_deleted_recordings_total 6.0",
        "recorder_retention_kept_recordings 2.0",
        "recorder_retention_last_success_timestamp_seconds 1e+09",
    ]:
        assert sample in lines, sample
