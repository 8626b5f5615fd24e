"""The recording store: where sealed recordings (and shipped audit segments) are kept
beyond the sensor's disk. `S3Store` is an S3 bucket with Object Lock; `LocalStore` a
folder with the same interface (used where no S3 is configured, and to test the uploader
without a server).

Every object is written once under a key made by the recorder (`object_key`: the sensor
id and the recording id, never wire data) with the SHA-256 the server verifies on receipt
(`x-amz-checksum-sha256`), and read back by its version id, so a later object or delete
marker under the same key cannot stand in for it.

Errors: an unreachable server, a time-out or a 5xx/503 SlowDown raise `BackendUnavailable`
(retry later); any other refusal raises `StoreRefused` with the HTTP status and S3 error
code (e.g. 403 AccessDenied for a delete under COMPLIANCE retention).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from recorder.errors import ArchiveError
from recorder.runtime.files import sha256_file
from recorder.scale.errors import AlreadyStored, BackendUnavailable, StoreRefused

log = logging.getLogger(__name__)
# Answers that mean "again later": throttling, and two conditional PUTs of one key at once
# (409 ConditionalRequestConflict: the retry's HEAD then finds the one that won).
_RETRY_CODES = frozenset({"SlowDown", "RequestTimeout", "ConditionalRequestConflict"})

NS_PER_S = 1_000_000_000


def recording_key(prefix: str, sensor_id: str, recording_id: str) -> str:
    """`<prefix>recordings/<sensor>/YYYY/MM/DD/<id>.rec`: sensors never share a key."""
    day = recording_id[:8]
    return f"{prefix}recordings/{sensor_id}/{day[:4]}/{day[4:6]}/{day[6:8]}/{recording_id}.rec"


def audit_key(prefix: str, sensor_id: str, first_seq: int) -> str:
    """`<prefix>audit/<sensor>/<first seq, 12 digits>.jsonl`: name order is chain order."""
    return f"{prefix}audit/{sensor_id}/{first_seq:012d}.jsonl"


def retain_until(ns: int) -> datetime:
    """An expiry as an S3 retain-until date: whole seconds, rounded up (never earlier)."""
    seconds = -(-ns // NS_PER_S)
    return datetime.fromtimestamp(seconds, UTC)


def b64_sha256(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii")


@dataclass(frozen=True)
class ObjectInfo:
    """One object version as the store reports it."""

    key: str
    version_id: str
    size: int
    sha256: str = ""  # hex; "" when the store did not report a checksum
    lock_mode: str | None = None
    retain_until_ns: int | None = None
    legal_hold: bool = False
    metadata: Mapping[str, str] | None = None


class RecordingStore(Protocol):
    """What the uploader, verify, export and the compliance commands need of a store."""

    def put_file(
        self,
        key: str,
        path: Path,
        sha256: str,
        *,
        retain_until_ns: int | None = None,
        metadata: Mapping[str, str] | None = None,
        if_absent: bool = False,
    ) -> ObjectInfo:
        """`if_absent`: only if the key holds nothing, else `AlreadyStored` (never a second
        version of a recording when an answer was lost and the PUT is sent again)."""
        ...

    def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        retain_until_ns: int | None = None,
        metadata: Mapping[str, str] | None = None,
        if_absent: bool = False,
    ) -> ObjectInfo: ...

    def head(self, key: str, version_id: str | None = None) -> ObjectInfo | None: ...

    def open(self, key: str, version_id: str) -> BinaryIO: ...

    def delete(self, key: str, version_id: str) -> None: ...

    def set_legal_hold(self, key: str, version_id: str, on: bool) -> None: ...

    def extend_retention(self, key: str, version_id: str, until_ns: int) -> None: ...

    def list_keys(self, prefix: str) -> Iterator[str]: ...


class LocalStore:
    """A folder as a store (no versions, no lock): the version id is always "local"."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ArchiveError(f"object key {key!r} leaves the store")
        return path

    def put_file(
        self,
        key: str,
        path: Path,
        sha256: str,
        *,
        retain_until_ns: int | None = None,
        metadata: Mapping[str, str] | None = None,
        if_absent: bool = False,
    ) -> ObjectInfo:
        target = self._path(key)
        if if_absent and target.exists():
            raise AlreadyStored(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        shutil.copyfile(path, tmp)
        if sha256_file(tmp) != sha256:
            tmp.unlink()
            raise StoreRefused("put", 400, "BadDigest")
        os.replace(tmp, target)
        return self.head(key) or ObjectInfo(key, "local", 0)

    def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        retain_until_ns: int | None = None,
        metadata: Mapping[str, str] | None = None,
        if_absent: bool = False,
    ) -> ObjectInfo:
        target = self._path(key)
        if if_absent and target.exists():
            raise AlreadyStored(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return ObjectInfo(key, "local", len(data), hashlib.sha256(data).hexdigest())

    def head(self, key: str, version_id: str | None = None) -> ObjectInfo | None:
        path = self._path(key)
        if not path.is_file():
            return None
        return ObjectInfo(key, "local", path.stat().st_size, sha256_file(path))

    def open(self, key: str, version_id: str) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except FileNotFoundError:
            raise StoreRefused("get", 404, "NoSuchKey") from None

    def delete(self, key: str, version_id: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def set_legal_hold(self, key: str, version_id: str, on: bool) -> None:
        """A folder has no legal hold: the index's hold is the only one."""

    def extend_retention(self, key: str, version_id: str, until_ns: int) -> None:
        """A folder has no retention lock: the index's expiry is the only one."""

    def list_keys(self, prefix: str) -> Iterator[str]:
        base = self.root.resolve()
        for path in sorted(base.rglob("*")):
            key = path.relative_to(base).as_posix()
            if path.is_file() and key.startswith(prefix) and not key.endswith(".tmp"):
                yield key


class S3Store:
    """One bucket of an S3 service (AWS, Ceph RGW, SeaweedFS, MinIO, ...)."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket
        self.conditional_puts = True  # If-None-Match: * (off once the store refuses it)

    def _call(self, operation: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, operation)(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            code = str(error.get("Code") or status)
            # (501 NotImplemented is an answer, not an outage: a header the store lacks)
            transient = status >= 500 and status != 501
            if transient or status == 429 or code in _RETRY_CODES:
                raise BackendUnavailable("s3", f"{operation}: {status} {code}") from None
            raise StoreRefused(operation, status, code, str(error.get("Message") or "")) from None
        except BotoCoreError as exc:  # connection refused, time-outs, closed connections
            raise BackendUnavailable("s3", f"{operation}: {exc}") from None

    def object_lock_enabled(self) -> bool:
        """Whether the bucket was created with Object Lock (needed by locked classes)."""
        try:
            reply = self._call("get_object_lock_configuration")
        except StoreRefused:
            return False
        return bool(reply.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled"))

    def put_file(
        self,
        key: str,
        path: Path,
        sha256: str,
        *,
        retain_until_ns: int | None = None,
        metadata: Mapping[str, str] | None = None,
        if_absent: bool = False,
    ) -> ObjectInfo:
        with path.open("rb") as body:
            size = os.fstat(body.fileno()).st_size
            return self._put(key, body, size, sha256, retain_until_ns, metadata, if_absent)

    def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        retain_until_ns: int | None = None,
        metadata: Mapping[str, str] | None = None,
        if_absent: bool = False,
    ) -> ObjectInfo:
        digest = hashlib.sha256(data).hexdigest()
        return self._put(key, data, len(data), digest, retain_until_ns, metadata, if_absent)

    def _put(
        self,
        key: str,
        body: BinaryIO | bytes,
        size: int,
        sha256: str,
        retain_until_ns: int | None,
        metadata: Mapping[str, str] | None,
        if_absent: bool = False,
    ) -> ObjectInfo:
        extra: dict[str, Any] = {}
        if retain_until_ns is not None:
            extra["ObjectLockMode"] = "COMPLIANCE"
            extra["ObjectLockRetainUntilDate"] = retain_until(retain_until_ns)
        if if_absent and self.conditional_puts:
            # The client resends a PUT whose answer did not come (a time-out): without the
            # condition each resend that lands is one more locked version of the recording.
            extra["IfNoneMatch"] = "*"
        try:
            reply = self._call(
                "put_object",
                Key=key,
                Body=body,
                ContentLength=size,
                ChecksumSHA256=b64_sha256(sha256),
                ContentType="application/octet-stream",
                Metadata=dict(metadata or {}),
                **extra,
            )
        except StoreRefused as exc:
            if "IfNoneMatch" not in extra:
                raise
            if exc.status == 412:
                raise AlreadyStored(key) from None
            if exc.status not in (400, 501):
                raise
            # Perhaps a store that knows no conditional PUT: sent again without it (a fault
            # of the request itself is refused again, and raised from here).
            if not isinstance(body, bytes):
                body.seek(0)
            info = self._put(key, body, size, sha256, retain_until_ns, metadata)
            log.warning("S3 refused a conditional PUT (%s): PUTs go without it now", exc)
            self.conditional_puts = False
            return info
        version = str(reply.get("VersionId") or "")
        if not version or version == "null":
            raise StoreRefused("put_object", 200, "NoVersionId", "bucket versioning is off")
        return ObjectInfo(key, version, size, sha256)

    def head(self, key: str, version_id: str | None = None) -> ObjectInfo | None:
        extra = {"VersionId": version_id} if version_id else {}
        try:
            reply = self._call("head_object", Key=key, ChecksumMode="ENABLED", **extra)
        except StoreRefused as exc:
            if exc.status in (404, 405):  # absent, or the newest version is a delete marker
                return None
            raise
        checksum = reply.get("ChecksumSHA256")
        until = reply.get("ObjectLockRetainUntilDate")
        return ObjectInfo(
            key=key,
            version_id=str(reply.get("VersionId") or ""),
            size=int(reply.get("ContentLength") or 0),
            sha256=base64.b64decode(checksum).hex() if checksum else "",
            lock_mode=reply.get("ObjectLockMode"),
            retain_until_ns=None if until is None else int(until.timestamp()) * NS_PER_S,
            legal_hold=reply.get("ObjectLockLegalHoldStatus") == "ON",
            metadata=dict(reply.get("Metadata") or {}),
        )

    def open(self, key: str, version_id: str) -> BinaryIO:
        reply = self._call("get_object", Key=key, VersionId=version_id)
        return reply["Body"]  # type: ignore[no-any-return]  # botocore StreamingBody: read(n)

    def get_bytes(self, key: str, version_id: str | None = None) -> bytes:
        extra = {"VersionId": version_id} if version_id else {}
        body = self._call("get_object", Key=key, **extra)["Body"]
        try:
            return bytes(body.read())
        finally:
            body.close()

    def delete(self, key: str, version_id: str) -> None:
        """Delete one version for good (S3 refuses while it is locked or held)."""
        self._call("delete_object", Key=key, VersionId=version_id)

    def set_legal_hold(self, key: str, version_id: str, on: bool) -> None:
        self._call(
            "put_object_legal_hold",
            Key=key,
            VersionId=version_id,
            LegalHold={"Status": "ON" if on else "OFF"},
        )

    def extend_retention(self, key: str, version_id: str, until_ns: int) -> None:
        """COMPLIANCE retention until `until_ns` (S3 refuses to shorten it: 403)."""
        self._call(
            "put_object_retention",
            Key=key,
            VersionId=version_id,
            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": retain_until(until_ns)},
        )

    def list_keys(self, prefix: str) -> Iterator[str]:
        """The keys under `prefix` whose newest version is an object, in key order."""
        token: dict[str, str] = {}
        while True:
            reply = self._call("list_objects_v2", Prefix=prefix, **token)
            for item in reply.get("Contents", []):
                yield str(item["Key"])
            if not reply.get("IsTruncated"):
                return
            token = {"ContinuationToken": str(reply["NextContinuationToken"])}

    def versions(self, prefix: str) -> list[tuple[str, str]]:
        """(key, version id) of every object version under `prefix` (delete markers left out)."""
        out: list[tuple[str, str]] = []
        marker: dict[str, str] = {}
        while True:
            reply = self._call("list_object_versions", Prefix=prefix, **marker)
            out += [(str(v["Key"]), str(v["VersionId"])) for v in reply.get("Versions", [])]
            if not reply.get("IsTruncated"):
                return sorted(out)
            marker = {
                "KeyMarker": str(reply["NextKeyMarker"]),
                "VersionIdMarker": str(reply.get("NextVersionIdMarker") or ""),
            }
