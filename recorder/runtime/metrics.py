"""Prometheus metrics: one custom Collector reads the plain counters of the core, the
writer, the capture and the disk guard at scrape time (prometheus_client's collector
protocol), so the core never imports prometheus_client.

Names follow Prometheus practice: prefix `recorder_`, counters end `_total`, base units
in names, and labels only with bounded values (drop layer/reason words, call outcomes),
never a Call-ID or a number. The scrape runs on the HTTP server's thread: it only reads
ints and copies counters with `dict()` (one C-level copy under the GIL).
"""

from __future__ import annotations

import platform
import signal
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from recorder import __version__
from recorder.core.pipeline import RecorderCore
from recorder.runtime.audit import AuditTrail
from recorder.runtime.diskguard import DiskGuard
from recorder.runtime.housekeeping import RetentionStats
from recorder.runtime.live import CaptureState
from recorder.runtime.runner import LoopStats
from recorder.runtime.writer import ArchiveWriter


@dataclass
class AuditCounts:
    records: int = 0
    write_errors: int = 0


def count_audit(audit: AuditTrail) -> AuditCounts:
    """Count the records appended through `audit` (by anyone holding it, e.g. the writer)
    and the appends that failed, by wrapping this instance's `append`."""
    counts = AuditCounts()
    append = audit.append

    def counted(event: str, **kwargs: Any) -> Any:
        try:
            record = append(event, **kwargs)
        except OSError:
            counts.write_errors += 1
            raise
        counts.records += 1
        return record

    setattr(audit, "append", counted)  # noqa: B010  (an instance attribute, on purpose)
    return counts


@dataclass
class EventCounts:
    """Counted by the service's event log (bounded keys: contents and marker kinds)."""

    started: Counter[str] = field(default_factory=Counter)  # recordings opened, by content
    markers: Counter[str] = field(default_factory=Counter)  # paused / resumed / stopped


@dataclass
class Sources:
    """What the collector reads; the service fills it in as the parts come up."""

    core: RecorderCore | None = None
    writer: ArchiveWriter | None = None
    loop: LoopStats | None = None
    capture: CaptureState | None = None
    guard: DiskGuard | None = None
    audit: AuditCounts = field(default_factory=AuditCounts)
    events: EventCounts = field(default_factory=EventCounts)
    retention: RetentionStats | None = None
    control_requests: int = 0
    clock_steps: int = 0
    recovered: int = 0
    reloads: int = 0
    libpcap: str = ""


