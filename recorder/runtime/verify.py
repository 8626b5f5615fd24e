"""`recorder verify`: every recording authenticates and matches its recorded hash, every
recording the audit trail mentions exists with the hash the trail recorded, and the audit
trail's hash chain is intact. A recording the trail records as deleted (retention,
erasure) must be gone: no index row, no file, no key. Each failure is one line naming what
and where.

With the shared backends (recorder/scale/) the index and keys are PostgreSQL's, every
sensor's recordings are checked (read from the bucket when not on this node), and the
trails the sensors shipped to the bucket are verified and joined to this node's
(`scale/verify.py`). A recording its sensor has not uploaded yet is a note, not a failure."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from recorder.container.masterkey import MasterKey
from recorder.container.reader import DecryptStream
from recorder.errors import IntegrityError
from recorder.runtime.archive import RECORDING_SUFFIX, Archive
from recorder.runtime.audit import AuditReport, AuditTrail, verify_audit
from recorder.runtime.index import Index, RecordingRow
from recorder.runtime.keystore import KeyStore
from recorder.runtime.opening import HashingReader, file_key_for
from recorder.scale.backends import Backends, backends_for, open_recording, ship_trail
from recorder.scale.store import RecordingStore

# Audit events that state a recording's final hash; the latest one per recording counts.
_HASH_EVENTS = ("recording.closed", "recording.recovered")
# Written before a recording's key, file and index row are destroyed (compliance/retention).
_DELETED_EVENT = "recording.deleted"
# A recording on another sensor, not uploaded yet: neither its file nor its audit is here.
_PENDING = "pending"


@dataclass
class VerifyReport:
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    recordings: int = 0
    recordings_ok: int = 0
    audit_ok: bool = False
    audit_records: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures


def verify_archive(archive: Archive, masters: Mapping[str, MasterKey], actor: str) -> VerifyReport:
    backends = backends_for(archive)
    backends.require()
    report = VerifyReport()
    index = backends.open_index()
    keys = backends.open_keys()
    store = backends.store()
    try:
        trail = _trail(archive, backends)
        local_records = len(trail.records)
        rows = index.list_recordings()
        if store is not None:
            _shared_checks(backends, store, index, rows, trail, report)
        deleted = _deleted_ids(trail.records)
        hashes = {}
        later: list[AuditReport] = []

        def trail_now() -> AuditReport:
            """The trail as it is after every recording was checked (read once; with the
            s3 backend this downloads every shipped segment again)."""
            if not later:
                later.append(_trail_now(archive, backends, store))
            return later[0]

        unreadable: list[tuple[str, str]] = []  # (recording, problem): deleted meanwhile?
        being_deleted: list[str] = []  # audited as deleted, yet indexed: done by the end?
        for row in rows:
            if row.id in deleted:
                being_deleted.append(row.id)
                continue
            hashes[row.id] = _check_recording(
                archive, masters, keys, row, report, index, store, unreadable
            )
        for recording_id in being_deleted:
            # Deleting audits first and removes the row last: a deletion at work beside
            # verify has finished by now; one still indexed was interrupted.
            if index.get(recording_id) is not None:
                report.failures.append(
                    f"recording {recording_id}: audited as deleted but still in the index "
                    "(deletion interrupted: run the deletion again)"
                )
        if unreadable:
            # Deleting audits first, then destroys key, file and row: a recording deleted
            # beside verify, and so unreadable, has its deletion in the trail by now.
            deleted_now = _deleted_ids(trail_now().records)
            for recording_id, problem in unreadable:
                if recording_id in deleted_now:
                    report.recordings -= 1
                    report.notes.append(f"recording {recording_id} was deleted while verify ran")
                else:
                    report.failures.append(f"recording {recording_id}: {problem}")
        if not backends.shared_index:
            _check_stray_files(archive, rows, report, index)
        _check_audit(trail, rows, hashes, deleted, keys, report, trail_now)
        report.audit_records = local_records  # shipped trails are counted in the notes
    finally:
        keys.close()
        index.close()
    with AuditTrail(archive.audit_path, actor) as audit:
        audit.append(
            "verify",
            outcome="ok" if report.ok else "failure",
            recordings=report.recordings,
            recordings_ok=report.recordings_ok,
            failures=len(report.failures),
        )
    ship_trail(archive)
    return report


def _trail(archive: Archive, backends: Backends) -> AuditReport:
    """This node's trail (a node that only reads a shared index may have none yet)."""
    if backends.shared_index and not archive.audit_path.exists():
        return AuditReport()
    return verify_audit(archive.audit_dir)


def _trail_now(archive: Archive, backends: Backends, store: RecordingStore | None) -> AuditReport:
    """The trail as it is now: this node's, and with the s3 backend what every sensor has
    shipped since verify started (a sensor ships a recording's closing before the index
    shows its upload). Its failures were reported at the first read."""
    report = _trail(archive, backends)
    if store is not None:
        from recorder.scale.verify import shipped_records

        report.records.extend(shipped_records(store, backends.prefix(), [], []))
    return report


def _shared_checks(
    backends: Backends,
    store: RecordingStore,
    index: Index,
    rows: list[RecordingRow],
    trail: AuditReport,
    report: VerifyReport,
) -> None:
    from recorder.compliance.retention import build_expiry_rule
    from recorder.scale.verify import check_objects, shipped_records

    assert backends.config is not None
    prefix = backends.prefix()
    trail.records.extend(shipped_records(store, prefix, trail.failures, report.notes))
    classes = build_expiry_rule(backends.config)
    check_objects(index, store, prefix, rows, classes, report.failures)


