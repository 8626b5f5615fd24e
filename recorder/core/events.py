"""What the core tells the shells. Recordings are named by the core's `serial`; the
writer gives each one its archive id (the core has no randomness)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class RecordingStarted:
    serial: int
    call_id: str
    caller: str
    callee: str
    start_ns: int  # capture time of the call's first RTP packet: sample 0
    sample_rate: int
    channels: int
    purpose: str = "unspecified"
    legal_basis: str = "unspecified"
    retention_class: str = "default"
    notice: str = ""
    rule: str = "default"
    content: str = "pcm_s16le"  # or "rtp": records of raw RTP (RAW_RECORD + packet bytes)


@dataclass(frozen=True, slots=True)
class RecordingAudio:
    """More of the recording: interleaved s16le PCM (channel 0 caller, channel 1 callee),
    or raw RTP records for a recording whose content is "rtp". (A bytearray when the
    core made it for this event alone: handed over without a copy.)"""

    serial: int
    pcm: bytes | bytearray


@dataclass(frozen=True, slots=True)
class RecordingEnded:
    serial: int
    end_ns: int  # start_ns + samples / sample_rate
    reason: str  # "bye", "timeout", "end_of_capture", "shutdown", "evicted"
    codecs: tuple[str, ...]
    stats: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CallNotRecorded:
    """A dialog that ended without audio we could record, and why."""

    call_id: str
    caller: str
    callee: str
    first_ns: int
    last_ns: int
    outcome: str  # "not_answered", "no_audio", "undecodable"
    reason: str


@dataclass(frozen=True, slots=True)
class RecordingMarker:
    """Something that happened to a recording mid-call, for the audit trail: "paused",
    "resumed" (PCI DSS), "opt_out". `at_ns` is capture time; `detail` never holds digits."""

    serial: int
    kind: str
    at_ns: int
    detail: str = ""
    call_id: str = ""


Event = RecordingStarted | RecordingAudio | RecordingEnded | CallNotRecorded | RecordingMarker
