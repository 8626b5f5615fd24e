"""Object Lock kept in step with the index: legal holds, retention extensions, deletions.

The index stays the judge of what may happen to a recording (`compliance.retention`'s
gate); the bucket enforces it once more where the recorder cannot be bypassed:
  - a recording of a retention class with `lock: true` is uploaded in COMPLIANCE mode
    with retain-until equal to its expiry; `retention extend` pushes retain-until too
    (S3 itself refuses to shorten it, to anyone);
  - a legal hold in the index is an S3 legal hold on the object, and released with it;
  - deleting a recording deletes its object version, which S3 refuses while locked.

Order matters where two nodes race: a hold or an extension is written to the index
before the object is looked up here, and the uploader records the object before it looks
up holds and expiry (`sync_object`): one of the two always sees the other.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from recorder.compliance.retention import class_expiry
from recorder.compliance.settings import RetentionClass
from recorder.runtime.index import Index, RecordingRow
from recorder.runtime.timefmt import rfc3339_ns
from recorder.scale.errors import StoreRefused
from recorder.scale.store import NS_PER_S, RecordingStore

log = logging.getLogger(__name__)


def rounded_up(ns: int) -> int:
    """An S3 retain-until as stored: whole seconds, never earlier than `ns`."""
    return -(-ns // NS_PER_S) * NS_PER_S


def lock_until(
    classes: Mapping[str, RetentionClass], retention_class: str, expires_ns: int | None,
    start_ns: int,
) -> int | None:  # fmt: skip
    """The retain-until a new upload gets: its expiry when its class locks (or, with no
    expiry fixed yet, the class period from its start: never later than the expiry the
    retention run will fix, which `sync_object` then extends to); None when not locked."""
    cls = classes.get(retention_class)
    if cls is None or not cls.lock:
        return None
    return expires_ns if expires_ns is not None else class_expiry(cls, start_ns)


def sync_object(
    index: Index,
    store: RecordingStore,
    classes: Mapping[str, RetentionClass],
    recording_id: str,
) -> bool:
    """Bring a recording's object in line with the index: legal hold on or off, and
    retain-until extended to the expiry of a locked class. False if it has no object."""
    obj = index.object_of(recording_id)
    row = index.get(recording_id)
    if obj is None or row is None:
        return False
    held = index.hold_of(recording_id) is not None
    locked = obj.locked_until_ns
    if held != obj.legal_hold:
        store.set_legal_hold(obj.object_key, obj.version_id, held)
    cls = classes.get(row.retention_class)
    wanted = row.expires_ns if cls is not None and cls.lock else None
    if wanted is not None and (locked is None or wanted > locked):
        store.extend_retention(obj.object_key, obj.version_id, wanted)
        locked = rounded_up(wanted)
    if (held, locked) != (obj.legal_hold, obj.locked_until_ns):
        index.update_object(recording_id, locked_until_ns=locked, legal_hold=held)
    return True


class RemoteCopies:
    """The uploaded copies of recordings, as the deletion gate and `Disposer` see them."""

    def __init__(self, index: Index, store: RecordingStore, *, uploads_expected: bool) -> None:
        self.index = index
        self.store = store
        self.uploads_expected = uploads_expected

    def refusal(self, row: RecordingRow, now_ns: int) -> str | None:
        """Why the recording's copy in the bucket stops a deletion now, or None."""
        obj = self.index.object_of(row.id)
        if obj is None:
            if self.uploads_expected and row.state != "open":
                where = f" by sensor {row.sensor_id}" if row.sensor_id else ""
                return f"not uploaded yet{where} (retry once it is)"
            return None
        if obj.locked_until_ns is not None and now_ns < obj.locked_until_ns:
            until = rfc3339_ns(obj.locked_until_ns, digits=0)
            return f"object-locked in the bucket (COMPLIANCE) until {until}"
        return None

    def delete(self, row: RecordingRow) -> None:
        """Delete the object version (after the file key was destroyed); raises
        StoreRefused if the bucket refuses, leaving the index row for a later run."""
        obj = self.index.object_of(row.id)
        if obj is None:
            return
        try:
            self.store.delete(obj.object_key, obj.version_id)
        except StoreRefused as exc:
            log.error("recording %s: the bucket refused the deletion: %s", row.id, exc)
            raise
        self.index.delete_object(row.id)
