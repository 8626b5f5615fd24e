"""The spool: bounded like the disk, durable across restarts, and never the cause of a
second upload (a crash after the PUT is adopted; a recording closed just before a crash
is found on disk and queued)."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest

from recorder.runtime.archive import Archive
from recorder.runtime.index import Index
from recorder.runtime.keyfile import generate_master_key
from recorder.scale.errors import StoreRefused
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


def test_a_put_the_store_was_still_writing_is_adopted_not_sent_twice(
    seaweed: Seaweed, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An earlier PUT whose answer was lost (a time-out) lands while the job is retried:
    the HEAD before the retry does not see it yet, and the PUT, sent only if the key holds
    nothing, is refused; the object is adopted. (Seen under load: one recording stored as
    three locked versions.)"""
    (dead,) = free_ports(1)
    offline = config_text(seaweed, bucket, drain_s=0)
    offline = offline.replace(seaweed.endpoint, f"http://127.0.0.1:{dead}")
    root, master = tmp_path / "archive", generate_master_key()
    with recording(root, master, write_config(tmp_path / "off.yaml", offline)) as (session, loop):
        feed_capture(session, loop, calls_capture(tmp_path / "c.pcap", 1, pairs(0, 1)))
    ((_, job),) = Spool(root / "spool" / "uploads").items()
    key = recording_key("", "sensor-a", job["recording_id"])
    S3Store(seaweed.client(), bucket).put_file(key, root / job["relative"], job["sha256"])
    real_head = S3Store.head
    missed: list[str] = []

    def head_not_yet(self: S3Store, key_: str, version_id: str | None = None) -> object:
        if key_ == key and not missed:  # the store is still writing the first PUT
            missed.append(key_)
            return None
        return real_head(self, key_, version_id)

    monkeypatch.setattr(S3Store, "head", head_not_yet)
    online = write_config(tmp_path / "on.yaml", config_text(seaweed, bucket))
    with recording(root, master, online) as (session, _):
        assert session.scale is not None and session.scale.uploader is not None
        uploader = session.scale.uploader
    assert missed == [key]
    assert (uploader.stats.adopted, uploader.stats.uploaded) == (1, 0)
    versions = seaweed.client().list_object_versions(Bucket=bucket, Prefix=key)["Versions"]
    assert len(versions) == 1
    with Index(root / "index.sqlite") as index:
        assert index.object_of(job["recording_id"]).version_id == versions[0]["VersionId"]


class _NoConditions:
    """A client of a store that knows no conditional PUT: it answers `status` to one, and
    to a plain one too if `plain_fails` (a fault of the request, not of the condition)."""

    def __init__(self, status: int, plain_fails: bool = False) -> None:
        self.status, self.plain_fails = status, plain_fails
        self.puts: list[dict[str, object]] = []

    def put_object(self, **kwargs: object) -> dict[str, str]:
        from botocore.exceptions import ClientError

        self.puts.append(kwargs)
        if "IfNoneMatch" in kwargs or self.plain_fails:
            error = {
                "Error": {"Code": "NotImplemented" if self.status == 501 else "InvalidRequest"},
                "ResponseMetadata": {"HTTPStatusCode": self.status},
            }
            raise ClientError(error, "PutObject")
        return {"VersionId": f"v{len(self.puts)}"}


@pytest.mark.parametrize("status", [400, 501])
def test_a_store_without_conditional_puts_gets_plain_ones(tmp_path: Path, status: int) -> None:
    client = _NoConditions(status)
    store = S3Store(client, "b")
    path = tmp_path / "f"
    path.write_bytes(b"audio" * 100)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert store.put_file("k", path, digest, if_absent=True).version_id == "v2"
    assert store.put_file("k2", path, digest, if_absent=True).version_id == "v3"
    assert ["IfNoneMatch" in put for put in client.puts] == [True, False, False]


def test_a_put_refused_for_itself_is_raised_and_conditions_stay(tmp_path: Path) -> None:
    client = _NoConditions(400, plain_fails=True)
    store = S3Store(client, "b")
    path = tmp_path / "f"
    path.write_bytes(b"audio")
    with pytest.raises(StoreRefused, match="400 InvalidRequest"):
        store.put_file("k", path, hashlib.sha256(b"audio").hexdigest(), if_absent=True)
    assert store.conditional_puts
