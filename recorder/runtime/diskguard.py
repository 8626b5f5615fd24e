"""Admission of new recordings: refuse to open one when the archive's file system has
less than `archive.min_free_bytes` available, so that recordings already open, the index
and the audit trail keep room to finish (they are never refused).

The free space comes from statvfs (`f_bavail`: what the unprivileged service user may
use), cached for `cache_s` so that a burst of new calls costs one system call. Crossing
the threshold either way is one log line and one audit record (`storage.low`,
`storage.recovered`), not one per call; recording resumes by itself when space returns.
The service also polls `check()` every tick, so the state and the metric stay current
while no call starts.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from recorder.config import Config
from recorder.runtime.archive import Archive
from recorder.runtime.audit import AuditTrail

log = logging.getLogger(__name__)

REFUSAL = "disk nearly full (below archive.min_free_bytes)"

_GUARDS: dict[Path, DiskGuard] = {}


class DiskGuard:
    """Callable admission check: a refusal reason, or None to open the recording."""

    def __init__(
        self,
        folder: Path,
        min_free_bytes: int,
        audit: AuditTrail | None,
        *,
        statvfs: Callable[[Path], os.statvfs_result] = os.statvfs,
        clock: Callable[[], float] = time.monotonic,
        cache_s: float = 1.0,
    ) -> None:
        self.folder = folder
        self.min_free_bytes = min_free_bytes
        self._audit = audit
        self._statvfs = statvfs
        self._clock = clock
        self._cache_s = cache_s
        self._checked_at: float | None = None
        self.free_bytes = -1  # -1: unknown (statvfs failed)
        self.low = False
        self.transitions = 0

    def __call__(self) -> str | None:
        return REFUSAL if self.check() else None

    def check(self) -> bool:
        """True while space is low (refreshing the cached figure when it is stale)."""
        now = self._clock()
        if self._checked_at is None or now - self._checked_at >= self._cache_s:
            self._checked_at = now
            self._refresh()
        return self.low

    def _refresh(self) -> None:
        try:
            st = self._statvfs(self.folder)
        except OSError as exc:
            # Unknown is not full: refusing every call on a failed statvfs would lose calls.
            if self.free_bytes != -1:
                log.error("cannot read free space of %s: %s", self.folder, exc.strerror or exc)
            self.free_bytes = -1
            return
        self.free_bytes = st.f_bavail * st.f_frsize
        low = self.free_bytes < self.min_free_bytes
        if low != self.low:
            self.low = low
            self.transitions += 1
            self._announce(low)

    def _announce(self, low: bool) -> None:
        mib = self.free_bytes // (1024 * 1024)
        limit = self.min_free_bytes // (1024 * 1024)
        if low:
            log.error(
                "disk nearly full: %d MiB free in %s, below archive.min_free_bytes (%d MiB); "
                "new calls are not recorded until space returns",
                mib,
                self.folder,
                limit,
            )
        else:
            log.warning(
                "disk space back: %d MiB free in %s; recording new calls again", mib, self.folder
            )
        if self._audit is not None:
            self._audit.append(
                "storage.low" if low else "storage.recovered",
                outcome="failure" if low else "ok",
                free_bytes=self.free_bytes,
                min_free_bytes=self.min_free_bytes,
            )


def build_admission(
    config: Config, archive: Archive, audit: AuditTrail
) -> Callable[[], str | None]:
    """The check run before each new recording (see `DiskGuard`)."""
    guard = DiskGuard(archive.root, config.archive.min_free_bytes, audit)
    _GUARDS[archive.root.resolve()] = guard
    return guard


def guard_for(archive: Archive) -> DiskGuard | None:
    """The guard `build_admission` made for `archive` (the service reads its state)."""
    return _GUARDS.get(archive.root.resolve())
