"""Data subjects' rights and legal holds: search, subject access export, erasure, holds.

Numbers are personal data: they are looked up in the index but never written to the audit
trail (which outlives every recording and cannot be edited). Audit records name the
recordings acted on, the criteria used (without the number itself) and the outcome.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recorder.compliance.retention import Disposer
from recorder.container.masterkey import MasterKey
from recorder.errors import ArchiveError, RecorderError
from recorder.runtime.archive import Archive
from recorder.runtime.audit import AuditTrail, Value, canonical_bytes, line_hash, verify_audit
from recorder.runtime.export import export_wav
from recorder.runtime.files import sha256_file, write_all
from recorder.runtime.index import RecordingRow
from recorder.runtime.timefmt import rfc3339_ns
from recorder.scale.backends import CommandStores, ship_trail

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Criteria:
    number: str | None = None
    start_from_ns: int | None = None
    start_to_ns: int | None = None
    purpose: str | None = None

    def for_audit(self) -> dict[str, Any]:
        """What was asked, without the number."""
        return {
            "by_number": self.number is not None,
            "from": None if self.start_from_ns is None else rfc3339_ns(self.start_from_ns),
            "to": None if self.start_to_ns is None else rfc3339_ns(self.start_to_ns),
            "purpose": self.purpose,
        }


def search(archive: Archive, criteria: Criteria, actor: str) -> list[RecordingRow]:
    """Recordings matching every criterion given; the search is audited."""
    with (
        CommandStores(archive, keys=False) as stores,
        AuditTrail(archive.audit_path, actor) as audit,
    ):
        rows = stores.index.find_recordings(
            number=criteria.number,
            start_from_ns=criteria.start_from_ns,
            start_to_ns=criteria.start_to_ns,
            purpose=criteria.purpose,
        )
        audit.append("search", criteria=criteria.for_audit(), results=_ids(rows))
    ship_trail(archive)
    return rows


def export_subject(
    archive: Archive,
    masters: Mapping[str, MasterKey],
    number: str,
    folder: Path,
    actor: str,
) -> dict[str, Any]:
    """Every recording of `number` as WAV in `folder`, with `manifest.json`: each
    recording's metadata, the SHA-256 of the stored file and of the WAV, and the audit
    records of its history (with each line's hash, for checking against the trail)."""
    with CommandStores(archive, keys=False) as stores:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if any(folder.iterdir()):
            raise ArchiveError(f"export folder {folder} is not empty")
        rows = stores.index.find_recordings(number=number)
        holds = {h.recording_id: h for h in stores.index.holds()}
    with AuditTrail(archive.audit_path, actor) as audit:
        audit.append("export.subject", criteria={"by_number": True}, recordings=_ids(rows))
    entries: list[dict[str, Any]] = []
    for row in rows:
        wav = folder / f"{row.id}.wav"
        export_wav(archive, masters, row.id, wav, actor)  # audited per recording
        entries.append(
            {
                "recording": row.to_public_dict(),
                "legal_hold": holds[row.id].reason if row.id in holds else None,
                "file": wav.name,
                "wav_sha256": sha256_file(wav),
                "stored_sha256": row.sha256,
            }
        )
    history = _histories(archive, {row.id for row in rows})
    for entry, row in zip(entries, rows, strict=True):
        entry["audit"] = history.get(row.id, [])
    manifest = {
        "subject": number,
        "generated": rfc3339_ns(time.time_ns()),
        "generated_by": actor,
        "archive": str(archive.root),
        "recordings": entries,
        "note": (
            "Each audit record is as written in the archive's hash-chained trail; "
            "line_sha256 is the SHA-256 of its line, which the next line's prev carries."
        ),
    }
    data = json.dumps(manifest, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"
    _write_new(folder / MANIFEST, data)
    return manifest


def _histories(archive: Archive, ids: set[str]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for record in verify_audit(archive.audit_dir).records:
        rid = record.get("recording_id")
        if isinstance(rid, str) and rid in ids:
            line = line_hash(canonical_bytes(record))
            out.setdefault(rid, []).append({"record": record, "line_sha256": line})
    return out


@dataclass
class ErasureReport:
    deleted: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)  # recording id -> why
    calls_removed: int = 0


def erase(
    archive: Archive, number: str, actor: str, reference: str, *, dry_run: bool = False
) -> ErasureReport:
    """Erasure request (GDPR Art 17): delete the subject's recordings that no legal
    obligation or hold keeps, and the entries of their calls not recorded. Audited: the
    request, each deletion, and each recording kept with why."""
    report = ErasureReport()
    now = time.time_ns()
    with CommandStores(archive) as stores, AuditTrail(archive.audit_path, actor) as audit:
        index, keys = stores.index, stores.keys
        assert keys is not None
        rows = index.find_recordings(number=number)
        audit.append(
            "erase.requested",
            reference=reference,
            dry_run=dry_run,
            recordings=_ids(rows),
        )
        disposer = Disposer(archive, index, keys, audit, stores.remote)
        for row in rows:
            refusal = disposer.refusal(row, now, "erasure")
            if refusal is None and not dry_run:
                refusal = disposer.delete(row, now, "erasure")
            if refusal is None:
                report.deleted.append(row.id)
            else:
                report.kept[row.id] = refusal
                if not dry_run:
                    audit.append("erase.kept", recording_id=row.id, reason=refusal)
        if not dry_run:
            report.calls_removed = index.delete_calls(number)
        audit.append(
            "erase.finished",
            reference=reference,
            dry_run=dry_run,
            deleted=list[Value](report.deleted),
            kept=list[Value](sorted(report.kept)),
            calls_removed=report.calls_removed,
        )
    ship_trail(archive)
    return report


def set_holds(
    archive: Archive,
    ids: list[str],
    number: str | None,
    reason: str,
    actor: str,
    *,
    clear: bool = False,
) -> list[str]:
    """Set (or clear) a legal hold on recordings by id or on every recording of a number;
    returns the ids changed. Each change is audited; an uploaded copy gets (or loses) its
    S3 legal hold with it."""
    if not reason.strip():
        raise RecorderError("a legal hold needs --reason")
    with (
        CommandStores(archive, keys=False) as stores,
        AuditTrail(archive.audit_path, actor) as audit,
    ):
        index = stores.index
        targets = list(ids)
        if number is not None:
            targets += [r.id for r in index.find_recordings(number=number)]
        changed = []
        now = time.time_ns()
        for rid in dict.fromkeys(targets):
            if index.get(rid) is None:
                audit.append(
                    "hold.refused", outcome="failure", recording_id=rid, reason="no such recording"
                )
                raise ArchiveError(f"no recording {rid!r} in the index")
            done = index.clear_hold(rid) if clear else index.set_hold(rid, reason, actor, now)
            if done:
                audit.append(
                    "hold.cleared" if clear else "hold.set", recording_id=rid, reason=reason
                )
                changed.append(rid)
            stores.sync(rid)  # the index first, then the object: see scale/locks.py
    ship_trail(archive)
    return changed


def _ids(rows: list[RecordingRow]) -> list[Value]:
    return [row.id for row in rows]


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
