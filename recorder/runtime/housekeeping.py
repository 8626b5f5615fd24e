"""Work the service does beside capture, on threads of its own: periodic retention.

Retention (`compliance.retention.run_retention`) opens its own index, key store and audit
connections, so it never touches the capture loop's; SQLite's busy timeout and the audit
trail's flock (one per open file description, so it also excludes threads) order the two.
One thread, one run at a time: a run that outlasts the interval delays the next one rather
than overlapping it. A failed run is logged and audited (`retention.failed`) and retried
at the next interval; the service goes on recording.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from recorder.compliance.retention import RetentionReport, run_retention
from recorder.config import Config
from recorder.runtime.archive import Archive
from recorder.runtime.audit import AuditTrail

log = logging.getLogger("recorder.retention")

_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


@contextmanager
def signals_blocked() -> Iterator[None]:
    """Threads started inside inherit a mask without the service's signals, so that the
    kernel delivers them to the main thread and wakes its poll at once."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@dataclass
class RetentionStats:
    """What the metrics read (written by the retention thread only)."""

    runs: int = 0
    failures: int = 0
    deleted: int = 0
    kept: int = 0
    last_success_ns: int = 0  # wall clock of the last run that finished
    last_duration_ns: int = 0


Runner = Callable[..., RetentionReport]


class RetentionWorker:
    """Runs retention once at start, then every `config.retention.interval_s` seconds,
    until `stop()`. `runner` and `clock` are replaceable for tests."""

    def __init__(
        self,
        archive: Archive,
        config: Config,
        actor: str,
        *,
        runner: Runner = run_retention,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.archive = archive
        self.config = config
        self.actor = actor
        self.stats = RetentionStats()
        self._runner = runner
        self._clock = clock
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with signals_blocked():
            self._thread = threading.Thread(target=self._loop, name="retention", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Ask the thread to stop (a run in progress ends after its current deletion) and
        wait for it; False when it did not end in `timeout_s`."""
        self._stopping.set()
        if self._thread is None:
            return True
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error("retention did not stop within %.0f s", timeout_s)
            return False
        return True

    def _loop(self) -> None:
        interval = self.config.retention.interval_s
        while not self._stopping.is_set():
            self.run_once()
            if self._stopping.wait(interval):
                return

    def run_once(self) -> RetentionReport | None:
        """One retention run; never raises (a failure is counted, logged and audited)."""
        started = time.monotonic_ns()
        try:
            report = self._runner(
                self.archive,
                self.config,
                self.actor,
                self._clock(),
                cancelled=self._stopping.is_set,
            )
        except Exception as exc:  # any failure: the next interval tries again
            self.stats.failures += 1
            log.error("retention run failed: %s", exc)
            self._audit_failure(exc)
            return None
        stats = self.stats
        stats.runs += 1
        stats.deleted += len(report.deleted)
        stats.kept = len(report.kept)
        stats.last_success_ns = self._clock()
        stats.last_duration_ns = time.monotonic_ns() - started
        if report.deleted or report.expiry_fixed:
            log.info(
                "retention: %d recordings deleted, %d kept past expiry, %d expiries fixed%s",
                len(report.deleted),
                len(report.kept),
                report.expiry_fixed,
                " (interrupted by shutdown)" if report.interrupted else "",
            )
        return report

    def _audit_failure(self, exc: Exception) -> None:
        try:
            with AuditTrail(self.archive.audit_path, self.actor) as audit:
                audit.append(
                    "retention.failed",
                    outcome="failure",
                    reason=f"{type(exc).__name__}: {exc}"[:300],
                )
        except Exception as again:  # the audit trail itself failing: the log is all we have
            log.error("cannot audit the retention failure: %s", again)
