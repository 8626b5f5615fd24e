"""The uploader: closed recordings go from the sensor's disk to the bucket, verified, and
only then leave the disk.

For each job of the upload spool (queued by the writer's `on_closed`, or found on disk
at start), oldest first:
  1. HEAD the object key: an object with the same SHA-256 is an upload a crash left
     unrecorded (adopted, never sent twice); one with another hash is refused.
  2. PUT the file with `x-amz-checksum-sha256` (the server rejects a body that does not
     match), in COMPLIANCE mode until its expiry when its class locks, and only if the key
     holds nothing (`If-None-Match: *`): a resent PUT whose first copy landed meanwhile
     (its answer lost to a time-out) is refused, and the object adopted as in step 1.
  3. Check it: HEAD the version just written (size, checksum, lock), or with
     `archive.s3.verify: read` read it back and hash it.
  4. Audit `recording.uploaded` (bucket, key, version id, SHA-256, size, retain-until)
     and note the object in the job (a retry resumes after this step).
Then, for the batch, the audit trail is shipped (so that every upload the index will
show is anchored in the bucket) and each job is finished (`finish`: recorded in the
index, holds and retention synced, the local copy released).

While S3 cannot be reached, jobs wait and are retried with exponential backoff (up to
`archive.s3.retry_max_s`); the outage and the recovery are logged and audited once each.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from recorder.compliance.settings import RetentionClass
from recorder.config import S3Settings
from recorder.errors import ArchiveError, IntegrityError
from recorder.runtime.archive import Archive
from recorder.runtime.audit import AuditTrail
from recorder.runtime.files import sha256_file
from recorder.runtime.index import StoredObject
from recorder.runtime.timefmt import rfc3339_ns
from recorder.scale.auditship import AuditShipper
from recorder.scale.errors import AlreadyStored, BackendUnavailable, StoreRefused
from recorder.scale.locks import lock_until, rounded_up
from recorder.scale.spool import Spool
from recorder.scale.store import RecordingStore, recording_key

log = logging.getLogger(__name__)

BATCH = 64
Finish = Callable[[StoredObject, dict[str, Any]], None]


@dataclass
class Health:
    """Whether a backend answers; transitions are logged and audited once each."""

    backend: str
    available: bool = True
    outages: int = 0
    errors: int = 0
    last_error: str = ""

    def failed(self, exc: Exception, audit: AuditTrail, pending: int) -> None:
        self.errors += 1
        self.last_error = str(exc)
        if self.available:
            self.available = False
            self.outages += 1
            log.error("%s; %d job(s) wait in the spool and are retried", exc, pending)
            audit.append(
                "backend.unavailable", outcome="failure", backend=self.backend, reason=str(exc)
            )

    def ok(self, audit: AuditTrail, pending: int) -> None:
        if not self.available:
            self.available = True
            log.warning("%s reachable again; %d job(s) pending", self.backend, pending)
            audit.append("backend.available", backend=self.backend, pending=pending)


@dataclass
class UploadStats:
    uploaded: int = 0
    adopted: int = 0  # found already in the bucket (an upload a crash left unrecorded)
    bytes_uploaded: int = 0
    put_aside: int = 0  # jobs that cannot succeed (file gone or changed), audited
    seconds: float = 0.0  # time spent in PUT and its check


def backoff(attempt: int, cap: float) -> float:
    """0.5 s, 1 s, 2 s, ... up to `cap`."""
    return float(min(cap, 0.5 * 2 ** min(attempt, 16)))


class Uploader:
    """A thread draining the upload spool into the store."""

    def __init__(
        self,
        archive: Archive,
        store: RecordingStore,
        settings: S3Settings,
        sensor_id: str,
        classes: Mapping[str, RetentionClass],
        uploads: Spool,
        audit: AuditTrail,
        finish: Finish,
        shipper: AuditShipper,
    ) -> None:
        self.archive, self.store, self.settings = archive, store, settings
        self.sensor_id, self.classes, self.uploads = sensor_id, classes, uploads
        self.audit, self.finish, self.shipper = audit, finish, shipper
        self.health = Health("s3")
        self.stats = UploadStats()
        self.failed = Spool(uploads.folder.parent / "failed")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._draining = False
        self.at_exit: list[Callable[[], None]] = []  # run in the uploader's thread at its end
        self._thread: threading.Thread | None = None
        self._last_ship = time.monotonic()

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="uploader", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def drain(self, timeout_s: float) -> bool:
        """Wait until nothing is pending, the trail shipped to its end (True), or until
        `timeout_s` passed (False: the rest waits in the spool for the next start)."""
        self._draining = True  # ship the trail at every round from now on
        self.wake()
        deadline = time.monotonic() + timeout_s
        while True:
            if len(self.uploads) == 0 and self.shipper.pending_bytes() == 0:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    # -- the loop --------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            for fn in self.at_exit:
                fn()

    def _loop(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                worked = self.run_once()
                self.health.ok(self.audit, len(self.uploads))
                attempt = 0
            except (BackendUnavailable, StoreRefused) as exc:
                self.health.failed(exc, self.audit, len(self.uploads))
                self._wait(backoff(attempt, self.settings.retry_max_s))
                attempt += 1
                continue
            except Exception as exc:  # never let the thread die: log, wait, retry
                log.exception("uploader: %s", exc)
                self.health.errors += 1
                self._wait(backoff(attempt, self.settings.retry_max_s))
                attempt += 1
                continue
            if not worked:
                self._wait(min(1.0, self.settings.audit_ship_interval_s))

    def _wait(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()

    def run_once(self) -> bool:
        """Upload one batch, ship the trail, finish the batch; False if there was nothing."""
        batch = self.uploads.items()[:BATCH]
        for name, job in batch:
            if "object" not in job:
                self._upload(name, job)
        due = time.monotonic() - self._last_ship >= self.settings.audit_ship_interval_s
        if batch or due or self._draining:
            self.shipper.ship()
            self._last_ship = time.monotonic()
        for name, job in batch:
            if "object" in job:
                self.finish(StoredObject(**job["object"]), job)
            self.uploads.done(name)
        return bool(batch)

    # -- one recording ---------------------------------------------------------------------

    def _upload(self, name: str, job: dict[str, Any]) -> None:
        rid = str(job["recording_id"])
        path = self.archive.resolve(str(job["relative"]))
        key = recording_key(self.settings.prefix, self.sensor_id, rid)
        try:
            sha256 = sha256_file(path)
        except FileNotFoundError:
            self._put_aside(name, job, "the local file is gone")
            return
        if sha256 != job["sha256"]:
            self._put_aside(name, job, "the local file changed after it was sealed")
            return
        until = lock_until(
            self.classes, str(job["retention_class"]), job.get("expires_ns"), job["start_ns"]
        )
        if until is not None and until <= time.time_ns() + 60 * 10**9:
            until = None  # expired already (an old capture replayed): nothing left to lock
        started = time.monotonic()
        existing = self.store.head(key)
        if existing is None:
            try:
                info = self.store.put_file(key, path, sha256, retain_until_ns=until, if_absent=True)
            except AlreadyStored:
                # An earlier attempt landed after all (the store was still writing it when
                # it was looked for): adopted below, never stored twice.
                existing = self.store.head(key)
                if existing is None:
                    raise BackendUnavailable("s3", f"{key}: exists, yet not found") from None
            else:
                version, adopted = info.version_id, False
                self._check(key, version, sha256, int(job["size"]), until)
        if existing is not None:
            stored = existing.sha256 or self._read_hash(key, existing.version_id)
            if stored != sha256 or existing.size != job["size"]:
                raise StoreRefused("put_object", 409, "KeyExists", f"{key} holds another file")
            version, adopted = existing.version_id, True
            until = existing.retain_until_ns
        self.stats.seconds += time.monotonic() - started
        obj = StoredObject(
            recording_id=rid,
            object_key=key,
            version_id=version,
            sha256=sha256,
            size=int(job["size"]),
            uploaded_ns=time.time_ns(),
            locked_until_ns=None if until is None else rounded_up(until),
            sensor_id=self.sensor_id,
        )
        self.audit.append(
            "recording.uploaded",
            recording_id=rid,
            bucket=getattr(self.store, "bucket", ""),
            object_key=key,
            version_id=version,
            sha256=sha256,
            size=obj.size,
            locked_until=None if until is None else rfc3339_ns(rounded_up(until), digits=0),
            adopted=adopted,
        )
        job["object"] = asdict(obj)
        self.uploads.update(name, job)
        self.stats.adopted += adopted
        self.stats.uploaded += not adopted
        self.stats.bytes_uploaded += 0 if adopted else obj.size

    def _check(self, key: str, version: str, sha256: str, size: int, until: int | None) -> None:
        """The object as the server holds it: the size, the checksum and the lock asked for."""
        head = self.store.head(key, version)
        if head is None or head.size != size:
            raise IntegrityError(f"{key} version {version} is not in the bucket as written")
        if self.settings.verify == "read" or not head.sha256:  # (older RGW reports none)
            stored = self._read_hash(key, version)
        else:
            stored = head.sha256
        if stored != sha256:
            raise IntegrityError(f"{key} version {version} does not hash as sent")
        if until is not None and (
            head.lock_mode != "COMPLIANCE" or (head.retain_until_ns or 0) < rounded_up(until)
        ):
            raise IntegrityError(f"{key} version {version} is not locked as asked")

    def _read_hash(self, key: str, version: str) -> str:
        """SHA-256 of an object as read back from the store."""
        digest = hashlib.sha256()
        with self.store.open(key, version) as body:
            while chunk := body.read(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()

    def _put_aside(self, name: str, job: dict[str, Any], reason: str) -> None:
        """A job that can never succeed: kept in spool/failed/ for an operator, audited."""
        log.error("recording %s cannot be uploaded: %s", job.get("recording_id"), reason)
        self.audit.append(
            "recording.upload_failed",
            outcome="failure",
            recording_id=str(job.get("recording_id")),
            reason=reason,
        )
        self.failed.push({**job, "reason": reason, "weight": 0})
        self.uploads.done(name)
        self.stats.put_aside += 1


def job_for(
    recording_id: str, relative: str, sha256: str, size: int, start_ns: int,
    retention_class: str, expires_ns: int | None,
) -> dict[str, Any]:  # fmt: skip
    """An upload job (weight: the bytes it holds on the sensor's disk)."""
    if not sha256:
        raise ArchiveError(f"recording {recording_id} has no hash to upload with")
    return {
        "recording_id": recording_id,
        "relative": relative,
        "sha256": sha256,
        "size": size,
        "weight": size,
        "start_ns": start_ns,
        "retention_class": retention_class,
        "expires_ns": expires_ns,
    }
