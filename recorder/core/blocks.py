"""The known-RTP fast path over a whole block of frames at once.

`receive_frame` costs a Python function call, a few slices and two dict lookups per
packet. Here the fixed-offset test (Ethernet, IPv4 without options, unfragmented UDP)
and the endpoint keys are computed for every frame of a block with numpy, the keys are
looked up with one `map` over the call table's integer keys, and the frames that hit
are queued on their calls group by group. Every other frame (SIP, unknown flows, other
link layers, the frame at which the sweep timer falls due) goes through
`receive_frame` in its place in capture order, so a block has exactly the effect of its
frames fed one by one (tests/core/test_blocks.py checks this event for event).

The call table may change at such a frame (a new call's SDP, a latched NAT address, a
call ended by the sweep); lookups made before are then stale and are made again for the
frames after it, over a window that starts small and doubles while nothing changes, so
a burst of call set-ups does not cost a lookup of the whole block per SIP message.
"""

from __future__ import annotations

from itertools import repeat
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from recorder.core.media_path import MAX_PENDING
from recorder.core.model import LINKTYPE_ETHERNET, FrameBlock

if TYPE_CHECKING:
    from recorder.core.pipeline import RecorderCore

_WINDOW_MIN = 256  # frames looked up at once after the call table changed
WINDOW_MAX = 1 << 16
_SHORT_RUN = 16  # fewer fast frames than this in a row: numpy costs more than it saves
_HEADER = np.arange(40, dtype=np.int64)  # Ethernet, IPv4 and UDP headers: bytes 0-39
_Bools = NDArray[np.bool_]
_Ints = NDArray[np.int64]


class _Classified:
    """Per frame of a block: can it take the fast path, its keys and its UDP payload."""

    __slots__ = ("dst", "eligible", "payload_end", "payload_start", "src")

    def __init__(self, block: FrameBlock) -> None:
        buf = np.frombuffer(block.data, dtype=np.uint8)
        starts = block.starts
        lengths = block.ends - starts
        index = starts[:, None] + _HEADER
        np.minimum(index, len(buf) - 1, out=index)  # short frames: not eligible anyway
        h = buf[index]
        udp_end = 34 + ((h[:, 38].astype(np.int64) << 8) | h[:, 39])
        self.eligible: _Bools = (
            (lengths >= 42)  # first: every index above is inside the frame
            & (h[:, 12] == 0x08)
            & (h[:, 13] == 0x00)
            & (h[:, 14] == 0x45)
            & (h[:, 23] == 17)
            & ((h[:, 20] & 0x3F) == 0)
            & (h[:, 21] == 0)
            & (udp_end >= 42)
            & (udp_end <= lengths)
        )
        self.dst: _Ints = _key(h, 30, 36)
        self.src: _Ints = _key(h, 26, 34)
        self.payload_start: _Ints = starts + 42
        self.payload_end: _Ints = starts + udp_end


def _key(h: NDArray[np.uint8], ip_at: int, port_at: int) -> _Ints:
    """address << 16 | port, as `CallTable.fast` keys them."""
    ip: _Ints = np.ascontiguousarray(h[:, ip_at : ip_at + 4]).view(">u4")[:, 0].astype(np.int64)
    port = np.ascontiguousarray(h[:, port_at : port_at + 2]).view(">u2")[:, 0]
    key: _Ints = (ip << 16) | port
    return key


