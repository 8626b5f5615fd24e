"""RTP of a known call onto that call's timeline; recordings start at their first audio.

The hot path only queues a packet on its call (`enqueue`). About once a second of capture
time per call (`flush`), the queue is processed in runs of packets that share length,
header layout, payload type and SSRC: their headers are read, their timestamps unwrapped
and their payloads decoded with one numpy operation per run (`_run`). Anything irregular
(padding, extensions, CSRCs, RTCP, garbage) goes through the per-packet path (`_one`),
which is the reference the batched path must match (tests/core/test_batch_equivalence.py).
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from recorder.core.calls import Call
from recorder.core.events import Event, RecordingAudio, RecordingStarted
from recorder.core.limits import CoreLimits
from recorder.core.media.codecs import DECODABLE, SILENT_ENCODINGS, STATEFUL, CodecInfo
from recorder.core.media.timeline import NS_PER_S, CallTimeline, resample
from recorder.core.policy import DtmfListener
from recorder.core.rtp.packet import is_rtcp, parse_rtp
from recorder.core.stats import CoreStats
from recorder.errors import DecodeError

# RFC 4733 §3.2: event codes 0-15 of the DTMF table.
_DTMF_DIGITS = "0123456789*#ABCD"
# A kept raw RTP packet: capture time (ns), sending side (0 caller, 1 callee), length.
RAW_RECORD = struct.Struct("!QBH")
MAX_PENDING = 4096  # packets queued per call side before a flush is forced (flood bound)
Stamps = NDArray[np.int64]
Block = NDArray[np.uint8]  # one RTP packet a row


class MediaPath:
    """Queues, then places, each RTP packet of a matched call; emits recording events."""

    def __init__(self, limits: CoreLimits, stats: CoreStats, emit: Callable[[Event], None]):
        self._limits = limits
        self._stats = stats
        self._emit = emit
        self._flush_ns = int(limits.flush_interval_s * NS_PER_S)
        self.dtmf_listener: DtmfListener | None = None

    # -- hot path ------------------------------------------------------------------------

    def enqueue(self, call: Call, sender: int, now_ns: int, data: bytes) -> None:
        """Queue one packet (the core's inline fast path does the same)."""
        times = call.pending_times[sender]
        times.append(now_ns)
        call.pending_datas[sender].append(data)
        if len(times) >= MAX_PENDING:
            self.flush(call, now_ns)

    # -- settling ------------------------------------------------------------------------

    def flush(self, call: Call, now_ns: int) -> None:
        """Place everything queued, then hand the writer the audio no late packet can change."""
        self.process(call)
        self.emit_due(call, now_ns)

    def emit_due(self, call: Call, now_ns: int) -> None:
        """Hand the writer the audio that no late packet can still change."""
        call.next_flush_ns = now_ns + self._flush_ns
        timeline = call.timeline
        if timeline is not None and call.recording_open:
            # Never past the last packet placed: a call that ends after a long silence
            # must not leave that silence in its recording (it ends with its last packet).
            target = min(timeline.due_sample(now_ns), timeline.end_sample())
            pcm = timeline.flush_until(target)
            if pcm:
                self._emit(RecordingAudio(call.serial, pcm))
        self.emit_raw(call)

    def emit_raw(self, call: Call) -> None:
        """Hand the writer the raw RTP kept so far."""
        if call.raw.records:
            self._emit(RecordingAudio(-call.serial, bytes(call.raw.records)))
            call.raw.records.clear()

    def process(self, call: Call) -> None:
        """Place the queued packets of both sides of one call."""
        times_q, datas_q = call.pending_times, call.pending_datas
        if not times_q[0] and not times_q[1]:
            return
        call.pending_times, call.pending_datas = ([], []), ([], [])
        self.note_first_rtp(call, times_q, datas_q)
        call.placing = True  # markers raised by the DTMF listener wait for the recording
        try:
            if self.dtmf_listener is not None:
                for sender in (0, 1):  # first, so that pauses apply by capture time
                    self._scan_dtmf(call, sender, times_q[sender], datas_q[sender])
            for sender in (0, 1):
                self.process_side(call, sender, times_q[sender], datas_q[sender])
        finally:
            call.placing = False
        for marker in call.deferred:
            self._emit(marker)
        call.deferred.clear()

    def note_first_rtp(
        self,
        call: Call,
        times_q: tuple[list[int], list[int]],
        datas_q: tuple[list[bytes], list[bytes]],
    ) -> None:
        """The call's first RTP time (its timeline's origin), from its first queues."""
        if call.first_rtp_ns is None:
            call.first_rtp_ns = _first_rtp(times_q, datas_q)

    def process_side(self, call: Call, sender: int, times: list[int], datas: list[bytes]) -> None:
        """Place one side's packets: alike runs at once, the rest one by one."""
        for start, stop, block in _runs(datas):
            if block is not None:
                self.run(call, sender, np.array(times[start:stop], dtype=np.int64), block)
            else:
                for k in range(start, stop):
                    self._one(call, sender, times[k], datas[k])

    def count_rtp(self, packets: int) -> None:
        self._stats.rtp_packets += packets

    # -- one packet (the reference path) --------------------------------------------------

    def _one(
        self, call: Call, sender: int, now_ns: int, data: bytes, *, count: bool = True
    ) -> None:
        stats = self._stats
        if is_rtcp(data):
            stats.rtcp_packets += 1  # reports, not audio: counted and ignored
            return
        try:
            pt, seq, ts, ssrc, payload = parse_rtp(data)
        except DecodeError as exc:
            stats.drop(exc.layer, exc.reason)
            return
        if count:
            stats.rtp_packets += 1
        found = self.codec(call, sender, pt, 1)
        if isinstance(found, str):
            self.keep_raw(call, sender, found, [now_ns], [data])
            return
        if found is None:
            return
        encoding, clock, codec = found
        call.last_rtp_ns = max(call.last_rtp_ns, now_ns)
        timeline = call.timeline or self._start(call, encoding)
        if codec is None or _paused(call, now_ns):
            timeline.track(sender, now_ns, ssrc, seq, ts, clock)
        else:
            self._open(call)
            timeline.place(sender, now_ns, ssrc, seq, ts, codec, payload)

    # -- a run of alike packets, at once ----------------------------------------------------

    def run(
        self, call: Call, sender: int, times: Stamps, block: Block, *, count: bool = True
    ) -> None:
        """Packets alike in length, header layout, payload type and SSRC (one row each);
        `count=False` when the caller has counted them already."""
        packets = len(block)
        if count:
            self._stats.rtp_packets += packets
        found = self.codec(call, sender, int(block[0, 1]) & 0x7F, packets)
        if isinstance(found, str):
            self.keep_raw(call, sender, found, times.tolist(), [row.tobytes() for row in block])
            return
        if found is None:
            return
        encoding, clock, codec = found
        seq = block[:, 2].astype(np.int64) << 8 | block[:, 3]
        ts32 = block[:, 4:8].copy().view(">u4").ravel().astype(np.int64)
        keys = seq << 32 | ts32
        arrived = (times, block)  # as they came, for the per-packet fallback
        removed = 0
        _, firsts = np.unique(keys, return_index=True)
        if len(firsts) < packets:  # duplicates: the first copy wins, as on the per-packet path
            firsts.sort()  # (and a stateful decoder such as G.722 must see each packet once)
            removed = packets - len(firsts)
            times, block, ts32, keys = times[firsts], block[firsts], ts32[firsts], keys[firsts]
        call.last_rtp_ns = max(call.last_rtp_ns, int(times.max()))
        timeline = call.timeline or self._start(call, encoding)
        ssrc = int.from_bytes(block[0, 8:12].tobytes(), "big")
        side = timeline.sides[sender]
        if codec is not None and codec.name in STATEFUL and ssrc == side.ssrc:
            copies = side.seen(keys)  # of packets placed before: as on the per-packet path,
            if copies.any():  # a stateful decoder must not see them again
                removed += int(copies.sum())
                fresh = ~copies
                times, block, ts32, keys = times[fresh], block[fresh], ts32[fresh], keys[fresh]
                if not len(block):
                    side.stats.packets += packets
                    side.stats.duplicates += removed
                    return
        anchored = 0
        if ssrc != side.ssrc and len(block) > 1:  # a new stream: its first packet anchors it,
            anchored = 1  # by the per-packet rules; the rest can then go at once
            self._one(call, sender, int(arrived[0][0]), arrived[1][0].tobytes(), count=False)
            arrived = (arrived[0][1:], arrived[1][1:])
            times, block, ts32, keys = times[1:], block[1:], ts32[1:], keys[1:]
        positions = timeline.positions(sender, times, ssrc, ts32, clock)
        if positions is None:  # a new SSRC or a stray: the per-packet rules decide
            for row, when in zip(arrived[1], arrived[0].tolist(), strict=True):
                self._one(call, sender, when, row.tobytes(), count=False)
            return
        side.remember(keys)
        side.stats.packets += packets - anchored
        side.stats.duplicates += removed
        if codec is None:
            return  # DTMF events and comfort noise: their time stays silent
        keep = _not_paused(call, times)
        if keep is not None:
            positions, block = positions[keep], block[keep]
            if not len(positions):
                return
        self._open(call)
        samples = side.decoder(codec)(block[:, 12:].tobytes()).reshape(len(positions), -1)
        if codec.sample_rate != timeline.sample_rate:
            samples = resample(samples, codec.sample_rate, timeline.sample_rate)
            side.stats.resampled += len(samples)
        timeline.write(side, positions, samples)

    # -- shared by both paths ----------------------------------------------------------------

    def codec(
        self, call: Call, sender: int, pt: int, count: int
    ) -> tuple[str, int, CodecInfo | None] | str | None:
        """What the packets carry: (encoding, clock, decoder or None for silent payloads);
        a string naming media we cannot decode, whose raw RTP the caller keeps
        (`keep_raw`); or None (counted) when nothing is to be kept."""
        if not call.decision.record or call.stopped:
            return None  # not recorded by policy, or stopped by an opt-out: nothing is kept
        receiver = 1 - sender
        if receiver in call.srtp_sides:
            call.undecodable["SRTP"] = call.undecodable.get("SRTP", 0) + count
            return "SRTP"
        mapping = call.encoding_for(receiver, pt)
        if mapping is None:
            self._stats.drops[("rtp", "unknown_payload_type")] += count
            return None
        encoding, clock = mapping
        codec = DECODABLE.get(encoding)
        if codec is None and encoding not in SILENT_ENCODINGS:
            call.undecodable[encoding] = call.undecodable.get(encoding, 0) + count
            return encoding
        if codec is not None and encoding not in call.codecs:
            call.codecs.append(encoding)
        return encoding, clock, codec

    def keep_raw(
        self, call: Call, sender: int, what: str, times: list[int], datas: list[bytes]
    ) -> None:
        """Keep media we cannot decode as it came (RTP header included), in a recording of
        its own (content "rtp", serial -call.serial), so it can be decoded later."""
        if not call.raw.started:
            call.raw.started = True
            call.raw.first_ns = min(times)
            self._emit(self._started(call, -call.serial, call.raw.first_ns, 8000, 1, "rtp"))
        if what not in call.raw.codecs:
            call.raw.codecs.append(what)
        records = call.raw.records
        for when, data in zip(times, datas, strict=True):
            records += RAW_RECORD.pack(when, sender, len(data))
            records += data
        call.raw.packets += len(datas)
        call.raw.last_ns = max(call.raw.last_ns, max(times))

    def _scan_dtmf(self, call: Call, sender: int, times: list[int], datas: list[bytes]) -> None:
        """Report each new RFC 4733 event once: all packets of one event share its RTP
        timestamp (§2.5.1.2), and its end is retransmitted."""
        event_pts = call.event_payload_types(1 - sender)
        if not event_pts or self.dtmf_listener is None:
            return
        for now_ns, data in zip(times, datas, strict=True):
            if len(data) < 16 or data[1] & 0x7F not in event_pts:
                continue
            try:
                _pt, _seq, ts, _ssrc, payload = parse_rtp(data)
            except DecodeError:
                continue
            if len(payload) < 4 or payload[0] >= len(_DTMF_DIGITS):
                continue
            if call.last_event_ts == (sender, ts):
                continue
            call.last_event_ts = (sender, ts)
            self.dtmf_listener.on_digit(call.serial, sender, _DTMF_DIGITS[payload[0]], now_ns)

    def _start(self, call: Call, encoding: str) -> CallTimeline:
        """The call's timeline: sample 0 is its first RTP packet, whatever it carries. The
        recording itself opens with the first audio (`_open`): a call that only ever sends
        DTMF events or comfort noise has nothing to record."""
        assert call.first_rtp_ns is not None
        wideband = "G722" in (encoding, call.first_codec)
        rate = 16000 if wideband else 8000
        call.timeline = CallTimeline(
            call.first_rtp_ns,
            rate,
            jitter_s=self._limits.jitter_s,
            max_drift_s=self._limits.max_drift_s,
        )
        return call.timeline

    def _open(self, call: Call) -> None:
        if not call.recording_open:
            call.recording_open = True
            timeline, origin = call.timeline, call.first_rtp_ns
            assert timeline is not None
            assert origin is not None
            self._emit(
                self._started(call, call.serial, origin, timeline.sample_rate, 2, "pcm_s16le")
            )

    def _started(
        self, call: Call, serial: int, start_ns: int, rate: int, channels: int, content: str
    ) -> RecordingStarted:
        self._stats.recordings_started += 1
        return RecordingStarted(
            serial=serial,
            call_id=call.call_id,
            caller=call.caller,
            callee=call.callee,
            start_ns=start_ns,
            sample_rate=rate,
            channels=channels,
            purpose=call.decision.purpose,
            legal_basis=call.decision.legal_basis,
            retention_class=call.decision.retention_class,
            notice=call.decision.notice,
            rule=call.decision.rule,
            content=content,
        )


def _first_rtp(
    times_q: tuple[list[int], list[int]], datas_q: tuple[list[bytes], list[bytes]]
) -> int | None:
    """Capture time of the earliest packet that is RTP at all (STUN and RTCP are not)."""
    # is_rtcp inlined (RTP version 2, not RTCP types 200-204): it runs for every packet
    # of a call's first second.
    found = [
        t
        for times, datas in zip(times_q, datas_q, strict=True)
        for t, d in zip(times, datas, strict=True)
        if len(d) >= 12 and d[0] >> 6 == 2 and not 192 <= d[1] <= 223
    ]
    return min(found) if found else None


def _runs(datas: list[bytes]) -> list[tuple[int, int, Block | None]]:
    """Split a queue into runs [start, stop): packets of one length whose first byte,
    payload type and SSRC agree come as one block (a row each); anything irregular
    (short, padded, extended, with CSRCs, RTCP, not version 2) comes with no block."""
    runs: list[tuple[int, int, Block | None]] = []
    lengths = list(map(len, datas))
    start = 0
    while start < len(datas):
        length = lengths[start]
        stop = start + 1
        while stop < len(datas) and lengths[stop] == length:
            stop += 1
        if length <= 12:
            runs.append((start, stop, None))
        else:
            runs.extend(_split_alike(datas, start, stop, length))
        start = stop
    return runs


def _split_alike(
    datas: list[bytes], start: int, stop: int, length: int
) -> list[tuple[int, int, Block | None]]:
    block = np.frombuffer(b"".join(datas[start:stop]), dtype=np.uint8).reshape(-1, length)
    head = block[:, 0]
    kind = block[:, 1] & 0x7F
    ssrc = block[:, 8:12].copy().view(">u4").ravel()
    cuts = np.flatnonzero(
        (head[1:] != head[:-1]) | (kind[1:] != kind[:-1]) | (ssrc[1:] != ssrc[:-1])
    )
    bounds = [0, *(cuts + 1).tolist(), len(block)]
    out: list[tuple[int, int, Block | None]] = []
    for a, b in itertools.pairwise(bounds):
        regular = head[a] == 0x80 and not 72 <= kind[a] <= 76  # not RTCP (types 200-204)
        out.append((start + a, start + b, block[a:b] if regular and b - a > 1 else None))
    return out


def _paused(call: Call, now_ns: int) -> bool:
    if call.paused_since_ns is not None and now_ns >= call.paused_since_ns:
        return True
    return any(start <= now_ns < end for start, end in call.pause_windows)


def _not_paused(call: Call, times: np.ndarray) -> np.ndarray | None:
    """A mask of the packets outside every PCI pause window, or None when nothing is paused."""
    if call.paused_since_ns is None and not call.pause_windows:
        return None
    keep = np.ones(len(times), dtype=bool)
    if call.paused_since_ns is not None:
        keep &= times < call.paused_since_ns
    for start, end in call.pause_windows:
        keep &= (times < start) | (times >= end)
    return keep
