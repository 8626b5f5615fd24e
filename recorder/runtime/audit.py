"""The audit trail: an append-only, hash-chained JSONL file under `<archive>/audit/`.

Each line is one canonical JSON object (UTF-8, sorted keys, no spaces, no floats) carrying
`v`, `seq` (1, 2, ...), `ts` (RFC 3339 UTC, nanoseconds), `event`, `actor`, `host`, `pid`,
`outcome` ("ok"/"failure"), the event's own fields, and `prev`: the SHA-256 of the previous
line's bytes (64 zeros for the first). Editing, deleting, inserting or reordering a line breaks
the chain or the sequence, and `verify_audit` names the line.

Writing: several processes may append to one trail at once (a replay while someone exports).
Each append takes an exclusive `flock`, reads only the file's last line for `seq` and `prev`
(not even that when the file's size shows the last line is this process's own), writes the
new line with one `os.write` on an O_APPEND descriptor, fsyncs, and unlocks. A last
line without its newline is a write torn by a crash: it is cut, and an `audit.recovered` record
says how many bytes went.

Limits (threat model): the chain shows tampering by anyone who cannot rewrite the file from the
tampered line onwards. Someone with write access to the file can recompute every hash and
"re-chain" a rewritten trail. The optional `mac_key` (an HMAC-SHA-256 key kept away from the
archive, e.g. a systemd credential) adds a `mac` field that such a person cannot forge without
the key. Off-box anchoring (shipping each line to journald or a log host, periodic signed
checkpoints) is future work. Rotation is future work too: rotated files must be named so that
name order is chain order (e.g. `audit-000001.jsonl` sorts before `audit.jsonl`), and the first
line of each file chains to the last line of the one before.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import re
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

from recorder.errors import ArchiveError
from recorder.runtime.files import fsync_dir, write_all
from recorder.runtime.timefmt import rfc3339_ns

VERSION = 1
GENESIS = "0" * 64
AUDIT_DIR = "audit"
AUDIT_FILE = "audit.jsonl"
OUTCOMES = frozenset({"ok", "failure"})
REQUIRED = ("v", "seq", "ts", "event", "actor", "host", "pid", "outcome", "prev")
RESERVED = frozenset(REQUIRED) | {"mac"}
_EVENT = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*\Z")
_TAIL_CHUNK = 4096

Value: TypeAlias = str | int | bool | list["Value"] | dict[str, "Value"] | None


def audit_path(archive: Path) -> Path:
    """Where the live audit file of `archive` lives."""
    return archive / AUDIT_DIR / AUDIT_FILE


def canonical_bytes(record: Mapping[str, Any]) -> bytes:
    """The one byte form of a record, without the newline."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def line_hash(line: bytes) -> str:
    """SHA-256 hex of a line's bytes (newline excluded): the next record's `prev`."""
    return hashlib.sha256(line).hexdigest()


