"""A call as the recorder follows it: who called whom, where each side receives media,
which payload types mean what, and when the call ends.

Sides: 0 is the caller (the party that sent the initial INVITE), 1 the callee. An SDP
body describes where the *sender of its SIP message* receives RTP, so the sender of
each message decides which side its SDP belongs to (RFC 3264 §5, §6).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from recorder.core.events import RecordingMarker
from recorder.core.media.timeline import CallTimeline
from recorder.core.policy import Decision
from recorder.core.sdp.codecs import static_payload_types

_STATIC = static_payload_types()

CALLER, CALLEE = 0, 1

# Call states. "failed" and "cancelled" may still be revived by a retried INVITE
# (after 401/407/422) or by a 200 OK that crossed the CANCEL.
CALLING, EARLY, ANSWERED, FAILED, CANCELLED = "calling", "early", "answered", "failed", "cancelled"


@dataclass(slots=True)
class RawMedia:
    """Media of the call that cannot be decoded, kept as raw RTP (see MediaPath.keep_raw)."""

    started: bool = False
    first_ns: int = 0
    last_ns: int = 0
    packets: int = 0
    codecs: list[str] = field(default_factory=list)
    records: bytearray = field(default_factory=bytearray)  # not yet handed to the writer


@dataclass(slots=True, eq=False)  # a call is itself: compared by identity, never by value
class Call:
    serial: int
    call_id: str
    caller: str
    callee: str
    caller_tag: str
    first_ns: int
    last_activity_ns: int
    state: str = CALLING
    final_status: int = 0
    # Per receiving side: payload type -> (encoding, RTP clock), from that side's SDP.
    pt_maps: tuple[dict[int, tuple[str, int]], dict[int, tuple[str, int]]] = field(
        default_factory=lambda: ({}, {})
    )
    srtp_sides: set[int] = field(default_factory=set)
    first_codec: str = ""  # first audio encoding offered/answered (chooses the sample rate)
    endpoints: set[bytes] = field(default_factory=set)
    other_endpoints: set[bytes] = field(default_factory=set)  # video, fax: not recorded
    # Addresses each side's SIP came from (for NAT latching), a few at most; add them
    # through CallTable.add_sip_addr, which indexes them with the side's media ports.
    sip_addrs: tuple[set[bytes], set[bytes]] = field(default_factory=lambda: (set(), set()))
    # The SDP media ports each side receives at (kept by CallTable.add_endpoint).
    media_ports: tuple[set[int], set[int]] = field(default_factory=lambda: (set(), set()))
    first_rtp_ns: int | None = None
    last_rtp_ns: int = 0
    timeline: CallTimeline | None = None
    recording_open: bool = False  # RecordingStarted emitted (with the first audio placed)
    next_flush_ns: int = 0
    codecs: list[str] = field(default_factory=list)  # encodings decoded, in order of appearance
    undecodable: dict[str, int] = field(default_factory=dict)  # reason -> packets
    raw: RawMedia = field(default_factory=RawMedia)
    end_at_ns: int | None = None
    end_reason: str = ""
    decision: Decision = field(default_factory=lambda: Decision(record=True))
    placing: bool = False  # its queued media is being placed right now
    deferred: list[RecordingMarker] = field(default_factory=list)  # markers raised meanwhile
    stop_requested: bool = False  # an opt-out: the recording closes at the next sweep
    stopped: bool = False  # recording closed by an opt-out: the rest is not recorded
    paused_since_ns: int | None = None  # PCI DSS pause: nothing placed from then on
    pause_windows: list[tuple[int, int]] = field(default_factory=list)  # ended pauses
    # RTP queued by the hot path, per sending side: capture times and bytes, placed at flush.
    pending_times: tuple[list[int], list[int]] = field(default_factory=lambda: ([], []))
    pending_datas: tuple[list[bytes], list[bytes]] = field(default_factory=lambda: ([], []))
    last_event_ts: tuple[int, int] | None = None  # (side, RTP ts) of the last DTMF event seen

    def sender_of_request(self, from_tag: str | None) -> int:
        return CALLER if from_tag == self.caller_tag else CALLEE

    def sender_of_response(self, from_tag: str | None) -> int:
        # A response travels back to whoever sent the request named in From.
        return CALLEE if from_tag == self.caller_tag else CALLER

    def encoding_for(self, receiver: int, pt: int) -> tuple[str, int] | None:
        """The receiving side's SDP numbers the payload types it accepts (RFC 3264 §5.1);
        fall back to the other side's map, then to the static table of RFC 3551 (endpoints
        send comfort noise, PT 13, without listing it)."""
        found = self.pt_maps[receiver].get(pt) or self.pt_maps[1 - receiver].get(pt)
        if found is None and pt < 35:
            static = _STATIC.get(pt)
            if static is not None:
                found = (static.encoding.upper(), static.clock_rate)
        return found

    def event_payload_types(self, receiver: int) -> set[int]:
        """Payload types that carry RFC 4733 telephone-events towards `receiver`."""
        return {
            pt
            for pt_map in (self.pt_maps[receiver], self.pt_maps[1 - receiver])
            for pt, (encoding, _clock) in pt_map.items()
            if encoding == "TELEPHONE-EVENT"
        }

    def schedule_end(self, at_ns: int, reason: str) -> None:
        self.end_at_ns = at_ns
        self.end_reason = reason

    def cancel_end(self) -> None:
        self.end_at_ns = None
        self.end_reason = ""
