"""The audit trail's shipping: a segment upload whose answer was lost, and which the next
shipment's look-up did not see yet, is adopted, never stored twice or overwritten."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recorder.runtime.archive import Archive
from recorder.runtime.audit import AuditTrail
from recorder.scale.auditship import AuditShipper
from recorder.scale.store import LocalStore, audit_key


def test_a_segment_that_landed_unseen_is_adopted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = Archive(tmp_path / "a")
    archive.create()
    with AuditTrail(archive.audit_path, "t") as trail:
        for n in range(3):
            trail.append("test.event", n=n)
    store = LocalStore(tmp_path / "bucket")
    key = audit_key("", "sensor-a", 1)
    earlier = archive.audit_path.read_bytes()  # the first attempt, whose answer was lost
    store.put_bytes(key, earlier)
    with AuditTrail(archive.audit_path, "t") as trail:
        trail.append("test.event", n=3)  # more lines since: the retry's segment is longer
    real_head = LocalStore.head
    missed: list[str] = []

    def head_not_yet(self: LocalStore, key_: str, version_id: str | None = None) -> object:
        if key_ == key and not missed:
            missed.append(key_)
            return None
        return real_head(self, key_, version_id)

    monkeypatch.setattr(LocalStore, "head", head_not_yet)
    shipper = AuditShipper(archive, store, "", "sensor-a", retain_days=1)
    assert shipper.ship() == 4  # three lines adopted, the fourth in a segment of its own
    assert missed == [key]
    assert (tmp_path / "bucket" / key).read_bytes() == earlier  # not overwritten
    second = tmp_path / "bucket" / audit_key("", "sensor-a", 4)
    assert [json.loads(line)["seq"] for line in second.read_bytes().splitlines()] == [4]
    assert shipper.segments == 1
    assert shipper.pending_bytes() == 0  # the adopted segment counts as shipped
