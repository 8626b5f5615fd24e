"""The journal worker: applies a sensor's journal (see journal.py) to PostgreSQL, oldest
job first, reconnecting and retrying with backoff while the server is away. A job that
can never apply (a key conflict, a row the schema refuses) is put aside in
`spool/journal-failed/` and audited, so that it does not hold back the jobs behind it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping

from recorder.compliance.settings import RetentionClass
from recorder.config import Config
from recorder.runtime.audit import AuditTrail
from recorder.runtime.index import Index
from recorder.runtime.keystore import KeyStore
from recorder.scale.errors import BackendUnavailable
from recorder.scale.journal import Release, apply_job
from recorder.scale.spool import Spool
from recorder.scale.uploader import Health, backoff

log = logging.getLogger(__name__)


class JournalWorker:
    """A thread applying the journal to the shared index and key store."""

    def __init__(
        self,
        journal: Spool,
        config: Config,
        audit: AuditTrail,
        release: Release,
        classes: Mapping[str, RetentionClass],
    ) -> None:
        self.journal, self.config, self.audit = journal, config, audit
        self.release, self.classes = release, classes
        self.failed = Spool(journal.folder.parent / "journal-failed")
        self.health = Health("postgresql")
        self.applied = 0
        self._index: Index | None = None
        self._keys: KeyStore | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="journal", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def drain(self, timeout_s: float) -> bool:
        self.wake()
        deadline = time.monotonic() + timeout_s
        while len(self.journal):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._disconnect()

    def _connect(self) -> tuple[Index, KeyStore]:
        from recorder.scale.pg import PgIndex, PgKeyStore

        if self._index is None or self._keys is None:
            self._disconnect()
            dsn, timeout = self.config.index.dsn, self.config.index.connect_timeout_s
            self._index = PgIndex(dsn, connect_timeout_s=timeout)
            self._keys = PgKeyStore(dsn, connect_timeout_s=timeout)
        return self._index, self._keys

    def _disconnect(self) -> None:
        for db in (self._index, self._keys):
            if db is not None:
                db.close()
        self._index = self._keys = None

    def _run(self) -> None:
        attempt = 0
        retry_max = self.config.archive.s3.retry_max_s
        while not self._stop.is_set():
            try:
                worked = self.run_once()
                self.health.ok(self.audit, len(self.journal))
                attempt = 0
            except BackendUnavailable as exc:
                if exc.backend == "postgresql":
                    self._disconnect()
                self.health.failed(exc, self.audit, len(self.journal))
                self._wake.wait(backoff(attempt, retry_max))
                self._wake.clear()
                attempt += 1
                continue
            if not worked:
                self._wake.wait(0.5)
                self._wake.clear()

    def run_once(self, limit: int = 256) -> bool:
        """Apply up to `limit` jobs; False if there was none."""
        worked = False
        for _ in range(limit):
            item = self.journal.peek()
            if item is None:
                return worked
            name, job = item
            index, keys = self._connect()
            try:
                apply_job(job, index, keys, self.release)
            except BackendUnavailable:
                raise
            except Exception as exc:
                self._put_aside(name, job, f"{type(exc).__name__}: {exc}")
                continue
            self.journal.done(name)
            self.applied += 1
            worked = True
        return worked

    def _put_aside(self, name: str, job: dict[str, object], reason: str) -> None:
        log.error("journal job %s (%s) cannot be applied: %s", name, job.get("op"), reason)
        self.audit.append("journal.failed", outcome="failure", op=str(job.get("op")), reason=reason)
        self.failed.push({**job, "reason": reason})
        self.journal.done(name)
