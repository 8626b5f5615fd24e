"""`recorder verify` on an office node while a sensor is still uploading: the shipped
trails verify read at its start may lack the closing of a recording that the sensor
uploaded and shipped before verify reached its row (a sensor ships a recording's closing
before the index shows its upload). That is no failure; a hash the late shipment
contradicts still is. Before, every such recording failed with "no audit record of its
closing", so verify of a busy multi-sensor archive could not pass."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from recorder.container.masterkey import MasterKey
from recorder.runtime.archive import Archive
from recorder.runtime.keyfile import generate_master_key
from recorder.runtime.verify import VerifyReport, verify_archive
from recorder.scale import verify as scale_verify
from recorder.scale.backends import bind
from tests.scale.helpers import (
    calls_capture,
    config_text,
    feed_capture,
    pairs,
    recording,
    write_config,
)
from tests.scale.servers import Seaweed

Records = list[dict[str, Any]]
CLOSING = ("recording.closed", "recording.recovered")


def _shared_archive(
    seaweed: Seaweed, bucket: str, dsn: str, tmp_path: Path
) -> tuple[MasterKey, Archive]:
    """Three recordings of sensor-a, uploaded; and an office node (no recordings of its own,
    no trail) bound to the same bucket and database."""
    master = generate_master_key()
    sensor = write_config(tmp_path / "s.yaml", config_text(seaweed, bucket, dsn=dsn))
    with recording(tmp_path / "sensor", master, sensor) as (session, loop):
        feed_capture(session, loop, calls_capture(tmp_path / "c.pcap", 1, pairs(1)))
    office = Archive(tmp_path / "office")
    bind(
        office,
        write_config(tmp_path / "o.yaml", config_text(seaweed, bucket, sensor="office", dsn=dsn)),
    )
    return master, office


def _verify_with_shipments(
    monkeypatch: pytest.MonkeyPatch,
    master: MasterKey,
    office: Archive,
    first: Callable[[Records], Records],
    later: Callable[[Records], Records] = lambda records: records,
) -> VerifyReport:
    """verify, seeing `first(records)` of the shipped trails at its start and
    `later(records)` at any later read. The trails are downloaded at most twice: at the
    start, and once at the end for everything the first read left open."""
    real = scale_verify.shipped_records
    reads = [0]

    def shipped(*args: Any) -> Records:
        reads[0] += 1
        records = real(*args)
        return (first if reads[0] == 1 else later)(records)

    monkeypatch.setattr(scale_verify, "shipped_records", shipped)
    report = verify_archive(office, {master.kid: master}, "auditor")
    assert reads[0] <= 2
    return report


def _without_closings(records: Records) -> Records:
    return [r for r in records if r.get("event") not in CLOSING]


def test_closings_shipped_while_verify_ran_are_found(
    seaweed: Seaweed, bucket: str, dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    master, office = _shared_archive(seaweed, bucket, dsn, tmp_path)
    report = _verify_with_shipments(monkeypatch, master, office, _without_closings)
    assert report.ok, report.failures
    assert (report.recordings, report.recordings_ok) == (3, 3)


def test_a_late_closing_with_another_hash_still_fails(
    seaweed: Seaweed, bucket: str, dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    master, office = _shared_archive(seaweed, bucket, dsn, tmp_path)
    altered: list[str] = []

    def other_hash(records: Records) -> Records:
        out = []
        for r in records:
            if r.get("event") in CLOSING and not altered:
                altered.append(str(r["recording_id"]))
                r = {**r, "sha256": "0" * 64}
            out.append(r)
        return out

    report = _verify_with_shipments(monkeypatch, master, office, _without_closings, other_hash)
    assert report.failures == [
        f"audit trail: recording {altered[0]} differs from the hash the trail recorded"
    ]


def test_a_closing_never_shipped_still_fails(
    seaweed: Seaweed, bucket: str, dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    master, office = _shared_archive(seaweed, bucket, dsn, tmp_path)
    report = _verify_with_shipments(
        monkeypatch, master, office, _without_closings, _without_closings
    )
    assert len(report.failures) == 3
    assert all(f.endswith(": no audit record of its closing") for f in report.failures)
