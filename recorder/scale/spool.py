"""Bounded on-disk queues: what a sensor still has to hand to S3 or PostgreSQL.

A `Spool` is a folder of small JSON jobs, one file each, named by a sequence number so
that name order is arrival order. A job is written to a temporary name, fsynced, renamed
and the folder fsynced: once `push` returns, a crash or power loss keeps it, and the next
start resumes it. A worker takes the oldest job (`peek`), may rewrite it as it progresses
(`update`, same care) and removes it when done (`done`).

Each job carries a `weight` in bytes (the size of the recording it waits to upload, or of
the job file itself); `SpoolGuard` refuses new recordings while the weights of every queue
add up to `archive.s3.spool_max_bytes`, as the disk guard does for free space.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recorder.runtime.audit import AuditTrail
from recorder.runtime.files import fsync_dir, write_all

log = logging.getLogger(__name__)

SPOOL_REFUSAL = "upload spool full (archive.s3.spool_max_bytes): S3 or PostgreSQL unreachable"
_SUFFIX = ".json"


class Spool:
    """A persistent FIFO of JSON jobs in `folder`; safe between threads of one process."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._weights: dict[str, int] = {}
        for path in sorted(self.folder.glob("*.tmp")):  # a push a crash interrupted
            path.unlink()
        for path in self._files():
            self._weights[path.name] = _weight(_read(path), path)
        self._next = max((int(n.removesuffix(_SUFFIX)) for n in self._weights), default=0) + 1

    def _files(self) -> list[Path]:
        return sorted(self.folder.glob("*" + _SUFFIX))

    def push(self, job: dict[str, Any]) -> str:
        """Append a job, durable on return; returns its name."""
        with self._lock:
            name = f"{self._next:016d}{_SUFFIX}"
            self._next += 1
            data = _write(self.folder / name, job)
            self._weights[name] = int(job.get("weight", len(data)))
        return name

    def peek(self) -> tuple[str, dict[str, Any]] | None:
        """The oldest job and its name, or None when the queue is empty."""
        with self._lock:
            names = sorted(self._weights)
        for name in names:
            try:
                return name, _read(self.folder / name)
            except FileNotFoundError:
                continue
        return None

    def items(self) -> list[tuple[str, dict[str, Any]]]:
        """Every job, oldest first."""
        with self._lock:
            names = sorted(self._weights)
        return [(name, _read(self.folder / name)) for name in names]

    def update(self, name: str, job: dict[str, Any]) -> None:
        """Rewrite a job in place (durably), e.g. to note a step already taken."""
        _write(self.folder / name, job)

    def done(self, name: str) -> None:
        with self._lock:
            self._weights.pop(name, None)
            (self.folder / name).unlink(missing_ok=True)
        fsync_dir(self.folder)

    def __len__(self) -> int:
        with self._lock:
            return len(self._weights)

    @property
    def weight(self) -> int:
        """Bytes this queue holds back (recordings waiting, or job files)."""
        with self._lock:
            return sum(self._weights.values())


def _read(path: Path) -> dict[str, Any]:
    job = json.loads(path.read_bytes())
    if not isinstance(job, dict):
        raise ValueError(f"spool job {path} is not a JSON object")
    return job


def _weight(job: dict[str, Any], path: Path) -> int:
    value = job.get("weight")
    return int(value) if isinstance(value, int) else path.stat().st_size


def _write(path: Path, job: dict[str, Any]) -> bytes:
    data = json.dumps(job, sort_keys=True, separators=(",", ":")).encode("utf-8")
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return data


class SpoolGuard:
    """Admission check: refuse new recordings while the queues hold `max_bytes` or more.
    Crossing the limit either way is one log line and one audit record (`spool.full`,
    `spool.recovered`), as the disk guard does."""

    def __init__(
        self, spools: list[Spool], max_bytes: int, audit: AuditTrail | None = None
    ) -> None:
        self.spools = spools
        self.max_bytes = max_bytes
        self._audit = audit
        self.full = False
        self.transitions = 0

    @property
    def used_bytes(self) -> int:
        return sum(s.weight for s in self.spools)

    def __call__(self) -> str | None:
        used = self.used_bytes
        full = used >= self.max_bytes
        if full != self.full:
            self.full = full
            self.transitions += 1
            if full:
                log.error(
                    "upload spool full: %d bytes wait for S3/PostgreSQL (limit %d); new calls "
                    "are not recorded until uploads catch up",
                    used,
                    self.max_bytes,
                )
            else:
                log.warning("upload spool has room again (%d bytes waiting)", used)
            if self._audit is not None:
                self._audit.append(
                    "spool.full" if full else "spool.recovered",
                    outcome="failure" if full else "ok",
                    used_bytes=used,
                    max_bytes=self.max_bytes,
                )
        return SPOOL_REFUSAL if full else None


def combine(*checks: Callable[[], str | None]) -> Callable[[], str | None]:
    """One admission check from several: the first refusal wins."""

    def admission() -> str | None:
        for check in checks:
            refusal = check()
            if refusal is not None:
                return refusal
        return None

    return admission
