"""`recorder verify` run beside a recorder, a retention run or an erasure: what verify read
at its start (the audit trail, then the index) is older than what it finds at its end. A
recording closed in between, opened and closed while verify ran, or deleted in between is
not a failure; a changed hash or a key left behind still is. Before, such recordings were
reported ("no audit record of its closing", "file ... is not in the index", "not in the
index (deleted?)"): a verify of a busy live archive could not pass."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from recorder.compliance.retention import Disposer
from recorder.config import Config
from recorder.core.events import RecordingAudio, RecordingEnded, RecordingStarted
from recorder.runtime import verify
from recorder.runtime.archive import Archive
from recorder.runtime.audit import AuditReport, AuditTrail
from recorder.runtime.index import Index
from recorder.runtime.keystore import KeyStore
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


Records = list[dict[str, object]]


def trails(
    monkeypatch: pytest.MonkeyPatch,
    first: Callable[[Records], Records],
    later: Callable[[Records], Records] = lambda records: records,
) -> None:
    """What verify reads of the trail: `first(records)` at its start, `later(records)`
    when it reads it again at its end."""
    real = verify._trail
    reads = [0]

    def trail(archive: Archive, backends: object) -> AuditReport:
        report = real(archive, backends)  # type: ignore[arg-type]
        reads[0] += 1
        report.records = (first if reads[0] == 1 else later)(report.records)
        return report

    monkeypatch.setattr(verify, "_trail", trail)


def closing(record: dict[str, object], recording_id: str) -> bool:
    """The audit record of `recording_id`'s closing (its hash)."""
    return record["event"] == "recording.closed" and record["recording_id"] == recording_id


def without(records: Records, keep: Callable[[dict[str, object]], bool]) -> Records:
    return [r for r in records if keep(r)]


def test_a_recording_closed_between_the_trail_and_the_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, (_, second) = recorded_archive(tmp_path)
    trails(monkeypatch, lambda records: without(records, lambda r: not closing(r, second)))
    report = verify.verify_archive(archive, {MASTER.kid: MASTER}, "t")
    assert report.failures == [] and report.recordings_ok == 2


