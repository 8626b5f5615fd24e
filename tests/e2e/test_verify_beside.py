"""`recorder verify` run beside a recorder that is writing: what verify read at its start
(the audit trail, then the index) is older than what it finds on disk at its end. A
recording closed in between, or opened and closed while verify ran, is not a failure; a
changed hash still is. Before, both were reported ("no audit record of its closing",
"file ... is not in the index"): a verify of a busy live archive could not pass."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from recorder.config import Config
from recorder.core.events import RecordingAudio, RecordingEnded, RecordingStarted
from recorder.runtime import verify
from recorder.runtime.archive import Archive
from recorder.runtime.audit import AuditReport
from recorder.runtime.index import Index
from recorder.runtime.session import ArchiveSession
from tests.e2e.test_two_recorders import MASTER, T, tone


def record(session: ArchiveSession, serial: int, call_id: str) -> None:
    session.writer.handle(RecordingStarted(serial, call_id, "a", "b", T, 8000, 2))
    session.writer.handle(RecordingAudio(serial, tone(1, 1000 * serial)))
    session.writer.handle(RecordingEnded(serial, T + 10**9, "bye", ("PCMU",)))
    session.writer.commit()


def recorded_archive(tmp_path: Path) -> tuple[Archive, list[str]]:
    archive = tmp_path / "a"
    session = ArchiveSession(archive, MASTER, "service", Config())
    record(session, 1, "c1")
    record(session, 2, "c2")
    session.close()
    with Index(archive / "index.sqlite") as index:
        ids = [row.id for row in sorted(index.list_recordings(), key=lambda r: r.call_id)]
    return Archive(archive), ids


def older_trail(monkeypatch: pytest.MonkeyPatch, keep: object) -> None:
    """Verify's first read of the trail sees only the records `keep` accepts."""
    real = verify._trail
    calls = [0]

    def trail(archive: Archive, backends: object) -> AuditReport:
        report = real(archive, backends)  # type: ignore[arg-type]
        calls[0] += 1
        if calls[0] == 1:
            report.records = [r for r in report.records if keep(r)]  # type: ignore[operator]
        return report

    monkeypatch.setattr(verify, "_trail", trail)


def test_a_recording_closed_between_the_trail_and_the_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, (_, second) = recorded_archive(tmp_path)
    older_trail(
        monkeypatch,
        lambda r: not (r["event"] == "recording.closed" and r["recording_id"] == second),
    )
    report = verify.verify_archive(archive, {MASTER.kid: MASTER}, "t")
    assert report.failures == [] and report.recordings_ok == 2


def test_a_recording_opened_and_closed_while_verify_ran(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, (_, second) = recorded_archive(tmp_path)
    older_trail(monkeypatch, lambda r: r.get("recording_id") != second)
    real_list = Index.list_recordings
    monkeypatch.setattr(
        Index,
        "list_recordings",
        lambda self, *a, **k: [r for r in real_list(self, *a, **k) if r.id != second],
    )
    report = verify.verify_archive(archive, {MASTER.kid: MASTER}, "t")
    assert report.failures == [] and report.recordings_ok == 1


def test_a_hash_audited_late_is_still_compared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, (_, second) = recorded_archive(tmp_path)
    with Index(archive.index_path) as index:  # the index and the file agree; the trail not
        row = index.get(second)
        assert row is not None
    real = verify._trail
    calls = [0]

    def trail(arch: Archive, backends: object) -> AuditReport:
        report = real(arch, backends)  # type: ignore[arg-type]
        calls[0] += 1
        closed = [r for r in report.records if r.get("recording_id") == second]
        if calls[0] == 1:
            report.records = [r for r in report.records if r not in closed]
        else:
            report.records = [
                dict(r, sha256="0" * 64) if r["event"] == "recording.closed" and r in closed else r
                for r in report.records
            ]
        return report

    monkeypatch.setattr(verify, "_trail", trail)
    report = verify.verify_archive(archive, {MASTER.kid: MASTER}, "t")
    assert report.failures == [
        f"audit trail: recording {second} differs from the hash the trail recorded"
    ]
    assert dataclasses.asdict(row)["sha256"] != "0" * 64
