"""The audit trail shipped to the bucket, so that its chain is anchored off the appliance.

New lines of `<archive>/audit/audit.jsonl` go up as segments: objects named
`audit/<sensor>/<first seq>.jsonl` holding whole lines, exactly as written, in COMPLIANCE
mode for `archive.s3.audit_retain_days`. Each segment carries the chain head (the SHA-256
of its last line, which the next line's `prev` holds) and its first line's `prev` in its
metadata, so the segments of one sensor chain into one trail that nobody, the appliance's
root included, can rewrite or shorten.

Progress is kept in `audit/shipped.json` (byte offset, seq, head), updated after a segment
is verified in the bucket, under a lock shared by every process of the archive. A crash
between the upload and that update is found at the next shipment: the segment is already
there (same first seq), holds a prefix of what is pending, and is adopted, not doubled.
Segments are PUT only if their key holds nothing, so an upload whose answer was lost and
that lands after the next shipment looked is adopted too.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recorder.errors import IntegrityError
from recorder.runtime.archive import Archive
from recorder.runtime.audit import GENESIS, line_hash, verify_audit
from recorder.scale.errors import AlreadyStored, BackendUnavailable
from recorder.scale.store import NS_PER_S, RecordingStore, audit_key

MAX_SEGMENT_BYTES = 8 * 1024 * 1024
STATE_FILE = "shipped.json"


class AuditShipper:
    """Ships one archive's audit trail under one sensor id."""

    def __init__(
        self, archive: Archive, store: RecordingStore, prefix: str, sensor_id: str,
        retain_days: int,
    ) -> None:  # fmt: skip
        self.archive = archive
        self.store = store
        self.prefix = prefix
        self.sensor_id = sensor_id
        self.retain_ns = retain_days * 86_400 * NS_PER_S
        self.state_path = archive.audit_dir / STATE_FILE
        self.segments = 0

    def pending_bytes(self) -> int:
        """Bytes of the trail not shipped yet."""
        try:
            size = self.archive.audit_path.stat().st_size
        except FileNotFoundError:
            return 0
        return max(0, size - int(self._state()["offset"]))

    def ship(self) -> int:
        """Ship every complete line not shipped yet; returns how many lines went."""
        if not self.archive.audit_path.exists():
            return 0
        shipped = 0
        with self._locked():
            while True:
                count = self._ship_one()
                if count == 0:
                    return shipped
                shipped += count

    def _ship_one(self) -> int:
        state = self._state()
        offset, head = int(state["offset"]), str(state["head"])
        with self.archive.audit_path.open("rb") as f:
            f.seek(offset)
            data = f.read(MAX_SEGMENT_BYTES)
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            return 0  # nothing, or one line larger than a segment still being written
        data = data[:cut]
        lines = data.splitlines()
        first, last = json.loads(lines[0]), json.loads(lines[-1])
        if first.get("prev") != head or first.get("seq") != int(state["seq"]) + 1:
            raise IntegrityError(
                f"audit trail changed below what was shipped (seq {state['seq']}): run verify"
            )
        key = audit_key(self.prefix, self.sensor_id, int(first["seq"]))
        existing = self.store.head(key)
        if existing is not None:
            return self._adopt(key, existing.version_id, data, offset)
        meta = {
            "sensor": self.sensor_id,
            "first-seq": str(first["seq"]),
            "last-seq": str(last["seq"]),
            "prev": head,
            "chain-head": line_hash(lines[-1]),
        }
        until = time.time_ns() + self.retain_ns
        try:
            info = self.store.put_bytes(
                key, data, retain_until_ns=until, metadata=meta, if_absent=True
            )
        except AlreadyStored:  # an earlier attempt landed after its answer was lost
            existing = self.store.head(key)
            if existing is None:
                raise BackendUnavailable("s3", f"{key}: exists, yet not found") from None
            return self._adopt(key, existing.version_id, data, offset)
        check = self.store.head(key, info.version_id)
        if check is None or (check.sha256 and check.sha256 != info.sha256):
            raise IntegrityError(f"audit segment {key} does not read back as written")
        self._save(offset + len(data), int(last["seq"]), line_hash(lines[-1]))
        self.segments += 1
        return len(lines)

    def _adopt(self, key: str, version_id: str, pending: bytes, offset: int) -> int:
        """A segment a crash left unrecorded: it must be a prefix of what is pending."""
        get = getattr(self.store, "get_bytes", None)
        if get is not None:
            stored = bytes(get(key, version_id))
        else:
            with self.store.open(key, version_id) as body:
                stored = body.read()
        if not stored.endswith(b"\n") or not pending.startswith(stored):
            raise IntegrityError(f"audit segment {key} differs from the local trail")
        lines = stored.splitlines()
        last = json.loads(lines[-1])
        self._save(offset + len(stored), int(last["seq"]), line_hash(lines[-1]))
        return len(lines)

    def _state(self) -> dict[str, Any]:
        try:
            state = json.loads(self.state_path.read_bytes())
        except FileNotFoundError:
            return {"offset": 0, "seq": 0, "head": GENESIS}
        if not isinstance(state, dict):
            raise IntegrityError(f"{self.state_path} is not a shipping state")
        return state

    def _save(self, offset: int, seq: int, head: str) -> None:
        data = json.dumps({"offset": offset, "seq": seq, "head": head}).encode()
        tmp = self.state_path.with_name(STATE_FILE + ".tmp")
        fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.state_path)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        path = self.archive.audit_dir / "shipped.lock"
        fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


@dataclass
class ShippedTrails:
    """What `verify_shipped` found in the bucket: every record, per-sensor failures."""

    records: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    sensors: dict[str, int] = field(default_factory=dict)  # sensor -> records shipped


def verify_shipped(store: RecordingStore, prefix: str) -> ShippedTrails:
    """Check each sensor's shipped trail: segments contiguous, every chain head as
    recorded, every segment locked, and the chain across them intact."""
    result = ShippedTrails()
    by_sensor: dict[str, list[str]] = {}
    for key in store.list_keys(f"{prefix}audit/"):
        sensor = key[len(prefix) + len("audit/") :].split("/", 1)[0]
        by_sensor.setdefault(sensor, []).append(key)
    for sensor, keys in sorted(by_sensor.items()):
        _verify_sensor(store, sensor, sorted(keys), result)
    return result


def _verify_sensor(
    store: RecordingStore, sensor: str, keys: list[str], result: ShippedTrails
) -> None:
    where = f"shipped audit trail of {sensor}"
    with tempfile.TemporaryDirectory(prefix="recorder-audit-") as tmp:
        for key in keys:
            info = store.head(key)
            if info is None:
                continue
            with store.open(key, info.version_id) as body:
                data = body.read()
            name = key.rsplit("/", 1)[1]
            (Path(tmp) / name).write_bytes(data)
            meta = info.metadata or {}
            lines = data.splitlines()
            if not lines or meta.get("chain-head") != line_hash(lines[-1]):
                result.failures.append(f"{where}: {name}: chain head differs from its metadata")
            if info.lock_mode != "COMPLIANCE":
                result.failures.append(f"{where}: {name}: not object-locked")
        report = verify_audit(Path(tmp))
    result.failures.extend(f"{where}: {line}" for line in report.failures)
    result.records.extend(report.records)
    result.sensors[sensor] = len(report.records)
