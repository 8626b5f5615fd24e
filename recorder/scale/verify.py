"""What `recorder verify` checks beyond one archive folder when recordings are uploaded:

  - every shipped audit trail in the bucket (one per sensor): segments contiguous, chain
    intact, chain heads as recorded, every segment object-locked;
  - every uploaded recording's object: the version the index names exists with the
    index's SHA-256 and size; a recording of a locking class is in COMPLIANCE mode until
    at least its expiry; a held recording has its S3 legal hold on;
  - no object under `recordings/` that the index does not know.

The records of the shipped trails join the local trail's for the cross-checks of
`runtime/verify.py` (every closed recording audited with its hash, every deletion done).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from recorder.compliance.settings import RetentionClass
from recorder.runtime.index import Index, RecordingRow
from recorder.scale.auditship import verify_shipped
from recorder.scale.locks import rounded_up
from recorder.scale.store import RecordingStore


def shipped_records(
    store: RecordingStore, prefix: str, failures: list[str], notes: list[str]
) -> list[dict[str, Any]]:
    """Every record of every shipped trail (failures appended to `failures`)."""
    shipped = verify_shipped(store, prefix)
    failures.extend(shipped.failures)
    for sensor, count in sorted(shipped.sensors.items()):
        notes.append(f"shipped audit trail of {sensor}: {count} records")
    return shipped.records


def check_objects(
    index: Index,
    store: RecordingStore,
    prefix: str,
    rows: list[RecordingRow],
    classes: Mapping[str, RetentionClass],
    failures: list[str],
) -> None:
    """Each uploaded recording's object as the index says; no object it does not know."""
    by_id = {row.id: row for row in rows}
    holds = {h.recording_id for h in index.holds()}
    known: set[str] = set()
    for obj in index.list_objects():
        known.add(obj.object_key)
        row = by_id.get(obj.recording_id)
        where = f"recording {obj.recording_id}: object {obj.object_key}"
        head = store.head(obj.object_key, obj.version_id)
        if head is None:
            failures.append(f"{where} version {obj.version_id} is missing from the bucket")
            continue
        if head.size != obj.size or (head.sha256 and head.sha256 != obj.sha256):
            failures.append(f"{where} differs from what was uploaded")
        if row is not None and row.sha256 and row.sha256 != obj.sha256:
            failures.append(f"{where} holds another hash than the index")
        cls = classes.get(row.retention_class) if row is not None else None
        if row is not None and cls is not None and cls.lock and row.expires_ns is not None:
            until = head.retain_until_ns or 0
            if head.lock_mode != "COMPLIANCE" or until < rounded_up(row.expires_ns):
                failures.append(f"{where} is not object-locked until its expiry")
        if obj.recording_id in holds and not head.legal_hold:
            failures.append(f"{where} is held in the index but has no S3 legal hold")
    for key in store.list_keys(f"{prefix}recordings/"):
        if key not in known:
            failures.append(f"object {key} is not in the index")
