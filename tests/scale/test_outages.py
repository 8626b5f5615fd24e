"""Outages: S3 stopped in the middle of a recording session and started again, then
PostgreSQL likewise. Recording goes on into the spool, the outage is logged, audited and
shown by the metrics, and afterwards every recording arrives exactly once."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from recorder.runtime.archive import Archive
from recorder.runtime.keyfile import generate_master_key
from recorder.runtime.keystore import KeyStore
from recorder.runtime.verify import verify_archive
from recorder.scale.backends import bind
from recorder.scale.pg import PgIndex, PgKeyStore
from tests.scale.helpers import (
    calls_capture,
    config_text,
    feed_capture,
    pairs,
    recording,
    wait_until,
    write_config,
)
from tests.scale.servers import Postgres, Seaweed


def _metric(collector: object, name: str, labels: dict[str, str] | None = None) -> float:
    for family in collector.collect():  # type: ignore[attr-defined]
        for sample in family.samples:
            if sample.name == name and (labels is None or sample.labels == labels):
                return float(sample.value)
    raise AssertionError(f"no metric {name} {labels}")


def _audit(root: Path) -> list[dict]:
    lines = (root / "audit" / "audit.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _versions(seaweed: Seaweed, bucket: str) -> dict[str, int]:
    """Object versions per recording key (delete markers aside)."""
    reply = seaweed.client().list_object_versions(Bucket=bucket, Prefix="recordings/")
    counts: dict[str, int] = {}
    for version in reply.get("Versions", []):
        counts[version["Key"]] = counts.get(version["Key"], 0) + 1
    return counts


def test_s3_stopped_mid_session(
    own_seaweed: Seaweed, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bucket = own_seaweed.make_bucket("outage-s3")
    config = write_config(tmp_path / "r.yaml", config_text(own_seaweed, bucket))
    captures = [calls_capture(tmp_path / f"{i}.pcap", 1 + 3 * i, pairs(3 * i)) for i in range(3)]
    root = tmp_path / "archive"
    master = generate_master_key()
    with recording(root, master, config) as (session, loop):
        scale = session.scale
        assert scale is not None and scale.uploader is not None and scale.uploads is not None
        uploader, uploads = scale.uploader, scale.uploads
        feed_capture(session, loop, captures[0])
        wait_until(lambda: uploader.stats.uploaded == 3 and len(uploads) == 0)

        own_seaweed.stop()
        with caplog.at_level(logging.ERROR, logger="recorder.scale"):
            feed_capture(session, loop, captures[1])  # recorded while S3 is away
            wait_until(lambda: not uploader.health.available)
        assert session.writer.stats.closed == 6 and session.writer.stats.refused == 0
        assert len(uploads) == 3
        assert len(list((root / "recordings").rglob("*.rec"))) == 3  # kept until uploaded
        collector = scale.collector()
        assert _metric(collector, "recorder_backend_up", {"backend": "s3"}) == 0
        assert _metric(collector, "recorder_spool_jobs", {"queue": "uploads"}) == 3
        assert _metric(collector, "recorder_spool_bytes") == scale.guard.used_bytes > 0
        assert any("s3 unavailable" in r.getMessage() for r in caplog.records)

        own_seaweed.start()
        feed_capture(session, loop, captures[2])
    # closing drained the spool
    versions = _versions(own_seaweed, bucket)
    assert len(versions) == 9 and set(versions.values()) == {1}  # every one, none twice
    assert not list((root / "recordings").rglob("*.rec"))
    assert not list((root / "spool" / "uploads").iterdir())
    events = [r["event"] for r in _audit(root)]
    assert events.count("backend.unavailable") == 1 and events.count("backend.available") == 1
    uploaded = [r for r in _audit(root) if r["event"] == "recording.uploaded"]
    assert len({r["recording_id"] for r in uploaded}) == len(uploaded) == 9
    report = verify_archive(Archive(root), {master.kid: master}, "auditor")
    assert report.ok, report.failures
    assert (report.recordings, report.recordings_ok) == (9, 9)


def test_postgres_restarted_mid_session(
    seaweed: Seaweed, bucket: str, own_postgres: Postgres, tmp_path: Path
) -> None:
    dsn = own_postgres.create_database("outage_pg")
    config = write_config(tmp_path / "r.yaml", config_text(seaweed, bucket, dsn=dsn))
    captures = [calls_capture(tmp_path / f"{i}.pcap", 1 + 3 * i, pairs(3 * i)) for i in range(3)]
    root = tmp_path / "archive"
    master = generate_master_key()
    with recording(root, master, config) as (session, loop):
        scale = session.scale
        assert scale is not None and scale.worker is not None and scale.journal is not None
        worker, journal = scale.worker, scale.journal
        feed_capture(session, loop, captures[0])
        wait_until(lambda: len(journal) == 0 and len(scale.uploads or []) == 0)
        wait_until(lambda: len(journal) == 0 and worker.applied > 0)

        own_postgres.stop("fast")
        feed_capture(session, loop, captures[1])  # recorded while PostgreSQL is away
        wait_until(lambda: not worker.health.available)
        assert session.writer.stats.closed == 6
        assert len(journal) >= 6  # keys, rows and updates of three recordings wait
        assert _metric(scale.collector(), "recorder_backend_up", {"backend": "postgresql"}) == 0
        # uploaded, but the local copies stay until the index knows where they went
        wait_until(lambda: len(scale.uploads or []) == 0)
        assert len(list((root / "recordings").rglob("*.rec"))) == 3

        own_postgres.start()
        feed_capture(session, loop, captures[2])
    with PgIndex(dsn) as index, PgKeyStore(dsn) as keys:
        rows = index.list_recordings()
        assert len(rows) == 9 and {r.state for r in rows} == {"closed"}
        assert len({r.id for r in rows}) == 9 and {r.sensor_id for r in rows} == {"sensor-a"}
        assert len(index.list_objects()) == 9
        assert len(keys.recording_ids()) == 9
    with KeyStore(root / "keys.sqlite") as local:
        assert local.recording_ids() == []  # the shared key store holds them now
    assert not list((root / "recordings").rglob("*.rec"))
    assert set(_versions(seaweed, bucket).values()) == {1}
    bind(Archive(root), config)
    report = verify_archive(Archive(root), {master.kid: master}, "auditor")
    assert report.ok, report.failures
    assert (report.recordings, report.recordings_ok) == (9, 9)
