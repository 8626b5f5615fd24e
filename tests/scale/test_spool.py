"""The spool: bounded like the disk, durable across restarts, and never the cause of a
second upload (a crash after the PUT is adopted; a recording closed just before a crash
is found on disk and queued)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from recorder.runtime.archive import Archive
from recorder.runtime.index import Index
from recorder.runtime.keyfile import generate_master_key
from recorder.scale.spool import SPOOL_REFUSAL, Spool
from recorder.scale.store import S3Store, recording_key
from tests.scale.helpers import (
    calls_capture,
    config_text,
    feed_capture,
    pairs,
    recording,
    write_config,
)
from tests.scale.servers import Seaweed, free_ports


def test_spool_keeps_jobs_in_order_across_restarts(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "q")
    names = [spool.push({"n": i, "weight": 10 * i}) for i in range(1, 4)]
    spool.update(names[0], {"n": 1, "weight": 10, "step": "put"})
    (tmp_path / "q" / "0000000000000009.json.tmp").write_bytes(b"{torn")  # a push cut short
    again = Spool(tmp_path / "q")
    assert [job for _, job in again.items()] == [
        {"n": 1, "weight": 10, "step": "put"},
        {"n": 2, "weight": 20},
        {"n": 3, "weight": 30},
    ]
    assert (len(again), again.weight) == (3, 60)
    again.done(names[1])
    assert again.push({"n": 4}) == "0000000000000004.json"
    assert [job["n"] for _, job in Spool(tmp_path / "q").items()] == [1, 3, 4]
    assert not list((tmp_path / "q").glob("*.tmp"))


def test_full_spool_refuses_like_a_full_disk_and_a_restart_resumes(
    seaweed: Seaweed, bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (dead,) = free_ports(1)  # nothing listens there: S3 is unreachable
    offline = config_text(seaweed, bucket, drain_s=0, extra_s3="    spool_max_bytes: 10000\n")
    offline = offline.replace(seaweed.endpoint, f"http://127.0.0.1:{dead}")
    config = write_config(tmp_path / "offline.yaml", offline)
    root = tmp_path / "archive"
    master = generate_master_key()
    pcap = calls_capture(tmp_path / "c.pcap", 1, pairs(0, 3))
    with recording(root, master, config) as (session, loop):
        feed_capture(session, loop, pcap)
        assert (session.writer.stats.closed, session.writer.stats.refused) == (1, 2)
    with Index(root / "index.sqlite") as index:
        refused = index.list_calls()
    assert [(c.outcome, c.reason, c.sensor_id) for c in refused] == [
        ("refused", SPOOL_REFUSAL, "sensor-a")
    ] * 2
    audit = [json.loads(line) for line in (root / "audit" / "audit.jsonl").read_text().splitlines()]
    full = [r for r in audit if r["event"] == "spool.full"]
    assert len(full) == 1 and full[0]["outcome"] == "failure" and full[0]["max_bytes"] == 10000
    assert any("upload spool full" in r.getMessage() for r in caplog.records)
    jobs = Spool(root / "spool" / "uploads").items()
    assert len(jobs) == 1

    # Crash after the PUT, before the job noted it: the object is there already.
    (_, job), store = jobs[0], S3Store(seaweed.client(), bucket)
    key = recording_key("", "sensor-a", job["recording_id"])
    store.put_file(key, root / job["relative"], job["sha256"])
    online = write_config(tmp_path / "online.yaml", config_text(seaweed, bucket))
    with recording(root, master, online) as (session, _):
        assert session.scale is not None and session.scale.uploader is not None
        uploader = session.scale.uploader
    assert (uploader.stats.adopted, uploader.stats.uploaded) == (1, 0)
    versions = seaweed.client().list_object_versions(Bucket=bucket, Prefix=key)["Versions"]
    assert len(versions) == 1  # adopted, not sent twice
    with Index(root / "index.sqlite") as index:
        assert index.object_of(job["recording_id"]).version_id == versions[0]["VersionId"]


def test_recording_closed_just_before_a_crash_is_found_and_locked(
    seaweed: Seaweed, bucket: str, tmp_path: Path
) -> None:
    (dead,) = free_ports(1)
    offline = config_text(seaweed, bucket, drain_s=0).replace(
        seaweed.endpoint, f"http://127.0.0.1:{dead}"
    )
    root = tmp_path / "archive"
    master = generate_master_key()
    pcap = calls_capture(tmp_path / "c.pcap", 1, pairs(0, 1))  # one MiFID call
    with recording(root, master, write_config(tmp_path / "off.yaml", offline)) as (s, loop):
        feed_capture(s, loop, pcap)
    for job in (root / "spool" / "uploads").glob("*.json"):
        job.unlink()  # as if the process died between the rename and the queueing
    online = write_config(tmp_path / "on.yaml", config_text(seaweed, bucket))
    with recording(root, master, online):
        pass
    with Index(root / "index.sqlite") as index:
        (row,) = index.list_recordings()
        obj = index.object_of(row.id)
    assert obj is not None and row.expires_ns is not None
    head = seaweed.client().head_object(Bucket=bucket, Key=obj.object_key)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"].timestamp() == math.ceil(row.expires_ns / 1e9)
    assert obj.locked_until_ns == math.ceil(row.expires_ns / 1e9) * 10**9
    assert not list(Archive(root).recordings_dir.rglob("*.rec"))
