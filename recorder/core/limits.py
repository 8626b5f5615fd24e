"""Timeouts and caps of the core, with their defaults. Everything that grows with
input has a cap here; every time is capture time."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CoreLimits:
    jitter_s: float = 1.0  # audio held back for late/reordered packets before it is emitted
    max_drift_s: float = 3.0  # RTP time straying further than this from capture time re-anchors
    flush_interval_s: float = 1.0  # how often a call's settled audio is handed to the writer
    bye_linger_s: float = 1.0  # RTP still accepted this long after a BYE
    failed_linger_s: float = 32.0  # a rejected INVITE may be retried (401/407/422) within this
    idle_timeout_s: float = 300.0  # an answered call with no SIP or RTP for this long has ended
    setup_timeout_s: float = 180.0  # an unanswered call with no SIP for this long has ended
    max_calls: int = 100_000  # dialogs tracked at once; the oldest unrecorded is evicted past it
    sweep_interval_s: float = 1.0  # capture-time period of the timer sweep