def record_mac(key: bytes, record: Mapping[str, Any]) -> str:
    """HMAC-SHA-256 over the canonical bytes of `record` without its `mac` field."""
    body = canonical_bytes({k: v for k, v in record.items() if k != "mac"})
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def _clean(value: object, name: str) -> Value:
    """Check a field value is JSON without floats; make strings encodable as UTF-8."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        # Lone surrogates (from surrogateescape-decoded wire bytes) become visible \udcXX text.
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, list | tuple):
        return [_clean(item, name) for item in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {_clean(k, name): _clean(v, name) for k, v in value.items()}  # type: ignore[misc]
    raise TypeError(f"audit field {name!r}: {type(value).__name__} is not allowed (no floats)")


class AuditTrail:
    """Appends records to one audit file; safe across processes (one instance per process)."""

    def __init__(
        self,
        path: Path,
        actor: str,
        *,
        host: str | None = None,
        mac_key: bytes | None = None,
    ) -> None:
        self.path = Path(path)
        self.actor = actor
        self.host = host if host is not None else socket.gethostname()
        self._mac_key = mac_key
        self._fd = -1
        self._pid = -1
        # (file size, seq, hash) just after this process's last line: while the size is
        # unchanged, the next append chains to it without reading the tail back.
        self._last: tuple[int, int, str] | None = None
        self._open()

    def __enter__(self) -> AuditTrail:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def append(
        self,
        event: str,
        *,
        outcome: str = "ok",
        sync: bool = True,
        ts_ns: int | None = None,
        **fields: Value,
    ) -> dict[str, Value]:
        """Append one record and return it as written (with `seq`, `prev` and `mac`)."""
        if not _EVENT.match(event):
            raise ValueError(f"bad audit event name {event!r}")
        if outcome not in OUTCOMES:
            raise ValueError(f"audit outcome must be 'ok' or 'failure', not {outcome!r}")
        clash = RESERVED.intersection(fields)
        if clash:
            raise ValueError(f"audit fields may not be named {sorted(clash)}")
        extra = {name: _clean(value, name) for name, value in fields.items()}
        if self._fd < 0:
            raise ValueError("audit trail is closed")
        if os.getpid() != self._pid:  # forked: an inherited descriptor would share our lock
            os.close(self._fd)
            self._last = None
            self._open()
        with self._locked():
            size = os.fstat(self._fd).st_size
            if self._last is not None and self._last[0] == size:
                seq, prev = self._last[1], self._last[2]  # nobody appended since our line
            else:
                seq, prev = self._tail_locked()
            return self._append_locked(seq + 1, prev, event, outcome, sync, ts_ns, extra)

    def close(self) -> None:
        """Close the file; further appends raise."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _open(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        existed = self.path.exists()
        self._fd = os.open(self.path, flags, 0o600)
        self._pid = os.getpid()
        if not existed:
            fsync_dir(self.path.parent)
        try:
            with self._locked():
                self._tail_locked()  # cuts and records a torn tail now, not at the first append
        except BaseException:
            self.close()
            raise

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _tail_locked(self) -> tuple[int, str]:
        """(seq, hash) of the last complete line, cutting a torn tail first. Lock held."""
        size = os.fstat(self._fd).st_size
        if size == 0:
            return 0, GENESIS
        if os.pread(self._fd, 1, size - 1) != b"\n":
            start = _line_start(self._fd, size)
            torn = os.pread(self._fd, size - start, start)
            os.ftruncate(self._fd, start)
            os.fsync(self._fd)
            seq, prev = self._tail_locked()
            extra: dict[str, Value] = {
                "discarded_bytes": len(torn),
                "discarded_sha256": hashlib.sha256(torn).hexdigest(),
                "reason": "torn tail",
            }
            record = self._append_locked(seq + 1, prev, "audit.recovered", "ok", True, None, extra)
            return seq + 1, line_hash(canonical_bytes(record))
        start = _line_start(self._fd, size - 1)
        line = os.pread(self._fd, size - 1 - start, start)
        try:
            last_seq: object = json.loads(line)["seq"]
        except (ValueError, TypeError, KeyError):
            last_seq = None
        if type(last_seq) is not int:
            raise ArchiveError(f"audit trail {self.path}: last line is not a record; run verify")
        return last_seq, line_hash(line)

    def _append_locked(
        self,
        seq: int,
        prev: str,
        event: str,
        outcome: str,
        sync: bool,
        ts_ns: int | None,
        extra: dict[str, Value],
    ) -> dict[str, Value]:
        record: dict[str, Value] = {
            **extra,
            "v": VERSION,
            "seq": seq,
            "ts": rfc3339_ns(time.time_ns() if ts_ns is None else ts_ns, digits=9),
            "event": event,
            "actor": self.actor,
            "host": self.host,
            "pid": os.getpid(),
            "outcome": outcome,
            "prev": prev,
        }
        if self._mac_key is not None:
            record["mac"] = record_mac(self._mac_key, record)
        line = canonical_bytes(record)
        size = _write_all(self._fd, line + b"\n")
        self._last = (size, seq, line_hash(line))
        if sync:
            os.fdatasync(self._fd)
        return record


def _line_start(fd: int, end: int) -> int:
    """Offset just after the last newline before `end`, or 0: reads backwards in chunks."""
    pos = end
    while pos > 0:
        step = min(_TAIL_CHUNK, pos)
        chunk = os.pread(fd, step, pos - step)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            return pos - step + newline + 1
        pos -= step
    return 0


