"""SIP over TCP: the table of stream directions, keyed (src_ip, sport, dst_ip, dport).

Each direction is a `SipStream` (reassembly and Content-Length framing, see
`stream.py`). This module handles what spans streams: SYN/FIN/RST, streams
first seen mid-way (they start at the first seen sequence number and
resynchronise on the next SIP start line), the stream cap (least recently
used eviction), a cap on the bytes all streams hold together, the idle
timeout on capture time, and the counters. `feed` and `expire` never raise.
"""

from __future__ import annotations

from collections import OrderedDict

from recorder.core.sip.message import MAX_MESSAGE_BYTES
from recorder.core.sip.stream import SipStream, StreamLimits

__all__ = ["COUNTERS", "FIN", "RST", "SYN", "StreamKey", "TcpSipStreams"]

FIN = 0x01
SYN = 0x02
RST = 0x04
_MASK = 0xFFFFFFFF

# (src_ip, sport, dst_ip, dport) of one direction; addresses packed.
StreamKey = tuple[bytes, int, bytes, int]

# Every counter name (bounded label values for metrics).
COUNTERS = (
    "streams_opened",
    "streams_closed",
    "streams_reset",
    "streams_evicted",
    "streams_expired",
    "evicted_for_memory",
    "messages",
    "keepalives",
    "duplicate_bytes",
    "out_of_window",
    "pending_overflow",
    "gaps",
    "gap_bytes",
    "discarded_bytes",
    "bad_start_line",
    "bad_content_length",
    "missing_content_length",
    "oversize",
    "incomplete_at_close",
)


class TcpSipStreams:
    """Reassemble SIP-over-TCP directions and return complete SIP messages (bytes).

    Pure: capture time comes in as `now_ns`. Call `expire(now_ns)` now and then
    (e.g. once a second of capture time): it releases messages stuck behind a
    hole that will never fill and drops idle streams. `buffered_bytes` is the
    total held by all streams; `len()` is the number of streams.
    """

    def __init__(
        self,
        *,
        max_streams: int = 10_000,
        max_message: int = MAX_MESSAGE_BYTES,
        max_pending_bytes: int = 256 * 1024,
        max_pending_segments: int = 512,
        window: int = 1 << 20,
        gap_timeout_ns: int = 1_000_000_000,
        idle_timeout_ns: int = 900 * 1_000_000_000,
        max_total_bytes: int = 64 << 20,
    ) -> None:
        self.limits = StreamLimits(
            max_message=max_message,
            max_pending_bytes=max_pending_bytes,
            max_pending_segments=max_pending_segments,
            window=window,
            gap_timeout_ns=gap_timeout_ns,
        )
        self.max_streams = max_streams
        self.idle_timeout_ns = idle_timeout_ns
        self.max_total_bytes = max_total_bytes
        self.buffered_bytes = 0  # sum of SipStream.held over the table
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._streams: OrderedDict[StreamKey, SipStream] = OrderedDict()
        self._gapped: set[StreamKey] = set()  # streams holding out-of-order data

    def __len__(self) -> int:
        return len(self._streams)

    def __contains__(self, key: StreamKey) -> bool:
        return key in self._streams

    def feed(
        self, key: StreamKey, seq: int, flags: int, payload: bytes, now_ns: int
    ) -> list[bytes]:
        """Take one captured segment; return the SIP messages it completes, in stream order."""
        seq &= _MASK
        st = self._streams.get(key)
        if flags & RST:
            if st is not None:
                self._discard(key, st)
                self.counters["streams_reset"] += 1
            return []
        if flags & SYN:
            if st is None or st.syn_seq != seq:  # new connection (or ports reused)
                if st is not None:
                    self._discard(key, st)
                st = self._open(key, (seq + 1) & _MASK, now_ns, syn_seq=seq)
            seq = (seq + 1) & _MASK  # the SYN takes one sequence number; data (TFO) follows
        elif st is None:
            if not payload:
                return []  # a bare ACK/FIN of a stream never seen carrying data
            st = self._open(key, seq, now_ns, syn_seq=None)
        st.last_ns = now_ns
        self._streams.move_to_end(key)
        before = st.held
        if payload:
            st.receive(seq, payload, now_ns)
        if flags & FIN:
            st.fin_off = st.offset_of(seq) + len(payload)
        out = st.advance(now_ns)
        self._settle(key, st, before)
        self._enforce_total()
        return out

    def expire(self, now_ns: int) -> list[tuple[StreamKey, bytes]]:
        """Skip holes older than the gap timeout and drop streams idle for the idle timeout.

        Returns the messages that skipping holes released, with their stream key.
        """
        out: list[tuple[StreamKey, bytes]] = []
        for key in list(self._gapped):
            st = self._streams[key]
            if now_ns - st.gap_since_ns >= self.limits.gap_timeout_ns:
                before = st.held
                out.extend((key, msg) for msg in st.advance(now_ns))
                self._settle(key, st, before)
        while self._streams:
            key, st = next(iter(self._streams.items()))
            if now_ns - st.last_ns < self.idle_timeout_ns:
                break
            self._discard(key, st)
            self.counters["streams_expired"] += 1
        return out

    def _settle(self, key: StreamKey, st: SipStream, before: int) -> None:
        """Book-keeping after a stream changed: byte total, gap set, close at FIN."""
        self.buffered_bytes += st.held - before
        if st.pending:
            self._gapped.add(key)
        else:
            self._gapped.discard(key)
        if st.finished:
            if st.buf.strip(b"\r\n"):
                self.counters["incomplete_at_close"] += 1
            self._discard(key, st)
            self.counters["streams_closed"] += 1

    def _open(self, key: StreamKey, seq: int, now_ns: int, *, syn_seq: int | None) -> SipStream:
        while len(self._streams) >= self.max_streams > 0:
            old_key, old = next(iter(self._streams.items()))
            self._discard(old_key, old)
            self.counters["streams_evicted"] += 1
        st = SipStream(seq, now_ns, self.limits, self.counters, syn_seq=syn_seq)
        self._streams[key] = st
        self.counters["streams_opened"] += 1
        return st

    def _enforce_total(self) -> None:
        """Evict least recently used streams while all of them together hold too much."""
        while self.buffered_bytes > self.max_total_bytes and len(self._streams) > 1:
            key, st = next(iter(self._streams.items()))
            self._discard(key, st)
            self.counters["evicted_for_memory"] += 1

    def _discard(self, key: StreamKey, st: SipStream) -> None:
        """Drop a stream, counting the bytes it still held."""
        self.counters["discarded_bytes"] += st.held
        self.buffered_bytes -= st.held
        self._gapped.discard(key)
        del self._streams[key]
