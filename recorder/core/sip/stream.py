"""One direction of a SIP-over-TCP connection: byte-stream reassembly, then framing.

Rules:
- Sequence numbers are compared mod 2**32 (RFC 793 §3.3) with the next
  expected byte, so wrap-around is invisible; stream offsets are Python ints.
- Bytes already delivered (retransmissions, overlaps) are trimmed; segments
  ahead of the next byte wait in a bounded out-of-order store (aioquic's
  stream receiver is the model).
- A hole older than the gap timeout, or an out-of-order store over its caps,
  is skipped: the partial message before it is dropped and framing
  resynchronises on the next line that is a SIP start line.
- Messages are cut by Content-Length (RFC 3261 §18.3). Malformed framing is
  counted and resynchronised. Nothing here raises.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from recorder.core.sip.framing import (
    BAD,
    MAX_START_LINE,
    content_length,
    find_head_end,
    is_start_line,
)
from recorder.core.sip.message import MAX_MESSAGE_BYTES

__all__ = ["SipStream", "StreamLimits", "seq_diff"]

_MASK = 0xFFFFFFFF
_HALF = 0x80000000
_WAIT, _READY, _RETRY = 0, 1, 2  # outcomes of SipStream._read_head


def seq_diff(a: int, b: int) -> int:
    """`a - b` for 32-bit sequence numbers, as a signed int in [-2**31, 2**31)."""
    return ((a - b + _HALF) & _MASK) - _HALF


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """Per-direction bounds."""

    max_message: int = MAX_MESSAGE_BYTES
    max_pending_bytes: int = 256 * 1024
    max_pending_segments: int = 512
    window: int = 1 << 20  # how far ahead of the next byte a segment may start
    gap_timeout_ns: int = 1_000_000_000


class SipStream:
    """Reassembly and framing state of one direction. `counters` is shared with the owner."""

    __slots__ = (
        "buf",
        "counters",
        "fin_off",
        "gap_since_ns",
        "heap",
        "last_ns",
        "limits",
        "need",
        "next_off",
        "next_seq",
        "pending",
        "pending_bytes",
        "scan_from",
        "skip",
        "syn_seq",
        "syncing",
    )

    def __init__(
        self,
        next_seq: int,
        now_ns: int,
        limits: StreamLimits,
        counters: dict[str, int],
        *,
        syn_seq: int | None,
    ) -> None:
        self.limits = limits
        self.counters = counters
        self.syn_seq = syn_seq  # ISN when the SYN was seen (spots SYN retransmissions)
        self.syncing = syn_seq is None  # seen mid-way: discard until a SIP start line
        self.next_seq = next_seq  # sequence number (mod 2**32) of the byte at next_off
        self.next_off = 0  # stream offset of the next in-order byte
        self.last_ns = now_ns
        self.buf = bytearray()  # in-order bytes not yet framed
        self.pending: dict[int, bytes] = {}  # offset -> out-of-order data
        self.heap: list[int] = []  # offsets in `pending`, smallest first
        self.pending_bytes = 0
        self.gap_since_ns = now_ns
        self.fin_off: int | None = None
        self.scan_from = 0  # where to resume looking for the blank line (> 0: start line read)
        self.need = 0  # size of the message being completed, once its head is read
        self.skip = 0  # bytes of an oversize message still to discard

    @property
    def held(self) -> int:
        """Bytes held: in order but unframed, plus out of order."""
        return len(self.buf) + self.pending_bytes

    @property
    def finished(self) -> bool:
        """True once every byte before a seen FIN has been delivered."""
        return self.fin_off is not None and self.next_off >= self.fin_off and not self.pending

    def offset_of(self, seq: int) -> int:
        """The stream offset of sequence number `seq`."""
        return self.next_off + seq_diff(seq, self.next_seq)

    # -- sequence space ---------------------------------------------------------

    def receive(self, seq: int, data: bytes, now_ns: int) -> None:
        """Place one segment's bytes: append, trim an old prefix, or hold out of order."""
        delta = seq_diff(seq, self.next_seq)
        if delta < 0:
            dup = min(-delta, len(data))
            self.counters["duplicate_bytes"] += dup
            data = data[dup:]
            delta = 0
            if not data:
                return
        if delta == 0:
            self._append(data)
            return
        if delta + len(data) > self.limits.window:
            self.counters["out_of_window"] += 1
            return
        off = self.next_off + delta
        old = self.pending.get(off)
        if old is not None and len(old) >= len(data):
            self.counters["duplicate_bytes"] += len(data)
            return
        if old is None:
            heapq.heappush(self.heap, off)
        if not self.pending:
            self.gap_since_ns = now_ns
        self.pending[off] = data
        self.pending_bytes += len(data) - (len(old) if old else 0)

    def _append(self, data: bytes) -> None:
        self.buf += data
        self.next_off += len(data)
        self.next_seq = (self.next_seq + len(data)) & _MASK

    def _drain(self) -> None:
        """Move held segments that now touch the in-order end into `buf`."""
        while self.heap and self.heap[0] <= self.next_off:
            off = heapq.heappop(self.heap)
            data = self.pending.pop(off)
            self.pending_bytes -= len(data)
            skip = min(self.next_off - off, len(data))
            self.counters["duplicate_bytes"] += skip
            if skip < len(data):
                self._append(data[skip:])

    def _skip_gap(self) -> None:
        """Give up on the hole before the first held segment; framing is lost there."""
        hole = self.heap[0] - self.next_off
        self.counters["gaps"] += 1
        self.counters["gap_bytes"] += hole
        self.counters["discarded_bytes"] += len(self.buf)
        self.buf.clear()
        self.scan_from = self.need = self.skip = 0
        self.next_off += hole
        self.next_seq = (self.next_seq + hole) & _MASK
        self.syncing = True

    def _over_caps(self) -> bool:
        return (
            self.pending_bytes > self.limits.max_pending_bytes
            or len(self.pending) > self.limits.max_pending_segments
        )

    def advance(self, now_ns: int) -> list[bytes]:
        """Drain held segments, skip holes that timed out or overflow, frame what is in order."""
        self._drain()
        timed_out = bool(self.pending) and (
            now_ns - self.gap_since_ns >= self.limits.gap_timeout_ns
        )
        skipped = False
        while self.pending and (timed_out or self._over_caps()):
            if not timed_out:
                self.counters["pending_overflow"] += 1
            self._skip_gap()
            self._drain()
            skipped = True
        if skipped and self.pending:
            self.gap_since_ns = now_ns  # the next hole gets its own full wait
        return self._frame()

    # -- framing (RFC 3261 §18.3) --------------------------------------------------

    def _frame(self) -> list[bytes]:
        """Cut complete messages off the front of `buf`."""
        out: list[bytes] = []
        buf = self.buf
        while True:
            if self.skip and not self._skip_oversize():
                return out
            if self.syncing and not self._resync():
                return out
            if self.need == 0:
                lead = len(buf) - len(buf.lstrip(b"\r\n"))
                if lead:  # CRLF keep-alives between messages (RFC 5626 §3.5.1)
                    self.counters["keepalives"] += 1
                    del buf[:lead]
                    self.scan_from = 0
                if not buf:
                    return out
                step = self._read_head()
                if step == _WAIT:
                    return out
                if step == _RETRY:
                    continue
            if len(buf) < self.need:
                return out
            out.append(bytes(buf[: self.need]))
            del buf[: self.need]
            self.need = self.scan_from = 0
            self.counters["messages"] += 1

    def _read_head(self) -> int:
        """Check the start line, find the blank line, read Content-Length and set `need`."""
        buf = self.buf
        if self.scan_from == 0:
            eol = buf.find(b"\n")
            if eol < 0:
                return self._bad("bad_start_line") if len(buf) > MAX_START_LINE else _WAIT
            if not is_start_line(buf[:eol]):
                return self._bad("bad_start_line")
            self.scan_from = eol
        found = find_head_end(buf, self.scan_from)
        if found is None:
            if len(buf) > self.limits.max_message:
                return self._bad("oversize")
            self.scan_from = max(self.scan_from, len(buf) - 2)
            return _WAIT
        head_end, body_start = found
        length = content_length(buf[:head_end])
        if length == BAD:
            return self._bad("bad_content_length")
        if length is None:  # mandatory on TCP (RFC 3261 §20.14); read as no body
            self.counters["missing_content_length"] += 1
            length = 0
        if body_start + length > self.limits.max_message:
            # The framing itself is sound: drop exactly this message and stay in sync.
            self.counters["oversize"] += 1
            self.skip = body_start + length
            self.scan_from = 0
            return _RETRY
        self.need = body_start + length
        return _READY

    def _skip_oversize(self) -> bool:
        """Discard what is due of an oversize message; True once all of it is gone."""
        cut = min(self.skip, len(self.buf))
        del self.buf[:cut]
        self.skip -= cut
        self.counters["discarded_bytes"] += cut
        return self.skip == 0

    def _bad(self, reason: str) -> int:
        """Count a framing error, drop the offending first line and resynchronise."""
        self.counters[reason] += 1
        eol = self.buf.find(b"\n")
        cut = len(self.buf) if eol < 0 else eol + 1
        self.counters["discarded_bytes"] += cut
        del self.buf[:cut]
        self.scan_from = self.need = 0
        self.syncing = True
        return _RETRY

    def _resync(self) -> bool:
        """Discard up to the next line that is a SIP start line; False if none yet."""
        buf = self.buf
        pos = 0
        while True:
            eol = buf.find(b"\n", pos)
            if eol < 0:
                # Keep an unfinished last line unless it is already too long to be a start line.
                cut = pos if len(buf) - pos <= MAX_START_LINE else len(buf)
                self.counters["discarded_bytes"] += cut
                del buf[:cut]
                return False
            if is_start_line(buf[pos:eol]):
                self.counters["discarded_bytes"] += pos
                del buf[:pos]
                self.syncing = False
                return True
            pos = eol + 1