def test_a_recording_opened_and_closed_while_verify_ran(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, (_, second) = recorded_archive(tmp_path)
    trails(monkeypatch, lambda records: without(records, lambda r: r.get("recording_id") != second))
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
    trails(
        monkeypatch,
        lambda records: without(records, lambda r: not closing(r, second)),
        lambda records: [dict(r, sha256="0" * 64) if closing(r, second) else r for r in records],
    )
    report = verify.verify_archive(archive, {MASTER.kid: MASTER}, "t")
    assert report.failures == [
        f"audit trail: recording {second} differs from the hash the trail recorded"
    ]


def erase(archive: Archive, recording_id: str) -> None:
    """Delete one recording as an erasure does (audit, key, file, row)."""
    with (
        Index(archive.index_path) as index,
        KeyStore(archive.keystore_path) as keys,
        AuditTrail(archive.audit_path, "dpo") as audit,
    ):
        row = index.get(recording_id)
        assert row is not None
        assert Disposer(archive, index, keys, audit).delete(row, T, "erasure") is None


def deletion(record: dict[str, object], recording_id: str) -> bool:
    return record["event"] == "recording.deleted" and record["recording_id"] == recording_id


def test_a_recording_deleted_between_the_trail_and_the_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An erasure or a retention run beside verify: the trail verify read first has the
    recording's closing but not yet its deletion, the index it read next no longer has it."""
    archive, (_, second) = recorded_archive(tmp_path)
    erase(archive, second)
    trails(monkeypatch, lambda records: without(records, lambda r: not deletion(r, second)))
    report = verify.verify_archive(archive, {MASTER.kid: MASTER}, "t")
    assert report.failures == [] and report.recordings_ok == 1


def test_a_recording_gone_from_the_index_without_a_deletion_fails(tmp_path: Path) -> None:
    archive, (_, second) = recorded_archive(tmp_path)
    with Index(archive.index_path) as index:
        index.delete_recording(second)
    report = verify.verify_archive(archive, {MASTER.kid: MASTER}, "t")
    assert f"audit trail: recording {second} is not in the index (deleted?)" in report.failures


def test_a_deletion_audited_late_with_its_key_left_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, (_, second) = recorded_archive(tmp_path)
    with Index(archive.index_path) as index, AuditTrail(archive.audit_path, "dpo") as audit:
        audit.append("recording.deleted", recording_id=second, reason="erasure")
        index.delete_recording(second)  # row gone, key and file kept: not a real deletion
    trails(monkeypatch, lambda records: without(records, lambda r: not deletion(r, second)))
    report = verify.verify_archive(archive, {MASTER.kid: MASTER}, "t")
    assert f"recording {second}: audited as deleted but its file key remains" in report.failures
    assert len(report.failures) == 2  # and its file, still there, is not in the index


def delete_after_listing(monkeypatch: pytest.MonkeyPatch, deletion: Callable[[], None]) -> None:
    """`deletion` runs just after verify has listed the index."""
    real_list = Index.list_recordings

    def listing(self: Index, *a: object, **k: object) -> list[object]:
        rows = real_list(self, *a, **k)  # type: ignore[arg-type]
        deletion()
        return rows  # type: ignore[return-value]

    monkeypatch.setattr(Index, "list_recordings", listing)


def test_a_recording_deleted_after_the_index_was_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, (_, second) = recorded_archive(tmp_path)
    delete_after_listing(monkeypatch, lambda: erase(archive, second))
    report = verify.verify_archive(archive, {MASTER.kid: MASTER}, "t")
    assert report.failures == []
    assert (report.recordings, report.recordings_ok) == (1, 1)
    assert f"recording {second} was deleted while verify ran" in report.notes


def test_a_recording_whose_key_is_being_destroyed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Audited as deleted and its key destroyed; its file and row not yet removed."""
    archive, (_, second) = recorded_archive(tmp_path)

    def half_deleted() -> None:
        with KeyStore(archive.keystore_path) as keys, AuditTrail(archive.audit_path, "dpo") as a:
            a.append("recording.deleted", recording_id=second, reason="erasure")
            keys.delete(second)

    delete_after_listing(monkeypatch, half_deleted)
    report = verify.verify_archive(archive, {MASTER.kid: MASTER}, "t")
    assert report.failures == [] and report.recordings_ok == 1
    monkeypatch.undo()
    later = verify.verify_archive(archive, {MASTER.kid: MASTER}, "t")  # never finished
    assert later.failures == [
        f"recording {second}: audited as deleted but still in the index "
        "(deletion interrupted: run the deletion again)"
    ]


def test_a_missing_key_without_a_deletion_still_fails(tmp_path: Path) -> None:
    archive, (_, second) = recorded_archive(tmp_path)
    with KeyStore(archive.keystore_path) as keys:
        keys.delete(second)
    report = verify.verify_archive(archive, {MASTER.kid: MASTER}, "t")
    assert report.failures == [
        f"recording {second}: its file key is not in the key store (destroyed or never stored)"
    ]


def test_a_deletion_audited_before_the_index_was_read_and_finished_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Verify read the trail with the deletion in it, then the index with the row still in
    it (a deletion removes the row last); the deletion finished while verify ran."""
    archive, (_, second) = recorded_archive(tmp_path)
    with AuditTrail(archive.audit_path, "dpo") as audit:
        audit.append("recording.deleted", recording_id=second, reason="erasure")

    def finish() -> None:
        with Index(archive.index_path) as index, KeyStore(archive.keystore_path) as keys:
            row = index.get(second)
            assert row is not None
            keys.delete(second)
            archive.resolve(row.path).unlink()
            index.delete_recording(second)

    delete_after_listing(monkeypatch, finish)
    report = verify.verify_archive(archive, {MASTER.kid: MASTER}, "t")
    assert report.failures == [] and report.recordings_ok == 1