def _check_recording(
    archive: Archive,
    masters: Mapping[str, MasterKey],
    keys: KeyStore,
    row: RecordingRow,
    report: VerifyReport,
    index: Index,
    store: RecordingStore | None,
    unreadable: list[tuple[str, str]],
) -> str | None:
    """Authenticate one recording; returns the SHA-256 of its file as found (None if absent).
    A recording that does not authenticate, or whose file or key is missing, is added to
    `unreadable`: a failure, unless it was being deleted beside verify."""
    if row.state == "open":
        report.notes.append(f"recording {row.id} is still being written (open)")
        return None
    report.recordings += 1
    try:
        raw_file = open_recording(archive, row, index, store)
    except FileNotFoundError as exc:
        if store is not None and index.object_of(row.id) is None:
            report.recordings -= 1
            report.notes.append(
                f"recording {row.id}: not uploaded yet by sensor {row.sensor_id or '?'}"
            )
            return _PENDING
        unreadable.append((row.id, str(exc)))
        return None
    try:
        file_key = file_key_for(keys, masters, row.id)
        with raw_file as raw:
            reader = HashingReader(raw)
            stream = DecryptStream(reader, file_key, strict=row.complete, expected_id=row.id)
            for _ in stream:
                pass
            reader.drain()
        digest = reader.sha256.hexdigest()
        if not row.complete and stream.status.verified_bytes != reader.size:
            raise IntegrityError("bytes after the last authenticated segment")
        if digest != row.sha256:
            raise IntegrityError("file hash differs from the index (altered or replaced)")
    except IntegrityError as exc:
        raw_file.close()
        unreadable.append((row.id, str(exc)))
        return None
    report.recordings_ok += 1
    if not row.complete:
        report.notes.append(f"recording {row.id} is incomplete ({row.reason or 'interrupted'})")
    return digest


def _check_stray_files(
    archive: Archive, rows: list[RecordingRow], report: VerifyReport, index: Index
) -> None:
    """Files the index does not know. (A recorder may be writing beside `verify`: a
    recording opened after the index was read, and closed since, is in it now.)"""
    known = {archive.resolve(row.path) for row in rows}
    for path in archive.recording_files():
        if path.resolve() not in known:
            row = index.get(path.name.removesuffix(RECORDING_SUFFIX))
            if row is not None and archive.resolve(row.path) == path.resolve():
                continue
            rel = path.relative_to(archive.root)
            report.failures.append(f"file {rel} is not in the index")


def _deleted_ids(records: list[dict[str, Any]]) -> set[str]:
    """Recordings the trail says were deleted (retention, erasure)."""
    return {str(r.get("recording_id")) for r in records if r.get("event") == _DELETED_EVENT}


def _check_audit(
    audit: AuditReport,
    rows: list[RecordingRow],
    hashes: dict[str, str | None],
    deleted: set[str],
    keys: KeyStore,
    report: VerifyReport,
    reread: Callable[[], AuditReport] | None = None,
) -> None:
    report.audit_ok = audit.ok
    report.audit_records = len(audit.records)
    report.failures.extend(f"audit trail: {line}" for line in audit.failures)
    recorded: dict[str, str] = {}
    unrecovered: dict[str, str] = {}  # crash-left recordings recovery could not keep
    for record in audit.records:
        if record.get("event") in _HASH_EVENTS and isinstance(record.get("sha256"), str):
            recorded[str(record.get("recording_id"))] = record["sha256"]
            unrecovered.pop(str(record.get("recording_id")), None)
        elif record.get("event") == "recording.recovery_failed":
            unrecovered[str(record.get("recording_id"))] = str(record.get("reason", ""))

    # A recorder, a retention run or an erasure may be at work beside `verify`: what it
    # read of the trail first is older than the index it read next. The trail as it is
    # at the end (`reread`, only if needed) settles what the first read cannot.
    def trail_now() -> list[dict[str, Any]]:
        return reread().records if reread is not None else []

    missing: list[str] = []
    for recording_id, digest in recorded.items():
        if recording_id in deleted:
            if keys.get(recording_id) is not None:
                report.failures.append(
                    f"recording {recording_id}: audited as deleted but its file key remains"
                )
        elif recording_id not in hashes:
            missing.append(recording_id)
        elif hashes[recording_id] not in (None, _PENDING) and hashes[recording_id] != digest:
            report.failures.append(
                f"audit trail: recording {recording_id} differs from the hash the trail recorded"
            )
    deleted_since = _deleted_ids(trail_now()) if missing else set()
    for recording_id in missing:
        if recording_id not in deleted_since:
            report.failures.append(
                f"audit trail: recording {recording_id} is not in the index (deleted?)"
            )
        elif keys.get(recording_id) is not None:
            report.failures.append(
                f"recording {recording_id}: audited as deleted but its file key remains"
            )
    for recording_id, reason in unrecovered.items():
        report.failures.append(f"recording {recording_id}: not recovered after a crash: {reason}")
    unaudited = [
        row.id
        for row in rows
        if row.state != "open"
        and row.id not in recorded
        and row.id not in deleted
        and hashes.get(row.id) != _PENDING
    ]
    if unaudited:
        # A recorder audits a closed recording's hash just after its row.
        closed_since = {
            str(r.get("recording_id")): r.get("sha256")
            for r in trail_now()
            if r.get("event") in _HASH_EVENTS
        }
        for recording_id in list(unaudited):
            found = closed_since.get(recording_id)
            if isinstance(found, str):
                unaudited.remove(recording_id)
                if hashes.get(recording_id) not in (None, _PENDING, found):
                    report.failures.append(
                        f"audit trail: recording {recording_id} differs from the hash the "
                        "trail recorded"
                    )
    for recording_id in unaudited:
        report.failures.append(f"recording {recording_id}: no audit record of its closing")
