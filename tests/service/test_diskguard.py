"""Disk nearly full: new recordings refused below archive.min_free_bytes, one log line and
one audit record per transition, resumes by itself; the audit trail stays writable."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from recorder.config import ArchiveSettings, Config
from recorder.core.events import RecordingAudio, RecordingEnded, RecordingStarted
from recorder.runtime.audit import AuditTrail
from recorder.runtime.diskguard import REFUSAL, DiskGuard, guard_for
from recorder.runtime.keyfile import generate_master_key
from recorder.runtime.session import ArchiveSession
from tests.tmpfs import mounted_tmpfs

MIB = 1024 * 1024


class FakeDisk:
    def __init__(self, free: int) -> None:
        self.free = free
        self.calls = 0

    def __call__(self, _path: Path) -> os.statvfs_result:
        self.calls += 1
        return os.statvfs_result((4096, 4096, 0, 0, self.free // 4096, 0, 0, 0, 0, 255))


def test_refuses_below_threshold_logs_once_and_resumes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    disk = FakeDisk(100 * MIB)
    now = [0.0]
    trail = AuditTrail(tmp_path / "audit.jsonl", "test")
    guard = DiskGuard(tmp_path, 50 * MIB, trail, statvfs=disk, clock=lambda: now[0])
    assert guard() is None and guard.free_bytes == 100 * MIB
    disk.free = 10 * MIB
    assert guard() is None  # cached for a second: one statvfs per burst of calls
    assert disk.calls == 1
    with caplog.at_level(logging.WARNING, "recorder.runtime.diskguard"):
        for step in range(2, 30):
            now[0] = step * 0.5
            assert guard() == REFUSAL
        disk.free = 60 * MIB
        now[0] = 20.0
        assert guard() is None
    assert disk.calls == 16
    assert [r.getMessage() for r in caplog.records] == [
        f"disk nearly full: 10 MiB free in {tmp_path}, below archive.min_free_bytes (50 MiB); "
        "new calls are not recorded until space returns",
        f"disk space back: 60 MiB free in {tmp_path}; recording new calls again",
    ]
    trail.close()
    records = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(r["event"], r["outcome"], r["free_bytes"]) for r in records] == [
        ("storage.low", "failure", 10 * MIB),
        ("storage.recovered", "ok", 60 * MIB),
    ]


def test_unknown_free_space_admits(tmp_path: Path) -> None:
    def broken(_path: Path) -> os.statvfs_result:
        raise OSError(5, "Input/output error")

    guard = DiskGuard(tmp_path, 50 * MIB, None, statvfs=broken)
    assert guard() is None and guard.free_bytes == -1


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs (needs root); skipped with the reason where it cannot be mounted."""
    folder = tmp_path / "fs"
    folder.mkdir()
    with mounted_tmpfs(folder, "4m"):
        yield folder


def _call(session: ArchiveSession, serial: int, start_ns: int) -> None:
    writer = session.writer
    writer.handle(RecordingStarted(serial, f"c{serial}", "a", "b", start_ns, 8000, 2))
    writer.handle(RecordingAudio(serial, b"\x01\x00" * 2 * 8000))
    writer.handle(RecordingEnded(serial, start_ns + 10**9, "bye", ("PCMU",)))
    writer.commit()  # as the loop does after each batch of events


def test_full_tmpfs_refuses_then_resumes(small_fs: Path) -> None:
    config = replace(Config(), archive=ArchiveSettings(path=str(small_fs), min_free_bytes=2 * MIB))
    session = ArchiveSession(small_fs / "archive", generate_master_key(), "test", config)
    guard = guard_for(session.archive)
    assert guard is not None
    t0 = 1_700_000_000 * 10**9
    _call(session, 1, t0)
    ballast = small_fs / "ballast"
    ballast.write_bytes(b"\0" * (3 * MIB))  # leaves well under 2 MiB free
    guard._checked_at = None  # skip the one-second cache in the test
    _call(session, 2, t0 + 10**9)
    _call(session, 3, t0 + 2 * 10**9)
    assert session.writer.stats.refused == 2 and session.writer.stats.closed == 1
    ballast.unlink()
    guard._checked_at = None
    _call(session, 4, t0 + 3 * 10**9)
    assert session.writer.stats.closed == 2
    session.close()
    events = [json.loads(x)["event"] for x in session.archive.audit_path.read_text().splitlines()]
    assert events == [
        "recording.opened", "recording.closed",
        "storage.low", "recording.refused", "recording.refused",
        "storage.recovered", "recording.opened", "recording.closed",
    ]  # fmt: skip
