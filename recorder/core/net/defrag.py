"""IP fragment reassembly (IPv4 RFC 791/815, IPv6 RFC 8200 §4.5) in bounded memory.

Rules, chosen so the result never depends on arrival order:
- A datagram is keyed by (version, src, dst, protocol for IPv4, id) (RFC 791 §3.2,
  RFC 8200 §4.5). It completes when its pieces cover [0, total), `total` being
  set by the fragment with MF clear.
- Overlaps whose bytes agree (duplicates, e.g. from a SPAN session mirroring both
  directions) are accepted. Overlaps whose bytes differ, a second "last" fragment
  with another end, data past the end, or offset-0 fragments naming different
  protocols are conflicts: the datagram is dropped (RFC 5722 does the same for
  IPv6), and its key stays poisoned until its timeout so later fragments of it
  are dropped too (`fragment_overlap`). A datagram over the per-datagram
  fragment cap, or bigger than the whole byte budget, is given up the same way
  (`fragment_limit`).
- Every fragment but the last must carry a multiple of 8 bytes; nothing may end
  past 65535 (`bad_fragment`).
- Timeouts run on capture time: a datagram expires `timeout_ns` after its first
  fragment. Deadlines never decrease in creation order (a capture whose clock
  steps back gets the previous deadline), so the oldest entry is always the next
  to expire and eviction, expiry and `next_expiry_ns` are O(1).
- Caps: pending datagrams and buffered bytes; the oldest datagram is evicted to
  make room (counted in `fragment_evictions`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import NoReturn

from recorder.errors import ConfigError, DecodeError

MAX_DATAGRAM = 65535

FragmentKey = tuple[int, bytes, bytes, int, int]


@dataclass(frozen=True, slots=True)
class FragmentLimits:
    """Bounds on reassembly state; timeouts are in capture-time nanoseconds."""

    timeout_ns: int = 30_000_000_000
    max_datagrams: int = 1024
    max_bytes: int = 4 * 1024 * 1024
    max_fragments_per_datagram: int = 128

    def __post_init__(self) -> None:
        for name in ("timeout_ns", "max_datagrams", "max_bytes", "max_fragments_per_datagram"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"fragment limit {name} must be positive")


@dataclass(slots=True)
class _Pending:
    deadline_ns: int
    pieces: list[tuple[int, bytes]] = field(default_factory=list)
    total: int = -1  # payload length, known once the last fragment arrived
    size: int = 0  # bytes buffered
    proto: int = -1  # transport protocol named by the offset-0 fragment
    poisoned: str = ""  # drop reason once the datagram is given up; its key stays until expiry


class Reassembler:
    """Collects fragments and returns whole payloads; see the module docstring for rules."""

    def __init__(self, limits: FragmentLimits, counters: dict[str, int]) -> None:
        self.limits = limits
        self.counters = counters
        for name in ("fragments_reassembled", "fragment_evictions", "fragment_timeouts"):
            counters.setdefault(name, 0)
        self._pending: OrderedDict[FragmentKey, _Pending] = OrderedDict()
        self._bytes = 0
        self._last_deadline = 0

    @property
    def pending_datagrams(self) -> int:
        """Datagrams waiting for fragments (poisoned keys included)."""
        return len(self._pending)

    @property
    def pending_bytes(self) -> int:
        """Fragment bytes buffered."""
        return self._bytes

    def next_expiry_ns(self) -> int | None:
        """Capture time at which the oldest pending datagram expires."""
        if not self._pending:
            return None
        return next(iter(self._pending.values())).deadline_ns

    def expire(self, now_ns: int) -> None:
        """Drop every datagram whose deadline is at or before `now_ns`."""
        pending = self._pending
        while pending:
            entry = next(iter(pending.values()))
            if entry.deadline_ns > now_ns:
                return
            pending.popitem(last=False)
            self._bytes -= entry.size
            if not entry.poisoned:
                self.counters["fragment_timeouts"] += 1

    def add(
        self, key: FragmentKey, offset: int, more: bool, piece: bytes, proto: int, now_ns: int
    ) -> tuple[int, bytes] | None:
        """Add one fragment's payload; return (protocol, whole payload) once complete."""
        end = offset + len(piece)
        if end > MAX_DATAGRAM or (more and (not piece or len(piece) % 8)):
            raise DecodeError("ip", "bad_fragment")
        self.expire(now_ns)
        entry = self._pending.get(key)
        if entry is None:
            entry = self._create(key, now_ns)
        elif entry.poisoned:
            raise DecodeError("ip", entry.poisoned)
        if not self._consistent(entry, offset, end, more, piece, proto):
            self._poison(entry, "fragment_overlap")
        if offset == 0:
            entry.proto = proto
        if not more:
            entry.total = end
        if not _covered(entry.pieces, offset, end):
            self._store(key, entry, offset, piece)
        return self._complete(key, entry)

    def _create(self, key: FragmentKey, now_ns: int) -> _Pending:
        if len(self._pending) >= self.limits.max_datagrams:
            self._evict_oldest()
        deadline = max(now_ns + self.limits.timeout_ns, self._last_deadline)
        self._last_deadline = deadline
        entry = _Pending(deadline)
        self._pending[key] = entry
        return entry

    def _consistent(
        self, entry: _Pending, offset: int, end: int, more: bool, piece: bytes, proto: int
    ) -> bool:
        if offset == 0 and entry.proto not in (-1, proto):
            return False
        if entry.total >= 0 and (end > entry.total or (not more and end != entry.total)):
            return False
        for start, data in entry.pieces:
            stop = start + len(data)
            if not more and stop > end:
                return False
            if start < end and offset < stop:
                lo, hi = max(start, offset), min(stop, end)
                if data[lo - start : hi - start] != piece[lo - offset : hi - offset]:
                    return False
        return True

    def _store(self, key: FragmentKey, entry: _Pending, offset: int, piece: bytes) -> None:
        limits = self.limits
        if len(entry.pieces) >= limits.max_fragments_per_datagram:
            self._poison(entry, "fragment_limit")
        while self._bytes + len(piece) > limits.max_bytes:
            if next(iter(self._pending)) == key:  # this datagram alone would overflow
                self._poison(entry, "fragment_limit")
            self._evict_oldest()
        entry.pieces.append((offset, piece))
        entry.size += len(piece)
        self._bytes += len(piece)

    def _complete(self, key: FragmentKey, entry: _Pending) -> tuple[int, bytes] | None:
        total = entry.total
        if total < 0:
            return None
        pieces = sorted(entry.pieces, key=_first)
        covered = 0
        for start, data in pieces:
            if start > covered:
                return None
            covered = max(covered, start + len(data))
        if covered < total:
            return None
        buf = bytearray(total)
        for start, data in pieces:
            buf[start : start + len(data)] = data
        self._drop(key, entry)
        self.counters["fragments_reassembled"] += 1
        return entry.proto, bytes(buf)

    def _poison(self, entry: _Pending, reason: str) -> NoReturn:
        """Give the datagram up: free its bytes, keep its key to drop later fragments."""
        self._bytes -= entry.size
        entry.pieces = []
        entry.size = 0
        entry.poisoned = reason
        raise DecodeError("ip", reason)

    def _drop(self, key: FragmentKey, entry: _Pending) -> None:
        del self._pending[key]
        self._bytes -= entry.size

    def _evict_oldest(self) -> None:
        _, entry = self._pending.popitem(last=False)
        self._bytes -= entry.size
        if not entry.poisoned:
            self.counters["fragment_evictions"] += 1


def _first(item: tuple[int, bytes]) -> int:
    return item[0]


def _covered(pieces: list[tuple[int, bytes]], offset: int, end: int) -> bool:
    """True when one stored piece already holds [offset, end) (an exact duplicate)."""
    return any(start <= offset and end <= start + len(data) for start, data in pieces)
