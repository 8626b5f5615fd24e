"""The archive opened for recording: index, key store, audit trail, crash recovery and a
writer wired to the config's retention and admission rules. Replay and the live service
both record through one of these."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from recorder.compliance.factory import build_expiry
from recorder.config import Config
from recorder.container.masterkey import MasterKey
from recorder.errors import ArchiveError
from recorder.runtime.archive import Archive
from recorder.runtime.audit import AuditTrail
from recorder.runtime.catalog import apply_backlogs
from recorder.runtime.diskguard import build_admission
from recorder.runtime.index import Index
from recorder.runtime.keystore import KeyStore
from recorder.runtime.recovery import RecordingsHold, recover_partials
from recorder.runtime.writer import ArchiveWriter

if TYPE_CHECKING:
    from recorder.scale.runtime import ScaleRuntime

log = logging.getLogger(__name__)


class ArchiveSession:
    """`master` wraps the file keys of new recordings; `recovery_keys` (by kid, e.g. a key
    ring after a rotation) unwrap those of partial recordings a crash left, which may be
    wrapped under an older master key (default: `master` alone).

    With archive backend s3 or index backend postgresql, `scale` (recorder/scale/) gives
    the writer its index and key store, queues each closed recording for upload and runs
    the workers; `close` waits for them (archive.s3.drain_timeout_s)."""

    def __init__(
        self,
        root: Path,
        master: MasterKey,
        actor: str,
        config: Config,
        *,
        recovery_keys: Mapping[str, MasterKey] | None = None,
        spare_files: int = 0,
    ) -> None:
        self.config = config
        self.archive = Archive(root)
        self.archive.create()
        self.audit = AuditTrail(self.archive.audit_path, actor)
        self.scale: ScaleRuntime | None = None
        if config.archive.backend != "local" or config.index.backend != "sqlite":
            from recorder.scale.runtime import ScaleRuntime

            self.scale = ScaleRuntime(self.archive, config, actor, self.audit)
            self.index = self.scale.writer_index()
            self.keys = self.scale.writer_keys()
        else:
            self.index = Index(self.archive.index_path)
            self.keys = KeyStore(self.archive.keystore_path)
        self.hold = RecordingsHold(self.archive.recordings_dir)
        self._apply_backlogs()  # before recovery: the rows of the recordings it recovers
        masters = {master.kid: master, **(recovery_keys or {})}
        recovery = recover_partials(self.archive, masters, self, alone=self.hold.alone)
        self.recovered = recovery.recovered
        if self.hold.alone:
            self.hold.share()
        elif recovery.left:
            self._note_left(recovery.left)
        admission = build_admission(config, self.archive, self.audit)
        self.writer = ArchiveWriter(
            self.archive,
            master,
            self.index,
            self.keys,
            self.audit,
            fsync_interval_s=config.archive.fsync_interval_s,
            expiry=build_expiry(config),
            admission=self.scale.admission(admission) if self.scale else admission,
            sensor_id=config.sensor_id,
            on_closed=self.scale.on_closed if self.scale else None,
            spare_files=spare_files,
        )
        if self.scale is not None:
            self.scale.start()

    def _apply_backlogs(self) -> None:
        """The index writes a killed session left waiting for a locked index
        (`catalog.py`)."""
        try:
            applied = apply_backlogs(self.archive.root, self.index)
        except sqlite3.OperationalError as exc:
            raise ArchiveError(
                f"index {self.archive.index_path}: {exc}: the index writes a crash left "
                "waiting cannot be made yet (another process holds its lock?)"
            ) from None
        if applied.made or applied.skipped:
            self.audit.append(
                "index.backlog_applied",
                outcome="failure" if applied.skipped else "ok",
                writes=applied.made,
                skipped=applied.skipped,
            )

    def _note_left(self, left: int) -> None:
        """Another recorder writes to this archive: the partial files it has open, or that
        have no key yet, are left to it (or to a recorder that starts alone)."""
        log.info(
            "another recorder is writing to %s: %d partial files left to it (open there, or "
            "without a key: a crash's from before its first audio goes at a start alone)",
            self.archive.root,
            left,
        )
        self.audit.append("recovery.deferred", partial_files=left)

    def close(self) -> None:
        self.writer.close()
        if self.scale is not None:
            self.scale.close()
        self.audit.close()
        self.keys.close()
        self.index.close()
        self.hold.close()