def receive_block(core: RecorderCore, block: FrameBlock, start: int = 0) -> None:
    """Feed frames `start:` of `block` to `core`, in order. `core.block_position` names
    the frame being fed one by one, so that a shell can go on after it if it raised."""
    n = len(block)
    if block.linktype != LINKTYPE_ETHERNET or n - start < _SHORT_RUN:
        _one_by_one(core, block, start, n)
        return
    c = _Classified(block)
    table = core.calls
    times = block.times
    pos, window = start, core.block_window
    while pos < n:
        stop = min(n, pos + window)
        # The first frame at or past the sweep time runs the timers: it ends the window.
        threshold = max(core.get_timer(), core.now_ns + 1)
        latest = np.maximum.accumulate(times[pos:stop])
        due = int(np.searchsorted(latest, threshold))
        stop = min(stop, pos + due + 1)
        codes = _lookup(table.fast, c, pos, stop)
        slow = (np.flatnonzero(codes < 0) + pos).tolist()
        if due < len(latest) and (not slow or slow[-1] != pos + due):
            slow.append(pos + due)
        version, changed = table.version, False
        k = pos
        for s in (*slow, stop):
            if s > k:
                core.now_ns = max(core.now_ns, int(latest[s - 1 - pos]))
                core.block_position = s - 1  # should queueing raise, the run is skipped
                _queue(core, block, c, codes[k - pos : s - pos], k, s)
            k = s
            if s == stop:
                break
            core.block_position = s
            core.receive_frame(block.frame(s))
            k = s + 1
            if table.version != version or core.get_timer() > threshold:
                changed = True
                break
        pos = k
        window = _WINDOW_MIN if changed else min(window * 2, WINDOW_MAX)
    core.block_window = window  # the next block goes on where this one left off


def _one_by_one(core: RecorderCore, block: FrameBlock, start: int, stop: int) -> None:
    for k in range(start, stop):
        core.block_position = k
        core.receive_frame(block.frame(k))


def _lookup(fast: dict[int, int], c: _Classified, start: int, stop: int) -> _Ints:
    """serial * 2 + sending side for each frame of a known flow, -1 for the others."""
    dst = np.fromiter(
        map(fast.get, c.dst[start:stop].tolist(), repeat(-1)), dtype=np.int64, count=stop - start
    )
    # By destination: the side receiving there; the sender is the other one.
    codes = np.where(dst >= 0, dst ^ 1, -1)
    missing = np.flatnonzero(codes < 0)
    if len(missing):  # by source: the sender itself (NAT'd or one-way streams)
        src = c.src[start:stop][missing].tolist()
        codes[missing] = np.fromiter(
            map(fast.get, src, repeat(-1)), dtype=np.int64, count=len(missing)
        )
    codes[~c.eligible[start:stop]] = -1
    return codes


def _queue(
    core: RecorderCore, block: FrameBlock, c: _Classified, codes: _Ints, start: int, stop: int
) -> None:
    """Queue fast frames start:stop on their calls, as the per-frame fast path would."""
    if stop - start < _SHORT_RUN:
        _one_by_one(core, block, start, stop)
        return
    order = np.argsort(codes, kind="stable")  # per call side, capture order kept
    sorted_codes = codes[order]
    bounds = np.flatnonzero(sorted_codes[1:] != sorted_codes[:-1]) + 1
    firsts = [0, *bounds.tolist()]
    lasts = [*bounds.tolist(), len(order)]
    order += start
    times = block.times[order].tolist()
    data = block.data
    datas = [
        data[a:b]
        for a, b in zip(c.payload_start[order].tolist(), c.payload_end[order].tolist(), strict=True)
    ]
    by_serial = core.calls.by_serial
    groups = []
    for first, last, code in zip(firsts, lasts, sorted_codes[firsts].tolist(), strict=True):
        call = by_serial(code >> 1)
        assert call is not None  # the table has not changed since the lookup
        sender = code & 1
        if len(call.pending_times[sender]) + last - first >= MAX_PENDING:
            # A flood: one by one, so that the queues fill and flush at the same frames.
            _one_by_one(core, block, start, stop)
            return
        groups.append((call.pending_times[sender], call.pending_datas[sender], first, last))
    for pending_times, pending_datas, first, last in groups:
        pending_times.extend(times[first:last])
        pending_datas.extend(datas[first:last])
    core.stats.frames += stop - start
