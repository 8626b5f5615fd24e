"""The scale workers of one recording session (replay or the service), wired in by
`runtime/session.py` when the config asks for archive backend s3 or index backend
postgresql:

  - the writer records into the local archive as always; with postgresql its index
    writes and new file keys go to the journal (`journal.py`) instead;
  - `on_closed` queues each sealed recording for the uploader (`uploader.py`);
  - new recordings are refused while the spools are full (`spool.SpoolGuard`);
  - at start, recordings left on disk without a job (recovered after a crash, or closed
    just before one) are queued; at close, pending work is given
    `archive.s3.drain_timeout_s` to finish, and what is left resumes at the next start.

On the sensor's disk (`<archive>/spool/`): `uploads/` and `journal/` (the queues),
`failed/` (uploads that cannot succeed, audited), `uploaded.ids` (with keep_local: the
recordings already in the bucket).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recorder.compliance.retention import build_expiry_rule
from recorder.config import Config
from recorder.container.reader import read_header
from recorder.errors import ConfigError
from recorder.runtime.archive import RECORDING_SUFFIX, Archive
from recorder.runtime.audit import AuditTrail
from recorder.runtime.files import fsync_dir, sha256_file
from recorder.runtime.index import Index, StoredObject
from recorder.runtime.keystore import KeyStore
from recorder.runtime.writer import ClosedRecording
from recorder.scale.auditship import AuditShipper
from recorder.scale.journal import JournaledKeyStore, JournalIndex
from recorder.scale.locks import sync_object
from recorder.scale.spool import Spool, SpoolGuard, combine
from recorder.scale.store import RecordingStore
from recorder.scale.uploader import Uploader, job_for
from recorder.scale.workers import JournalWorker

log = logging.getLogger(__name__)


class ScaleRuntime:
    """Spools, uploader and journal worker of one archive session."""

    def __init__(self, archive: Archive, config: Config, actor: str, audit: AuditTrail) -> None:
        from recorder.scale.backends import bind, make_store

        if config.index.backend == "postgresql" and config.archive.backend != "s3":
            # Recordings on one sensor's disk could be neither read nor erased from the
            # others, and their file keys would outlive an erasure made elsewhere.
            raise ConfigError("index.backend postgresql needs archive.backend s3")
        bind(archive, config)  # commands run in this process use the same backends
        self.archive, self.config, self.actor = archive, config, actor
        self.settings = config.archive.s3
        self.classes = build_expiry_rule(config)
        self.shared_index = config.index.backend == "postgresql"
        root = archive.root / "spool"
        self.journal = Spool(root / "journal") if self.shared_index else None
        self.uploads = Spool(root / "uploads") if config.archive.backend == "s3" else None
        self.marks = root / "uploaded.ids"
        self.store: RecordingStore | None = make_store(config) if self.uploads is not None else None
        spools = [s for s in (self.uploads, self.journal) if s is not None]
        self.guard = SpoolGuard(spools, self.settings.spool_max_bytes, audit)
        self.uploader: Uploader | None = None
        self.worker: JournalWorker | None = None
        self._audits: list[AuditTrail] = []

    # -- what the writer records into ------------------------------------------------------

    def writer_index(self) -> Index:
        if self.journal is not None:
            return JournalIndex(self.journal)
        return Index(self.archive.index_path)

    def writer_keys(self) -> KeyStore:
        if self.journal is not None:
            return JournaledKeyStore(self.archive.keystore_path, self.journal)
        return KeyStore(self.archive.keystore_path)

    def admission(self, disk: Callable[[], str | None]) -> Callable[[], str | None]:
        return combine(disk, self.guard)

    def on_closed(self, closed: ClosedRecording) -> None:
        """Queue a sealed recording for upload (a failure here is found again at start)."""
        if self.uploads is None:
            return
        job = job_for(
            closed.recording_id, closed.relative, closed.sha256, closed.size,
            closed.start_ns, closed.retention_class, closed.expires_ns,
        )  # fmt: skip
        try:
            self.uploads.push(job)
        except OSError as exc:
            log.error("recording %s not queued for upload: %s", closed.recording_id, exc)
            return
        if self.uploader is not None:
            self.uploader.wake()

    # -- workers ---------------------------------------------------------------------------

    def _trail(self) -> AuditTrail:
        trail = AuditTrail(self.archive.audit_path, self.actor)  # its own lock and descriptor
        self._audits.append(trail)
        return trail

    def start(self) -> None:
        """Queue recordings left on disk without a job, then start the workers."""
        if self.uploads is not None:
            self._queue_orphans()
        if self.journal is not None:
            self.worker = JournalWorker(
                self.journal, self.config, self._trail(), self._release_shared, self.classes
            )
            self.worker.start()
        if self.uploads is not None and self.store is not None:
            shipper = AuditShipper(
                self.archive, self.store, self.settings.prefix, self.config.sensor_id,
                self.settings.audit_retain_days,
            )  # fmt: skip
            finish = self._finish_shared if self.journal is not None else self._finish_local()
            self.uploader = Uploader(
                self.archive, self.store, self.settings, self.config.sensor_id,
                self.classes, self.uploads, self._trail(), finish, shipper,
            )  # fmt: skip
            self.uploader.start()

    def drain(self, timeout_s: float) -> bool:
        """Wait for uploads, then for the journal (it carries what the uploads found)."""
        done = True
        if self.uploader is not None:
            done = self.uploader.drain(timeout_s)
        if self.worker is not None:
            done = self.worker.drain(timeout_s if done else 0.0) and done
        return done

    def close(self) -> None:
        timeout = self.settings.drain_timeout_s
        if not self.drain(timeout):
            waiting = sum(len(s) for s in (self.uploads, self.journal) if s is not None)
            log.warning(
                "%d job(s) still wait for S3/PostgreSQL after %.0f s; they resume at the "
                "next start",
                waiting,
                timeout,
            )
        for worker in (self.uploader, self.worker):
            if worker is not None:
                worker.stop()
        for trail in self._audits:
            trail.close()

    # -- finishing an upload ---------------------------------------------------------------

    def _finish_shared(self, obj: StoredObject, job: dict[str, Any]) -> None:
        """PostgreSQL index: the journal records the object, in order after the rows."""
        assert self.journal is not None
        self.journal.push({"op": "uploaded", "object": _plain(obj), "relative": job["relative"]})

    def _finish_local(self) -> Callable[[StoredObject, dict[str, Any]], None]:
        """SQLite index: record the object in it (the uploader thread's own connection)."""
        opened: list[Index] = []

        def finish(obj: StoredObject, job: dict[str, Any]) -> None:
            if not opened:
                opened.append(Index(self.archive.index_path))
                assert self.uploader is not None
                self.uploader.at_exit.append(opened[0].close)  # closed in its own thread
            index = opened[0]
            index.add_object(obj)
            assert self.store is not None
            sync_object(index, self.store, self.classes, obj.recording_id)
            self._release_file(obj.recording_id, str(job["relative"]))

        return finish

    def _release_shared(
        self, obj: StoredObject, job: dict[str, Any], index: Index, keys: KeyStore
    ) -> None:
        """Run by the journal worker once the object is in the shared index: sync the lock,
        then drop the local key (the shared store holds it) and the local file."""
        if self.store is not None:
            sync_object(index, self.store, self.classes, obj.recording_id)
        if keys.get(obj.recording_id) is not None:
            with KeyStore(self.archive.keystore_path) as local:
                local.delete(obj.recording_id)
        self._release_file(obj.recording_id, str(job["relative"]))

    def _release_file(self, recording_id: str, relative: str) -> None:
        if self.settings.keep_local:
            with self.marks.open("a", encoding="ascii") as f:
                f.write(recording_id + "\n")
            return
        path = self.archive.resolve(relative)
        path.unlink(missing_ok=True)
        if path.parent.is_dir():
            fsync_dir(path.parent)

    # -- recordings on disk without a job --------------------------------------------------

    def _queue_orphans(self) -> None:
        assert self.uploads is not None
        known = {str(job["recording_id"]) for _, job in self.uploads.items()}
        known |= {
            str(job["recording_id"])
            for _, job in Spool(self.uploads.folder.parent / "failed").items()
        }
        if self.marks.exists():
            known |= set(self.marks.read_text(encoding="ascii").split())
        orphans = [
            p for p in self.archive.recording_files()
            if p.name.removesuffix(RECORDING_SUFFIX) not in known
        ]  # fmt: skip
        if not orphans:
            return
        classes = _classes_from_trail(self.archive.audit_path)
        for path in orphans:
            rid = path.name.removesuffix(RECORDING_SUFFIX)
            try:
                with path.open("rb") as f:
                    start_ns = read_header(f).created_ns
                job = job_for(
                    rid, self.archive.relative_path(rid), sha256_file(path), path.stat().st_size,
                    start_ns, classes.get(rid, "default"), None,
                )  # fmt: skip
            except Exception as exc:  # an unreadable file: leave it for verify to name
                log.error("recording %s on disk cannot be queued for upload: %s", rid, exc)
                continue
            self.uploads.push(job)
            log.warning("recording %s found on disk without an upload job: queued", rid)

    def collector(self) -> Any:
        """A Prometheus collector of the spools and workers (see scale/metrics.py)."""
        from recorder.scale.metrics import ScaleCollector

        return ScaleCollector(self)


def _plain(obj: StoredObject) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(obj)


def _classes_from_trail(path: Path) -> dict[str, str]:
    """Retention class of each recording, from its `recording.opened` audit record."""
    out: dict[str, str] = {}
    try:
        with path.open("rb") as lines:
            for line in lines:
                if b'"recording.opened"' not in line:
                    continue
                record = json.loads(line)
                if record.get("event") == "recording.opened":
                    out[str(record["recording_id"])] = str(record.get("retention_class"))
    except (FileNotFoundError, ValueError):
        pass
    return out
