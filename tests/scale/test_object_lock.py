"""Object Lock on a real S3 server (SeaweedFS): a recording of a locking retention class
cannot be deleted or have its retention shortened, through the recorder or directly
through S3; extensions and legal holds reach the bucket; erasable recordings go."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from recorder.runtime.index import Index
from recorder.scale.errors import StoreRefused
from recorder.scale.store import S3Store
from tests.compliance.helpers import rfc, run_cli
from tests.scale.helpers import NS, calls_capture, config_text, write_config
from tests.scale.servers import Seaweed

TRADER, CLIENT = "+4930555100", "+4977700"
CONSENTING, OTHER = "+4940111", "+4977701"
CALLER, AGENT = "+4977702", "+4977703"


def _error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str]:
    response = exc.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def test_locked_recordings_resist_deletion_and_shortening(
    seaweed: Seaweed,
    bucket: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = tmp_path / "recorder.yaml"
    write_config(cfg, config_text(seaweed, bucket))
    monkeypatch.setenv("RECORDER_CONFIG", str(cfg))
    root, key = tmp_path / "archive", tmp_path / "master.key"
    pcap = calls_capture(
        tmp_path / "calls.pcap", 1, [(CLIENT, TRADER), (CONSENTING, OTHER), (CALLER, AGENT)]
    )
    assert run_cli(capsys, "keygen", key)[0] == 0
    code, _, err = run_cli(capsys, "replay", pcap, "--archive", root, "--key", key, "--config", cfg)
    assert code == 0, err
    code, out, _ = run_cli(capsys, "list", "--archive", root, "--json")
    rows = {row["caller"]: row for row in json.loads(out)}
    mifid, vault, quality = rows[CLIENT], rows[CONSENTING], rows[CALLER]
    assert [r["retention_class"] for r in (mifid, vault, quality)] == ["mifid", "vault", "quality"]
    assert not list((root / "recordings").rglob("*.rec"))  # uploaded, verified, released

    with Index(root / "index.sqlite") as index:
        objects = {rid: index.object_of(rid) for rid in (mifid["id"], vault["id"], quality["id"])}
    obj = objects[mifid["id"]]
    assert obj is not None
    assert obj.object_key == f"recordings/sensor-a/2023/11/14/{mifid['id']}.rec"
    s3 = seaweed.client()
    head = s3.head_object(Bucket=bucket, Key=obj.object_key, VersionId=obj.version_id)
    expires = datetime.fromisoformat(mifid["expires"])
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"].timestamp() == math.ceil(expires.timestamp())
    assert objects[quality["id"]].locked_until_ns is None  # erasable: not locked

    # Directly through S3: no delete of the version, no shorter retention, no bypass.
    with pytest.raises(ClientError) as denied:
        s3.delete_object(Bucket=bucket, Key=obj.object_key, VersionId=obj.version_id)
    assert _error(denied) == (403, "AccessDenied")
    earlier = datetime(2027, 1, 1, tzinfo=UTC)
    with pytest.raises(ClientError) as denied:
        s3.put_object_retention(
            Bucket=bucket,
            Key=obj.object_key,
            VersionId=obj.version_id,
            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": earlier},
        )
    assert _error(denied) == (403, "AccessDenied")
    with pytest.raises(ClientError) as denied:
        s3.put_object_retention(
            Bucket=bucket,
            Key=obj.object_key,
            VersionId=obj.version_id,
            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": earlier},
            BypassGovernanceRetention=True,
        )
    assert _error(denied) == (403, "AccessDenied")
    # ... nor through the recorder's store, which bypasses every gate of the recorder.
    store = S3Store(s3, bucket)
    with pytest.raises(StoreRefused) as refused:
        store.delete(obj.object_key, obj.version_id)
    assert (refused.value.status, refused.value.code) == (403, "AccessDenied")
    with pytest.raises(StoreRefused) as refused:
        store.extend_retention(obj.object_key, obj.version_id, 1_800_000_000 * NS)
    assert (refused.value.status, refused.value.code) == (403, "AccessDenied")

    # Through the recorder: erasure keeps both locked recordings, with the reason.
    code, out, _ = run_cli(capsys, "erase", "--number", CONSENTING, "--archive", root)
    vault_until = rfc(objects[vault["id"]].locked_until_ns)  # type: ignore[union-attr]
    assert (
        f"kept {vault['id']}: object-locked in the bucket (COMPLIANCE) until {vault_until}" in out
    )
    code, out, _ = run_cli(capsys, "erase", "--number", TRADER, "--archive", root)
    assert f"kept {mifid['id']}: kept under a legal obligation until" in out
    assert s3.head_object(Bucket=bucket, Key=obj.object_key, VersionId=obj.version_id)

    # A shorter retention is refused; a longer one reaches the bucket.
    code, out, _ = run_cli(
        capsys, "retention", "extend", mifid["id"], "--until", "2027-01-01T00:00:00Z",
        "--reason", "try", "--archive", root,
    )  # fmt: skip
    assert code == 1 and "REFUSED: a retention period is never shortened" in out
    later = "2030-01-02T03:04:05Z"
    code, out, _ = run_cli(
        capsys, "retention", "extend", mifid["id"], "--until", later,
        "--reason", "FCA request 42", "--archive", root,
    )  # fmt: skip
    assert (code, out.strip()) == (0, f"{mifid['id']}: extended")
    head = s3.head_object(Bucket=bucket, Key=obj.object_key, VersionId=obj.version_id)
    assert (
        head["ObjectLockRetainUntilDate"].timestamp() == datetime.fromisoformat(later).timestamp()
    )

    # A legal hold is an S3 legal hold, released with it.
    assert (
        run_cli(capsys, "hold", "set", mifid["id"], "--reason", "case 7", "--archive", root)[0] == 0
    )
    hold = s3.get_object_legal_hold(Bucket=bucket, Key=obj.object_key, VersionId=obj.version_id)
    assert hold["LegalHold"]["Status"] == "ON"
    assert (
        run_cli(capsys, "hold", "clear", mifid["id"], "--reason", "closed", "--archive", root)[0]
        == 0
    )
    hold = s3.get_object_legal_hold(Bucket=bucket, Key=obj.object_key, VersionId=obj.version_id)
    assert hold["LegalHold"]["Status"] == "OFF"

    # An erasable recording goes: its key, its object version and its row.
    gone = objects[quality["id"]]
    assert gone is not None
    code, out, _ = run_cli(capsys, "erase", "--number", CALLER, "--archive", root)
    assert f"deleted {quality['id']}" in out
    versions = s3.list_object_versions(Bucket=bucket, Prefix=gone.object_key)
    assert versions.get("Versions", []) == []
    with Index(root / "index.sqlite") as index:
        assert index.get(quality["id"]) is None and index.object_of(quality["id"]) is None

    code, out, _ = run_cli(capsys, "verify", "--archive", root, "--key", key)
    assert code == 0, out
    assert "OK: 2/2 recordings authentic" in out
