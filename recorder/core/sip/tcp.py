"""SIP over TCP: per-direction stream reassembly and message framing.

Each direction (src_ip, sport, dst_ip, dport) is a byte stream rebuilt from
captured segments, then cut into SIP messages by Content-Length (RFC 3261
§18.3). Rules:

- Sequence numbers are compared mod 2**32 (RFC 793 §3.3) against the next
  expected byte, so wrap-around is invisible; stream offsets are Python ints.
- Bytes already delivered (retransmissions, overlaps) are trimmed; segments
  ahead of the next byte wait in a bounded out-of-order store.
- A hole that does not fill within `gap_timeout_ns` of capture time, or an
  out-of-order store over its caps, is skipped: the partial message before it
  is dropped and framing resynchronises on the next SIP start line. A stream
  first seen without its SYN starts the same way (resynchronising).
- Malformed framing (bad start line, bad Content-Length, oversize) is counted
  in `counters` and resynchronised; `feed` and `expire` never raise.
- Caps: stream count (LRU eviction), message size, out-of-order bytes and
  segments per stream; streams idle for `idle_timeout_ns` are dropped.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from dataclasses import dataclass, field

from recorder.core.sip.framing import BAD, MAX_START_LINE, content_length, find_head_end
from recorder.core.sip.framing import is_start_line as _is_start_line
from recorder.core.sip.message import MAX_MESSAGE_BYTES

__all__ = ["COUNTERS", "FIN", "RST", "SYN", "StreamKey", "TcpSipStreams"]

FIN = 0x01
SYN = 0x02
RST = 0x04
_MASK = 0xFFFFFFFF
_HALF = 0x80000000

# (src_ip, sport, dst_ip, dport) of one direction; addresses packed.
StreamKey = tuple[bytes, int, bytes, int]

# Every counter name (bounded label values for metrics).
COUNTERS = (
    "streams_opened",
    "streams_closed",
    "streams_reset",
    "streams_evicted",
    "streams_expired",
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
    "evicted_for_memory",
)

# _read_head outcomes.
_WAIT, _READY, _RETRY = 0, 1, 2


@dataclass(slots=True)
class _Stream:
    """Reassembly state of one direction."""

    syn_seq: int | None  # ISN when the SYN was seen (to spot SYN retransmissions)
    next_seq: int  # sequence number (mod 2**32) of the byte at `next_off`
    last_ns: int
    syncing: bool  # discarding until a SIP start line
    next_off: int = 0  # stream offset of the next in-order byte
    buf: bytearray = field(default_factory=bytearray)  # in-order bytes not yet framed
    pending: dict[int, bytes] = field(default_factory=dict)  # offset -> out-of-order data
    heap: list[int] = field(default_factory=list)  # offsets of `pending`, smallest first
    pending_bytes: int = 0
    gap_since_ns: int = 0
    fin_off: int | None = None
    scan_from: int = 0  # where to resume looking for the blank line
    need: int = 0  # total size of the message being completed, once its head is read
    skip: int = 0  # bytes of an oversize message still to discard


class TcpSipStreams:
    """Reassemble SIP-over-TCP directions and return complete SIP messages (bytes).

    Pure: capture time comes in as `now_ns`. Call `expire(now_ns)` now and
    then to flush holes that will never fill and to drop idle streams.
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
        self.max_streams = max_streams
        self.max_message = max_message
        self.max_pending_bytes = max_pending_bytes
        self.max_pending_segments = max_pending_segments
        self.window = window
        self.gap_timeout_ns = gap_timeout_ns
        self.idle_timeout_ns = idle_timeout_ns
        self.max_total_bytes = max_total_bytes
        self.buffered_bytes = 0  # sum of _held() over all streams
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._streams: OrderedDict[StreamKey, _Stream] = OrderedDict()
        self._gapped: set[StreamKey] = set()

    def __len__(self) -> int:
        return len(self._streams)

    def feed(
        self, key: StreamKey, seq: int, flags: int, payload: bytes, now_ns: int
    ) -> list[bytes]:
        """Take one captured segment; return the SIP messages it completes, in stream order."""
        seq &= _MASK
        if flags & RST:
            if self._drop(key):
                self.counters["streams_reset"] += 1
            return []
        st = self._streams.get(key)
        if flags & SYN:
            if st is None or st.syn_seq != seq:
                self._drop(key)
                st = self._open(key, seq, (seq + 1) & _MASK, now_ns, syncing=False)
            seq = (seq + 1) & _MASK  # SYN takes one sequence number; data (TFO) follows
        elif st is None:
            if not payload:
                return []  # a bare ACK/FIN of a stream we never saw carrying data
            st = self._open(key, None, seq, now_ns, syncing=True)
        st.last_ns = now_ns
        self._streams.move_to_end(key)
        before = _held(st)
        if payload:
            self._receive(st, key, seq, payload, now_ns)
        if flags & FIN:
            st.fin_off = st.next_off + _signed(seq - st.next_seq) + len(payload)
        out = self._advance(st, key, now_ns)
        self.buffered_bytes += _held(st) - before
        self._maybe_close(key, st)
        self._enforce_total()
        return out

    def expire(self, now_ns: int) -> list[tuple[StreamKey, bytes]]:
        """Skip holes older than the gap timeout and drop idle streams.

        Returns the messages that skipping holes released, with their stream key.
        """
        out: list[tuple[StreamKey, bytes]] = []
        for key in list(self._gapped):
            st = self._streams.get(key)
            if st is None or not st.pending:
                self._gapped.discard(key)
            elif now_ns - st.gap_since_ns >= self.gap_timeout_ns:
                before = _held(st)
                out.extend((key, msg) for msg in self._advance(st, key, now_ns))
                self.buffered_bytes += _held(st) - before
                self._maybe_close(key, st)
        while self._streams:
            key, st = next(iter(self._streams.items()))
            if now_ns - st.last_ns < self.idle_timeout_ns:
                break
            self._discard_rest(st)
            self._drop(key)
            self.counters["streams_expired"] += 1
        return out

    def _maybe_close(self, key: StreamKey, st: _Stream) -> None:
        if st.fin_off is not None and st.next_off >= st.fin_off and not st.pending:
            self._close(key, st)

    def _enforce_total(self) -> None:
        """Evict least recently used streams while all buffers together exceed the cap."""
        while self.buffered_bytes > self.max_total_bytes and len(self._streams) > 1:
            key, st = next(iter(self._streams.items()))
            self._discard_rest(st)
            self._drop(key)
            self.counters["evicted_for_memory"] += 1

    # -- stream table -------------------------------------------------------

    def _open(
        self, key: StreamKey, syn_seq: int | None, seq: int, now_ns: int, *, syncing: bool
    ) -> _Stream:
        while len(self._streams) >= self.max_streams > 0:
            old_key, old = next(iter(self._streams.items()))
            self._discard_rest(old)
            self._drop(old_key)
            self.counters["streams_evicted"] += 1
        st = _Stream(syn_seq=syn_seq, next_seq=seq, last_ns=now_ns, syncing=syncing)
        self._streams[key] = st
        self.counters["streams_opened"] += 1
        return st

    def _drop(self, key: StreamKey) -> bool:
        self._gapped.discard(key)
        st = self._streams.pop(key, None)
        if st is None:
            return False
        self.buffered_bytes -= _held(st)
        return True

    def _close(self, key: StreamKey, st: _Stream) -> None:
        """FIN reached with every byte before it delivered."""
        if st.buf.strip(b"\r\n"):
            self.counters["incomplete_at_close"] += 1
        self._discard_rest(st)
        self._drop(key)
        self.counters["streams_closed"] += 1

    def _discard_rest(self, st: _Stream) -> None:
        self.counters["discarded_bytes"] += len(st.buf) + st.pending_bytes

    # -- sequence space -----------------------------------------------------

    def _receive(self, st: _Stream, key: StreamKey, seq: int, data: bytes, now_ns: int) -> None:
        """Place one segment's bytes: append, trim a duplicate prefix, or hold out of order."""
        delta = _signed(seq - st.next_seq)
        if delta < 0:
            dup = min(-delta, len(data))
            self.counters["duplicate_bytes"] += dup
            data = data[dup:]
            delta = 0
            if not data:
                return
        if delta == 0:
            self._append(st, data)
            return
        if delta + len(data) > self.window:
            self.counters["out_of_window"] += 1
            return
        off = st.next_off + delta
        old = st.pending.get(off)
        if old is not None and len(old) >= len(data):
            self.counters["duplicate_bytes"] += len(data)
            return
        if old is None:
            heapq.heappush(st.heap, off)
        st.pending[off] = data
        st.pending_bytes += len(data) - (len(old) if old else 0)
        if key not in self._gapped:
            self._gapped.add(key)
            st.gap_since_ns = now_ns

    def _append(self, st: _Stream, data: bytes) -> None:
        st.buf += data
        st.next_off += len(data)
        st.next_seq = (st.next_seq + len(data)) & _MASK

    def _drain(self, st: _Stream, key: StreamKey) -> None:
        """Move held segments that now touch the in-order end into `buf`."""
        while st.heap and st.heap[0] <= st.next_off:
            off = heapq.heappop(st.heap)
            data = st.pending.pop(off)
            st.pending_bytes -= len(data)
            skip = st.next_off - off
            if skip >= len(data):
                self.counters["duplicate_bytes"] += len(data)
            else:
                self.counters["duplicate_bytes"] += skip
                self._append(st, data[skip:])
        if not st.pending:
            self._gapped.discard(key)

    def _skip_gap(self, st: _Stream) -> None:
        """Give up on the hole before the first held segment (RFC 3261 §18.3 framing is lost)."""
        first = st.heap[0]
        hole = first - st.next_off
        self.counters["gaps"] += 1
        self.counters["gap_bytes"] += hole
        self.counters["discarded_bytes"] += len(st.buf)
        st.buf.clear()
        st.scan_from = st.need = st.skip = 0
        st.next_off = first
        st.next_seq = (st.next_seq + hole) & _MASK
        st.syncing = True

    def _over_caps(self, st: _Stream) -> bool:
        return (
            st.pending_bytes > self.max_pending_bytes or len(st.pending) > self.max_pending_segments
        )

    def _advance(self, st: _Stream, key: StreamKey, now_ns: int) -> list[bytes]:
        """Drain held segments, skip holes that timed out or overflow, frame what is in order."""
        self._drain(st, key)
        timed_out = bool(st.pending) and now_ns - st.gap_since_ns >= self.gap_timeout_ns
        skipped = False
        while st.pending and (timed_out or self._over_caps(st)):
            if not timed_out:
                self.counters["pending_overflow"] += 1
            self._skip_gap(st)
            self._drain(st, key)
            skipped = True
        if skipped and st.pending:
            st.gap_since_ns = now_ns  # the next hole gets its own full wait
        return self._frame(st)

    # -- framing ------------------------------------------------------------

    def _frame(self, st: _Stream) -> list[bytes]:
        """Cut complete messages off the front of `buf` (RFC 3261 §18.3)."""
        out: list[bytes] = []
        buf = st.buf
        while True:
            if st.skip and not self._skip_oversize(st):
                return out
            if st.syncing and not self._resync(st):
                return out
            if st.need == 0:
                lead = len(buf) - len(buf.lstrip(b"\r\n"))
                if lead:  # RFC 5626 §3.5.1 CRLF keep-alives between messages
                    self.counters["keepalives"] += 1
                    del buf[:lead]
                    st.scan_from = 0
                if not buf:
                    return out
                step = self._read_head(st)
                if step == _WAIT:
                    return out
                if step == _RETRY:
                    continue
            if len(buf) < st.need:
                return out
            out.append(bytes(buf[: st.need]))
            del buf[: st.need]
            st.need = st.scan_from = 0
            self.counters["messages"] += 1

    def _read_head(self, st: _Stream) -> int:
        """Read the head of the message at the front of `buf` and set `st.need`.

        Returns _READY, _WAIT (more bytes needed) or _RETRY (the head was bad,
        counted, its first line dropped and `st.syncing` set).
        `st.scan_from > 0` records that the start line was already checked.
        """
        buf = st.buf
        if st.scan_from == 0:
            eol = buf.find(b"\n")
            if eol < 0:
                return self._bad(st, "bad_start_line") if len(buf) > MAX_START_LINE else _WAIT
            if not _is_start_line(buf[:eol]):
                return self._bad(st, "bad_start_line")
            st.scan_from = eol
        found = find_head_end(buf, st.scan_from)
        if found is None:
            if len(buf) > self.max_message:
                return self._bad(st, "oversize")
            st.scan_from = max(st.scan_from, len(buf) - 2)
            return _WAIT
        head_end, body_start = found
        length = content_length(buf[:head_end])
        if length == BAD:
            return self._bad(st, "bad_content_length")
        if length is None:  # mandatory on TCP (RFC 3261 §20.14); assume no body
            self.counters["missing_content_length"] += 1
            length = 0
        if body_start + length > self.max_message:
            # Framing is intact: discard exactly this message and carry on in sync.
            self.counters["oversize"] += 1
            st.skip = body_start + length
            st.scan_from = 0
            return _RETRY
        st.need = body_start + length
        return _READY

    def _skip_oversize(self, st: _Stream) -> bool:
        """Discard what is due of an oversize message; True once all of it is gone."""
        cut = min(st.skip, len(st.buf))
        del st.buf[:cut]
        st.skip -= cut
        self.counters["discarded_bytes"] += cut
        return st.skip == 0

    def _bad(self, st: _Stream, reason: str) -> int:
        """Count a framing error, drop the offending first line and resynchronise."""
        self.counters[reason] += 1
        eol = st.buf.find(b"\n")
        cut = len(st.buf) if eol < 0 else eol + 1
        self.counters["discarded_bytes"] += cut
        del st.buf[:cut]
        st.scan_from = st.need = 0
        st.syncing = True
        return _RETRY

    def _resync(self, st: _Stream) -> bool:
        """Discard up to the next line that is a SIP start line; False if none yet."""
        buf = st.buf
        pos = 0
        while True:
            eol = buf.find(b"\n", pos)
            if eol < 0:
                # Keep an unfinished last line unless it is already too long to be a start line.
                cut = pos if len(buf) - pos <= MAX_START_LINE else len(buf)
                self.counters["discarded_bytes"] += cut
                del buf[:cut]
                return False
            if _is_start_line(buf[pos:eol]):
                self.counters["discarded_bytes"] += pos
                del buf[:pos]
                st.syncing = False
                return True
            pos = eol + 1


def _held(st: _Stream) -> int:
    """Bytes a stream holds (in-order unframed plus out-of-order)."""
    return len(st.buf) + st.pending_bytes


def _signed(diff: int) -> int:
    """A sequence-number difference mod 2**32 as a signed int in [-2**31, 2**31)."""
    return ((diff + _HALF) & _MASK) - _HALF
