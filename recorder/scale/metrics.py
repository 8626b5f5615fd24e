"""Prometheus metrics of the scale workers: what waits in the spools, what went up, and
whether S3 and PostgreSQL answer. Read at scrape time from plain counters (see
runtime/metrics.py); the service registers `ScaleRuntime.collector()` next to its own."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from recorder.scale.runtime import ScaleRuntime


class ScaleCollector(Collector):
    def __init__(self, runtime: ScaleRuntime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        rt = self.runtime
        up = GaugeMetricFamily(
            "recorder_backend_up", "1 while a shared backend answers.", labels=["backend"]
        )
        if rt.uploader is not None:
            up.add_metric(["s3"], int(rt.uploader.health.available))
        if rt.worker is not None:
            up.add_metric(["postgresql"], int(rt.worker.health.available))
        yield up
        pending = GaugeMetricFamily(
            "recorder_spool_jobs", "Jobs waiting in the spool, by queue.", labels=["queue"]
        )
        for name, spool in (("uploads", rt.uploads), ("journal", rt.journal)):
            if spool is not None:
                pending.add_metric([name], len(spool))
        yield pending
        yield GaugeMetricFamily(
            "recorder_spool_bytes", "Bytes the spools hold back.", value=rt.guard.used_bytes
        )
        yield GaugeMetricFamily(
            "recorder_spool_max_bytes",
            "Above this, new recordings are refused (archive.s3.spool_max_bytes).",
            value=rt.guard.max_bytes,
        )
        yield GaugeMetricFamily(
            "recorder_spool_full", "1 while new recordings are refused.", value=int(rt.guard.full)
        )
        if rt.uploader is not None:
            st = rt.uploader.stats
            yield CounterMetricFamily(
                "recorder_uploads", "Recordings uploaded and verified.", value=st.uploaded
            )
            yield CounterMetricFamily(
                "recorder_upload_bytes", "Bytes of recordings uploaded.", value=st.bytes_uploaded
            )
            yield CounterMetricFamily(
                "recorder_upload_errors",
                "Upload attempts that failed.",
                value=rt.uploader.health.errors,
            )
            yield CounterMetricFamily(
                "recorder_uploads_failed",
                "Uploads put aside (file gone or changed).",
                value=st.put_aside,
            )
            yield CounterMetricFamily(
                "recorder_audit_segments_shipped",
                "Audit trail segments shipped to the bucket.",
                value=rt.uploader.shipper.segments,
            )
        if rt.worker is not None:
            yield CounterMetricFamily(
                "recorder_journal_applied",
                "Index jobs applied to PostgreSQL.",
                value=rt.worker.applied,
            )
            yield CounterMetricFamily(
                "recorder_journal_errors",
                "Attempts to reach PostgreSQL that failed.",
                value=rt.worker.health.errors,
            )