def _counter(name: str, doc: str, value: int) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class RecorderCollector(Collector):
    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        s = self.sources
        info = InfoMetricFamily("recorder_build", "Version of the recorder and its libraries.")
        info.add_metric(
            [],
            {"version": __version__, "python": platform.python_version(), "libpcap": s.libpcap},
        )
        yield info
        yield from self._capture(s)
        if s.core is not None:
            yield from self._core(s.core)
        if s.writer is not None:
            yield from self._writer(s.writer, s.events)
        yield from self._compliance(s)
        yield _counter(
            "recorder_recordings_recovered", "Recordings recovered after a crash.", s.recovered
        )
        yield _counter("recorder_audit_records", "Audit records appended.", s.audit.records)
        yield _counter(
            "recorder_audit_write_errors", "Audit appends that failed.", s.audit.write_errors
        )
        yield _counter("recorder_config_reloads", "Configuration reloads (SIGHUP).", s.reloads)
        if s.guard is not None:
            yield _gauge(
                "recorder_storage_free_bytes", "Space available in the archive.", s.guard.free_bytes
            )
            yield _gauge(
                "recorder_storage_min_free_bytes",
                "Below this free space no new recording is opened.",
                s.guard.min_free_bytes,
            )
            yield _gauge(
                "recorder_storage_low",
                "1 while new recordings are refused for space.",
                int(s.guard.low),
            )

    def _capture(self, s: Sources) -> Iterator[Metric]:
        frames = s.loop.frames if s.loop is not None else 0
        yield _counter("recorder_capture_packets", "Frames captured and processed.", frames)
        errors = s.loop.internal_errors if s.loop is not None else 0
        yield _counter("recorder_internal_errors", "Frames skipped by an internal error.", errors)
        yield _counter(
            "recorder_clock_steps",
            "Steps of the system clock taken out of the capture times (calls went on).",
            s.clock_steps,
        )
        if s.capture is None:
            return
        k = s.capture.kernel
        yield _counter(
            "recorder_capture_kernel_received_packets",
            "Packets libpcap received (ps_recv).",
            k.received,
        )
        yield _counter(
            "recorder_capture_kernel_dropped_packets",
            "Packets dropped because the capture ring was full (ps_drop).",
            k.dropped,
        )
        yield _counter(
            "recorder_capture_interface_dropped_packets",
            "Packets dropped by the interface or driver (ps_ifdrop).",
            k.if_dropped,
        )
        yield _gauge(
            "recorder_capture_lag_seconds",
            "Wall time minus capture time of the newest frame, soon after processing it.",
            s.capture.lag_ns / 1e9,
        )

    def _core(self, core: RecorderCore) -> Iterator[Metric]:
        st = core.stats
        drops = CounterMetricFamily(
            "recorder_decode_dropped",
            "Inputs the recorder dropped, by layer and reason.",
            labels=["layer", "reason"],
        )
        for (layer, reason), count in sorted(dict(st.drops).items()):
            drops.add_metric([layer, reason], count)
        yield drops
        yield _counter("recorder_sip_messages", "SIP messages parsed.", st.sip_messages)
        yield _counter("recorder_rtp_packets", "RTP packets matched to a call.", st.rtp_packets)
        yield _counter(
            "recorder_rtcp_packets", "RTCP packets seen (not recorded).", st.rtcp_packets
        )
        yield _counter(
            "recorder_rtp_packets_late", "RTP packets too late for the jitter window.", st.rtp_late
        )
        yield _counter(
            "recorder_rtp_packets_duplicate", "Duplicate RTP packets.", st.rtp_duplicates
        )
        yield _gauge("recorder_calls_active", "Dialogs followed now.", len(core.calls))
        yield _counter("recorder_calls_started", "Dialogs seen (INVITE).", st.calls_seen)
        ended = CounterMetricFamily(
            "recorder_calls_ended", "Calls ended, by outcome.", labels=["outcome"]
        )
        ended.add_metric(["recorded"], st.recordings_ended)
        for outcome, count in sorted(dict(st.not_recorded).items()):
            ended.add_metric([outcome], count)
        yield ended
        yield _counter(
            "recorder_calls_evicted", "Dialogs evicted by limits.max_calls.", st.calls_evicted
        )
        yield _counter(
            "recorder_rtp_endpoints_latched",
            "Media endpoints learnt from RTP that NAT moved off its SDP address.",
            st.latched,
        )
        yield _counter(
            "recorder_recordings_requested",
            "Recordings the core asked for (opened, or refused by the writer).",
            st.recordings_started,
        )
        anomalies = CounterMetricFamily(
            "recorder_anomalies",
            "Inputs kept, but not as they should be, by kind.",
            labels=["kind"],
        )
        for kind, count in sorted(dict(st.anomalies).items()):
            anomalies.add_metric([kind], count)
        yield anomalies

    def _writer(self, w: ArchiveWriter, events: EventCounts) -> Iterator[Metric]:
        ws = w.stats
        yield _gauge("recorder_recordings_open", "Recordings being written.", w.open_count)
        started = CounterMetricFamily(
            "recorder_recordings_started",
            "Recordings opened, by content (pcm_s16le audio, or rtp: raw RTP kept as is).",
            labels=["content"],
        )
        for content, count in sorted(dict(events.started).items()):
            started.add_metric([content], count)
        yield started
        yield _counter("recorder_recordings_written", "Recordings closed complete.", ws.closed)
        yield _counter(
            "recorder_recordings_failed", "Recordings a write or create error ended.", ws.failed
        )
        yield _counter(
            "recorder_recordings_refused",
            "Recordings refused (disk nearly full, open-files limit).",
            ws.refused,
        )
        yield _counter(
            "recorder_recording_bytes_written", "Bytes of recordings written.", ws.bytes_written
        )
        spare, created = w.spare_counts
        yield _counter(
            "recorder_recording_files_spare",
            "New recordings whose file was a spare made ahead (runtime/spares.py).",
            spare,
        )
        yield _counter(
            "recorder_recording_files_created",
            "New recordings whose file the capture loop had to create: no spare was ready "
            "(a call storm larger than the spares, a full disk).",
            created,
        )
        catalog = w.catalog_stats
        yield _gauge(
            "recorder_index_writes_waiting",
            "Index writes waiting for the index (another process holds its lock, or the disk "
            "is full); recording goes on meanwhile (runtime/catalog.py).",
            catalog.waiting,
        )
        yield _counter(
            "recorder_index_write_deferrals",
            "Tries to write the index that found it locked or the disk full.",
            catalog.deferred,
        )
        yield _counter(
            "recorder_index_calls_dropped",
            "Entries of calls not recorded dropped while the index stayed locked "
            "(past catalog.MAX_WAITING_CALLS waiting).",
            catalog.calls_dropped,
        )

    def _compliance(self, s: Sources) -> Iterator[Metric]:
        markers = CounterMetricFamily(
            "recorder_recording_markers",
            "PCI pauses, resumes and opt-out stops applied to recordings, by kind.",
            labels=["kind"],
        )
        for kind, count in sorted(dict(s.events.markers).items()):
            markers.add_metric([kind], count)
        yield markers
        yield _counter(
            "recorder_control_requests",
            "Authenticated control socket requests applied (pause/resume/stop).",
            s.control_requests,
        )
        r = s.retention
        if r is None:
            return
        yield _counter("recorder_retention_runs", "Retention runs finished.", r.runs)
        yield _counter("recorder_retention_failures", "Retention runs that failed.", r.failures)
        yield _counter(
            "recorder_retention_deleted_recordings", "Recordings deleted by retention.", r.deleted
        )
        yield _gauge(
            "recorder_retention_kept_recordings",
            "Expired recordings the last run kept (legal hold, legal obligation).",
            r.kept,
        )
        yield _gauge(
            "recorder_retention_last_success_timestamp_seconds",
            "When the last retention run finished (0: none yet).",
            r.last_success_ns / 1e9,
        )
        yield _gauge(
            "recorder_retention_last_duration_seconds",
            "How long the last retention run took.",
            r.last_duration_ns / 1e9,
        )


def make_registry(sources: Sources) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RecorderCollector(sources))
    return registry


def parse_address(address: str) -> tuple[str, int]:
    """'HOST:PORT' or '[v6]:PORT' (already checked by MetricsSettings)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


_BLOCKED = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


class MetricsServer:
    """The scrape endpoint on its own thread; signals stay with the main thread."""

    def __init__(self, address: str, registry: CollectorRegistry) -> None:
        host, port = parse_address(address)
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _BLOCKED)  # the new thread inherits it
        try:
            self._server, self._thread = start_http_server(port, host, registry)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        self.address = address

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
