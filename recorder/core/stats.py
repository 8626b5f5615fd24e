"""Plain counters the core keeps; the metrics shell reads them at scrape time."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class CoreStats:
    frames: int = 0
    rtp_packets: int = 0
    rtcp_packets: int = 0
    sip_messages: int = 0
    calls_seen: int = 0
    calls_evicted: int = 0
    recordings_started: int = 0
    recordings_ended: int = 0
    rtp_duplicates: int = 0
    rtp_late: int = 0
    latched: int = 0  # media endpoints learnt from RTP that NAT moved off its SDP address
    not_recorded: Counter[str] = field(default_factory=Counter)  # outcome -> calls
    drops: Counter[tuple[str, str]] = field(default_factory=Counter)  # (layer, reason) -> inputs
    anomalies: Counter[str] = field(default_factory=Counter)  # kept, but not as they should be

    def drop(self, layer: str, reason: str) -> None:
        self.drops[(layer, reason)] += 1
