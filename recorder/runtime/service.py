"""`recorder run`: the live service. Live frames go through the same loop (`runner.feed_blocks`),
core and `ArchiveSession` as `recorder replay`; only the source and the clock differ.

Lifecycle:
  start    open the archive (recovering recordings a crash left open, with every key of
           the key ring), the capture, the metrics endpoint, the PCI control socket, the
           retention thread; audit `service.started`; tell systemd READY=1.
  running  every tick (<= 100 ms): timers at wall-clock time when the ring is empty, the
           control socket's waiting pause/resume requests, the disk guard, WATCHDOG=1 to
           systemd, a pending reload, a pending stop. Retention runs on its own thread
           every `retention.interval_s`.
  SIGHUP   reload the config file: apply what is safe (servicecfg.RELOADABLE), audit
           `config.reloaded` with what changed and what needs a restart.
  SIGTERM  (or SIGINT) stop capturing and the control socket, let a retention run finish
           its current deletion, close every open call as a complete recording (reason
           "shutdown"), audit `service.stopped`, exit 0.
  capture  failure (interface gone): the same orderly close, exit 1 (systemd restarts us).
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, cast

from recorder import __version__
from recorder.compliance.control import ControlServer
from recorder.compliance.factory import build_core, policy_summary
from recorder.config import CaptureSettings, Config
from recorder.core.clock import SteppedClock
from recorder.core.model import FrameBlock
from recorder.core.pipeline import RecorderCore
from recorder.errors import RecorderError
from recorder.runtime import libpcap, logsetup
from recorder.runtime.audit import Value
from recorder.runtime.clockwatch import ClockWatch
from recorder.runtime.diskguard import guard_for
from recorder.runtime.eventlog import EventLog
from recorder.runtime.fdlimit import raise_open_files_limit
from recorder.runtime.housekeeping import RetentionWorker, signals_blocked
from recorder.runtime.keyfile import KeyRing
from recorder.runtime.libpcap import CaptureError
from recorder.runtime.live import Capture, open_capture
from recorder.runtime.metrics import MetricsServer, Sources, count_audit, make_registry
from recorder.runtime.runner import LoopStats, drain, feed_blocks
from recorder.runtime.sdnotify import Notifier
from recorder.runtime.servicecfg import capture_filter_caveat, load_service_config, plan_reload
from recorder.runtime.session import ArchiveSession
from recorder.runtime.spares import TARGET as SPARE_FILES
from recorder.runtime.timefmt import rfc3339_ns
from recorder.runtime.writer import ArchiveWriter

log = logging.getLogger("recorder.service")

TICK_S = 0.1
# A step of the wall clock is taken on a tick only this long after it was noticed: frames
# stamped before it may wait in the kernel's unfinished block (timeout_ms <= 1 s).
STEP_SETTLE_S = 2.0


class Service:
    """`recorder run`: `keys.current` wraps new recordings; every key of the ring may
    unwrap a partial recording left by a crash (recovered at start)."""

    def __init__(
        self,
        config: Config,
        keys: KeyRing,
        actor: str,
        *,
        config_path: Path | None = None,
        overrides: dict[str, Any] | None = None,
        capture_factory: Callable[[CaptureSettings], Capture] = open_capture,
        notifier: Notifier | None = None,
        clock_watch: Callable[[], ClockWatch] = ClockWatch,
    ) -> None:
        self.config = config
        self.keys = keys
        self.master = keys.current
        self.actor = actor
        self.config_path = config_path
        self.overrides = overrides or {}
        self.capture_factory = capture_factory
        self.notifier = notifier or Notifier.from_environment()
        self._new_clock_watch = clock_watch
        self._clock_watch: ClockWatch | None = None
        self.clock = SteppedClock()  # the core's clock, continuous across wall-clock steps
        self._step_noticed = 0.0  # monotonic time at which a pending step was noticed
        self.sources = Sources()
        self.metrics: MetricsServer | None = None
        self._stop_reason = ""
        self._reload = False
        self._capture: Capture | None = None
        self.control: ControlServer | None = None
        self.retention: RetentionWorker | None = None

    # -- signals (handlers only set flags; the loop acts at its next tick) --------------

    def _on_stop(self, signum: int, _frame: FrameType | None) -> None:
        self._stop_reason = signal.Signals(signum).name
        if self._capture is not None:
            self._capture.stop()

    def _on_hup(self, _signum: int, _frame: FrameType | None) -> None:
        self._reload = True

    # -- run ---------------------------------------------------------------------------

    def run(self) -> int:
        """Capture until SIGTERM; 0 after an orderly stop, 1 when the capture failed."""
        cfg = self.config
        logsetup.configure(cfg.log.level)
        if (caveat := raise_open_files_limit()[1]) is not None:  # before the writer counts
            log.warning("%s", caveat)
        session = ArchiveSession(
            Path(cfg.archive.path),
            self.master,
            self.actor,
            cfg,
            recovery_keys=self.keys.keys,
            spare_files=SPARE_FILES,  # calls start by the thousand (a PBX restart)
        )
        try:
            return self._run(session)
        finally:
            self._stop_helpers()
            session.close()
            if self.metrics is not None:
                self.metrics.close()
            self.notifier.close()

    def _run(self, session: ArchiveSession) -> int:
        cfg = self.config
        src = self.sources
        src.audit = count_audit(session.audit)
        src.recovered = session.recovered
        src.writer = session.writer
        src.guard = self.guard = guard_for(session.archive)
        src.libpcap = libpcap.version()
        # Policy, DTMF pause/opt-out, pause time-out; warns when no policy is configured.
        self.core = core = build_core(cfg)
        src.core = core
        src.loop = loop = LoopStats()
        capture = self._capture = self.capture_factory(cfg.capture)
        src.capture = capture.state
        self.session = session
        self._events = EventLog(session.writer, src.events, self.clock)
        self._clock_watch = self._new_clock_watch()
        try:
            self._start_metrics(cfg)
            self._start_control(cfg)
            if capture.warning:
                log.warning("capture on %s: %s", cfg.capture.interface, capture.warning)
            if (caveat := capture_filter_caveat(cfg.capture.filter)) is not None:
                log.warning("%s", caveat)
            session.audit.append(
                "service.started",
                version=__version__,
                interface=cfg.capture.interface,
                linktype=capture.linktype,
                filter=cfg.capture.filter,
                kid=self.master.kid,
                kids=list[Value](sorted(self.keys.keys)),
                recovered=session.recovered,
                policy=policy_summary(cfg),
                control=cfg.pci.control.socket if self.control is not None else None,
                retention_interval_s=int(cfg.retention.interval_s),
            )
            self._start_retention(session, cfg)
            log.info(
                "recording calls on %s (link type %d, filter %r) into %s",
                cfg.capture.interface,
                capture.linktype,
                cfg.capture.filter,
                cfg.archive.path,
            )
            previous = self._install_signals()
            self.notifier.notify("READY=1", f"STATUS=capturing on {cfg.capture.interface}")
            failure: CaptureError | None = None
            try:
                # EventLog has the one method feed_blocks() uses from ArchiveWriter: handle().
                feed_blocks(
                    self._core_blocks(capture.blocks(self._tick, TICK_S)),
                    core,
                    cast(ArchiveWriter, self._events),
                    loop,
                )
            except CaptureError as exc:
                failure = exc
                log.error("%s; closing open calls and stopping", exc)
            finally:
                self._restore_signals(previous)
            return self._shutdown(session, core, capture, failure)
        finally:
            capture.close()

    def _tick(self, idle: bool) -> None:
        if idle:
            # The ring is empty: every packet captured so far is processed, except those
            # the kernel still holds in an unfinished block (at most timeout_ms old). The
            # core's timers run when due, as packets would run them: under steady load the
            # ring empties many times a second, and a sweep each time placed a few packets
            # per call at numpy's per-call cost (1.35x the CPU a packet at 1,500 calls).
            now = self._core_time(time.time_ns() - self.config.capture.timeout_ms * 1_000_000)
            if now is not None and now >= self.core.get_timer():
                self.core.handle_timer(now)
        if self.clock.applied:
            self._report_clock_steps()
        if self.control is not None:
            # Pause/resume requests wait at most one tick: applied at the core's capture
            # time, between two frames (the only thread that touches the core).
            self.sources.control_requests += self.control.drain(self.core)
        drain(self.core, cast(ArchiveWriter, self._events))
        if self.guard is not None:
            self.guard.check()
        if self.notifier.watchdog_due():
            self.notifier.notify("WATCHDOG=1")
        if self._reload:
            self._reload = False
            self.reload()
        if self._stop_reason and self._capture is not None:
            self._capture.stop()

    def _shutdown(
        self,
        session: ArchiveSession,
        core: RecorderCore,
        capture: Capture,
        failure: CaptureError | None,
    ) -> int:
        self.notifier.notify("STOPPING=1", "STATUS=closing open calls")
        self._stop_helpers(core)
        open_before = session.writer.open_count
        core.close(self._core_time(time.time_ns(), settle=True), reason="shutdown")
        if self.clock.applied:
            self._report_clock_steps()
        drain(core, cast(ArchiveWriter, self._events))
        session.writer.settle()
        kernel = capture.state.kernel
        reason = "capture failed" if failure is not None else self._stop_reason or "stopped"
        session.audit.append(
            "service.stopped",
            outcome="failure" if failure is not None else "ok",
            reason=reason if failure is None else f"{reason}: {failure}",
            frames=self.sources.loop.frames if self.sources.loop else 0,
            recordings_closed=open_before,
            recorded=session.writer.stats.closed,
            kernel_dropped=kernel.dropped,
        )
        log.info(
            "stopped (%s): %d recordings closed at shutdown, %d recorded in all",
            reason,
            open_before,
            session.writer.stats.closed,
        )
        return 1 if failure is not None else 0

    # -- the clock: live frames carry wall-clock times, which can be stepped -------------

    def _watch_clock(self) -> None:
        assert self._clock_watch is not None
        if (delta := self._clock_watch.step()) is not None:
            log.warning("the system clock was stepped by %+.3f s", delta / 1e9)
            self.clock.stepped(delta)
            self._step_noticed = time.monotonic()

    def _core_blocks(self, blocks: Iterable[FrameBlock]) -> Iterator[FrameBlock]:
        """The capture's blocks in core time: a step of the wall clock noticed before a
        block is read off the ring is taken out of it from the first frame that shows it."""
        for block in blocks:
            self._watch_clock()
            yield self.clock.block(block, self.core.now_ns)

    def _core_time(self, wall_ns: int, *, settle: bool = False) -> int | None:
        """A wall-clock time as core time; None while a step noticed less than
        STEP_SETTLE_S ago waits for a frame to show where it falls."""
        self._watch_clock()
        if (
            not settle
            and self.clock.pending_ns is not None
            and time.monotonic() - self._step_noticed < STEP_SETTLE_S
        ):
            return None
        return self.clock.time(wall_ns, self.core.now_ns)

    def _report_clock_steps(self) -> None:
        for step in self.clock.applied:
            self.sources.clock_steps += 1
            log.warning("clock step of %+.3f s taken out of capture times", step.delta_ns / 1e9)
            self.session.audit.append(
                "capture.clock_stepped",
                delta_ms=step.delta_ns // 1_000_000,
                at=rfc3339_ns(self.clock.wall(step.at_ns)),
            )
        self.clock.applied.clear()

    # -- control socket and retention ---------------------------------------------------

    def _start_control(self, cfg: Config) -> None:
        settings = cfg.pci.control
        if not settings.enabled:
            return
        # Requests are stamped in core time: a resume takes effect at its arrival.
        control = ControlServer(
            Path(settings.socket),
            Path(settings.token_file),
            clock=lambda: self.clock.core_time(time.time_ns()),
        )
        try:
            with signals_blocked():
                control.start()
        except OSError as exc:
            raise RecorderError(
                f"pci.control.socket {settings.socket}: {exc.strerror or exc}"
            ) from None
        self.control = control
        log.info("PCI control socket listening on %s", settings.socket)

    def _start_retention(self, session: ArchiveSession, cfg: Config) -> None:
        self.retention = RetentionWorker(session.archive, cfg, self.actor)
        self.sources.retention = self.retention.stats
        self.retention.start()

    def _stop_helpers(self, core: RecorderCore | None = None) -> None:
        """Stop the control socket (applying what waits, if the core is still up) and
        retention; idempotent."""
        if self.control is not None:
            control, self.control = self.control, None
            if core is not None:
                self.sources.control_requests += control.drain(core)
            control.stop()
        if self.retention is not None:
            retention, self.retention = self.retention, None
            retention.stop()

    # -- reload ------------------------------------------------------------------------

    def reload(self) -> None:
        """Re-read the config file (SIGHUP); apply the safe changes, audit the rest."""
        audit = self.session.audit
        if self.config_path is None:
            log.warning("SIGHUP: no config file to reload (started without --config)")
            return
        try:
            new = load_service_config(self.config_path, self.overrides)
        except RecorderError as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            audit.append("config.reload_failed", outcome="failure", reason=str(exc))
            return
        plan = plan_reload(self.config, new)
        changed: list[Value] = [*sorted([*plan.applied, *plan.needs_restart])]
        applied: dict[str, Value] = dict(plan.applied)
        restart: list[Value] = list(plan.needs_restart)
        self.config = plan.config
        if "log.level" in plan.applied:
            logsetup.set_level(plan.config.log.level)
        if self.guard is not None:
            self.guard.min_free_bytes = plan.config.archive.min_free_bytes
        if {"metrics.enabled", "metrics.address"} & plan.applied.keys():
            self._restart_metrics(plan.config)
        self.sources.reloads += 1
        audit.append(
            "config.reloaded",
            path=str(self.config_path),
            changed=changed,
            applied=applied,
            needs_restart=restart,
        )
        if plan.needs_restart:
            log.warning(
                "config reloaded; needs a restart to apply: %s", ", ".join(plan.needs_restart)
            )
        else:
            log.info("config reloaded: %s", ", ".join(plan.applied) or "no change")

    # -- metrics -----------------------------------------------------------------------

    def _start_metrics(self, cfg: Config) -> None:
        if not cfg.metrics.enabled:
            return
        registry = make_registry(self.sources)
        scale = getattr(self, "session", None) and self.session.scale
        if scale:  # S3 and PostgreSQL: backend up, spool bytes, uploads
            registry.register(scale.collector())
        try:
            self.metrics = MetricsServer(cfg.metrics.address, registry)
        except OSError as exc:
            raise RecorderError(
                f"metrics.address {cfg.metrics.address}: {exc.strerror or exc}"
            ) from None

    def _restart_metrics(self, cfg: Config) -> None:
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        try:
            self._start_metrics(cfg)
        except RecorderError as exc:
            log.error("%s; metrics stay off until the next reload", exc)

    def _install_signals(self) -> dict[int, Any]:
        handlers = {
            signal.SIGTERM: self._on_stop,
            signal.SIGINT: self._on_stop,
            signal.SIGHUP: self._on_hup,
        }
        return {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}

    @staticmethod
    def _restore_signals(previous: dict[int, Any]) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
