"""RTP of a known call onto that call's timeline; recordings start at their first audio."""

from __future__ import annotations

from collections.abc import Callable

from recorder.core.calls import Call
from recorder.core.events import Event, RecordingAudio, RecordingStarted
from recorder.core.limits import CoreLimits
from recorder.core.media.codecs import DECODABLE, SILENT_ENCODINGS
from recorder.core.media.timeline import NS_PER_S, CallTimeline
from recorder.core.policy import DtmfListener
from recorder.core.rtp.packet import is_rtcp, parse_rtp
from recorder.core.stats import CoreStats
from recorder.errors import DecodeError

# RFC 4733 §3.2: event codes 0-15 of the DTMF table.
_DTMF_DIGITS = "0123456789*#ABCD"


class MediaPath:
    """Places each RTP packet of a matched call; emits RecordingStarted/RecordingAudio."""

    def __init__(self, limits: CoreLimits, stats: CoreStats, emit: Callable[[Event], None]):
        self._limits = limits
        self._stats = stats
        self._emit = emit
        self._flush_ns = int(limits.flush_interval_s * NS_PER_S)
        self.dtmf_listener: DtmfListener | None = None

    def receive(self, call: Call, sender: int, now_ns: int, data: bytes) -> None:
        stats = self._stats
        if is_rtcp(data):
            stats.rtcp_packets += 1  # reports, not audio: counted and ignored
            return
        try:
            pt, seq, ts, ssrc, payload = parse_rtp(data)
        except DecodeError as exc:
            stats.drop(exc.layer, exc.reason)
            return
        stats.rtp_packets += 1
        if not call.decision.record or call.stopped:
            return  # not recorded by policy, or stopped by an opt-out: nothing is kept
        if call.first_rtp_ns is None:
            call.first_rtp_ns = now_ns
        call.last_rtp_ns = now_ns
        receiver = 1 - sender
        if receiver in call.srtp_sides:
            call.undecodable["srtp"] = call.undecodable.get("srtp", 0) + 1
            return
        mapping = call.encoding_for(receiver, pt)
        if mapping is None:
            stats.drop("rtp", "unknown_payload_type")
            return
        encoding, clock = mapping
        codec = DECODABLE.get(encoding)
        if codec is None and encoding not in SILENT_ENCODINGS:
            call.undecodable[encoding] = call.undecodable.get(encoding, 0) + 1
            return
        if encoding == "TELEPHONE-EVENT":
            self._dtmf(call, sender, ts, payload, now_ns)
        timeline = call.timeline or self._start(call, encoding)
        if codec is None or call.paused_since_ns is not None:
            timeline.track(sender, now_ns, ssrc, seq, ts, clock)
        else:
            if encoding not in call.codecs:
                call.codecs.append(encoding)
            timeline.place(sender, now_ns, ssrc, seq, ts, codec, payload)
        if now_ns >= call.next_flush_ns:
            self.flush(call, now_ns)

    def _dtmf(self, call: Call, side: int, ts: int, payload: bytes, now_ns: int) -> None:
        """Report each new RFC 4733 event once: all packets of one event share its RTP
        timestamp (§2.5.1.2), and its end is retransmitted."""
        if len(payload) < 4 or payload[0] >= len(_DTMF_DIGITS) or self.dtmf_listener is None:
            return
        if call.last_event_ts == (side, ts):
            return
        call.last_event_ts = (side, ts)
        self.dtmf_listener.on_digit(call.serial, side, _DTMF_DIGITS[payload[0]], now_ns)

    def _start(self, call: Call, encoding: str) -> CallTimeline:
        """Open the recording: sample 0 is the call's first RTP packet, whatever its codec."""
        assert call.first_rtp_ns is not None
        wideband = "G722" in (encoding, call.first_codec)
        rate = 16000 if wideband else 8000
        call.timeline = CallTimeline(
            call.first_rtp_ns,
            rate,
            jitter_s=self._limits.jitter_s,
            max_drift_s=self._limits.max_drift_s,
        )
        call.next_flush_ns = call.first_rtp_ns + self._flush_ns
        self._stats.recordings_started += 1
        self._emit(
            RecordingStarted(
                serial=call.serial,
                call_id=call.call_id,
                caller=call.caller,
                callee=call.callee,
                start_ns=call.first_rtp_ns,
                sample_rate=rate,
                channels=2,
                purpose=call.decision.purpose,
                legal_basis=call.decision.legal_basis,
                retention_class=call.decision.retention_class,
                notice=call.decision.notice,
                rule=call.decision.rule,
            )
        )
        return call.timeline

    def flush(self, call: Call, now_ns: int) -> None:
        """Hand the writer the audio that no late packet can still change."""
        timeline = call.timeline
        if timeline is None:
            return
        call.next_flush_ns = now_ns + self._flush_ns
        pcm = timeline.flush_until(timeline.due_sample(now_ns))
        if pcm:
            self._emit(RecordingAudio(call.serial, pcm))

    def finish(self, call: Call) -> bytes:
        """Everything still held for the call, up to the end of its last packet."""
        return call.timeline.finish() if call.timeline is not None else b""