def _write_all(fd: int, data: bytes) -> int:
    """One write in practice; on a short write or error, roll back so no torn line remains.
    Returns the file's size after it (the lock is held: nobody else writes)."""
    before = os.fstat(fd).st_size
    try:
        write_all(fd, data)
    except OSError:
        os.ftruncate(fd, before)
        raise
    return before + len(data)


@dataclass
class AuditReport:
    """What `verify_audit` found: every parsed record and one line per failure."""

    files: list[Path] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


class _NotCanonical(ValueError):
    """A float or NaN in a line: the writer never emits one."""


def _no_float(text: str) -> Any:
    raise _NotCanonical(text)


def audit_files(target: Path) -> list[Path]:
    """The trail's files in chain order: `target` itself, or every `*.jsonl` in it by name."""
    target = Path(target)
    if target.is_dir():
        return sorted(target.glob("*.jsonl"))
    return [target] if target.exists() else []


def verify_audit(target: Path, *, mac_key: bytes | None = None) -> AuditReport:
    """Check the chain, sequence, canonical form (and MAC, given the key) of every line."""
    report = AuditReport(files=audit_files(target))
    if not report.files:
        report.failures.append(f"no audit trail at {target}")
        return report
    chain = _Chain(report, mac_key)
    for path in report.files:
        name = f"{path.name} " if len(report.files) > 1 else ""
        with path.open("rb") as lines:
            for number, raw in enumerate(lines, start=1):
                chain.check(f"{name}line {number}", raw)
    return report


class _Chain:
    """Walks lines in order, remembering the previous line's hash, seq and place."""

    def __init__(self, report: AuditReport, mac_key: bytes | None) -> None:
        self.report = report
        self.mac_key = mac_key
        self.prev_hash = GENESIS
        self.prev_seq: int | None = 0  # None: the previous line was unreadable
        self.prev_where = ""

    def check(self, where: str, raw: bytes) -> None:
        line = raw[:-1] if raw.endswith(b"\n") else raw
        if line is raw:
            record, problem = None, f"torn write (no newline at end, {len(raw)} bytes)"
        else:
            record, problem = _parse(line)
        if record is None:
            self.fail(where, problem)
            self.prev_seq = None
        else:
            self.report.records.append(record)
            self.check_links(where, record)
            self.prev_seq = record["seq"]
        self.prev_hash, self.prev_where = line_hash(line), where

    def check_links(self, where: str, record: dict[str, Any]) -> None:
        seq, prev_seq = record["seq"], self.prev_seq
        if prev_seq == 0 and seq != 1:
            self.fail(where, f"seq {seq} at start (expected 1)")
        elif prev_seq is not None and seq > prev_seq + 1:
            self.fail(where, f"seq {seq} after {prev_seq} (line deleted or reordered)")
        elif prev_seq is not None and seq <= prev_seq:
            self.fail(where, f"seq {seq} after {prev_seq} (line inserted or reordered)")
        if record["prev"] != self.prev_hash:
            if self.prev_where:
                self.fail(where, f"hash chain broken (prev does not match {self.prev_where})")
            else:
                self.fail(where, "hash chain broken (first prev is not 64 zeros)")
        if self.mac_key is not None:
            mac = record.get("mac")
            if not isinstance(mac, str):
                self.fail(where, "missing mac")
            elif not hmac.compare_digest(mac, record_mac(self.mac_key, record)):
                self.fail(where, "mac does not verify")

    def fail(self, where: str, problem: str) -> None:
        self.report.failures.append(f"{where}: {problem}")


def _parse(line: bytes) -> tuple[dict[str, Any] | None, str]:
    """A line's record, or None and the reason it is not a valid canonical record."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not valid UTF-8"
    try:
        record = json.loads(text, parse_float=_no_float, parse_constant=_no_float)
    except _NotCanonical:
        return None, "not canonical (edited)"
    except ValueError:
        return None, "not valid JSON"
    if not isinstance(record, dict):
        return None, "not a JSON object"
    if canonical_bytes(record) != line:
        return None, "not canonical (edited)"
    for name in sorted(REQUIRED):
        if name not in record:
            return None, f"missing field {name}"
    if record["v"] != VERSION:
        return None, "unsupported version"
    seq = record["seq"]
    if type(seq) is not int or seq < 1 or not isinstance(record["prev"], str):
        return None, "bad seq or prev field"
    return record, ""
