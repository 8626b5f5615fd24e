"""The known-RTP fast path over a whole block of frames at once.

`receive_frame` costs a Python function call, a few slices and two dict lookups per
packet. Here the fixed-offset test (Ethernet with or without one 802.1Q tag, or Linux
cooked capture; IPv4 without options; unfragmented UDP) and the endpoint keys are
computed for every frame of a block with numpy, the keys are looked up with one `map`
over the call table's integer keys, and the frames that hit are queued on their calls
group by group. Every other frame (SIP, unknown flows, other link layers, the frame at
which the sweep timer falls due) goes through `receive_frame` in its place in capture
order, so a block has exactly the effect of its frames fed one by one
(tests/core/test_blocks.py and fuzz/fuzz_frame.py check this event for event).

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
from recorder.core.model import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, FrameBlock

if TYPE_CHECKING:
    from recorder.core.pipeline import RecorderCore

_WINDOW_MIN = 256  # frames looked up at once after the call table changed
WINDOW_MAX = 1 << 18
_FAST_LINKTYPES = (LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL)
_SHORT_RUN = 16  # fewer fast frames than this in a row: numpy costs more than it saves
UNEXPLAINED = -2  # a frame's code: RTP of a flow no call explains (-1: the per-frame path)
_HEADER = np.arange(48, dtype=np.int64)  # link, IPv4 and UDP headers: bytes 0-47
_GATHER = 16384  # frames whose headers are gathered at once
_EVEN_RUN = 32  # evenly spaced frames (records of one length) read as one strided view
_SLL_NETLINK = 824  # ARPHRD_NETLINK: SLL frames of netlink, never IP
_Bools = NDArray[np.bool_]
_Ints = NDArray[np.int64]
_Bytes = NDArray[np.uint8]


class _Classified:
    """Per frame of a block: can it take the fast path, its keys and its UDP payload.

    The tests are those of the path the frame would take one by one, so that both give the
    same: the core's inline test for Ethernet/IPv4 (`receive_frame`), and `NetDecoder`'s
    fast path for one 802.1Q tag and for Linux cooked capture (what `any` captures)."""

    __slots__ = (
        "_later",
        "_unexplainable",
        "dst",
        "eligible",
        "payload_end",
        "payload_start",
        "src",
    )

    def __init__(self, block: FrameBlock, tunnel_ports: frozenset[int]) -> None:
        buf = np.frombuffer(block.data, dtype=np.uint8)
        starts = block.starts
        lengths = block.ends - starts
        n = len(starts)
        h = gather_headers(buf, starts)
        self.eligible: _Bools = np.zeros(n, dtype=bool)
        self.dst: _Ints = np.zeros(n, dtype=np.int64)
        self.src: _Ints = np.zeros(n, dtype=np.int64)
        self.payload_start: _Ints = np.zeros(n, dtype=np.int64)
        self.payload_end: _Ints = np.zeros(n, dtype=np.int64)
        # (IP offset, frames with IPv4/UDP there, whether NetDecoder's test is still to
        # be applied to them): what `unexplainable` needs, computed only if asked.
        decodable: list[tuple[int, _Bools, bool]] = []
        if block.linktype == LINKTYPE_ETHERNET:
            ipv4 = (h[:, 12] == 0x08) & (h[:, 13] == 0x00)
            self._add(starts, h, 14, ipv4 & _inline_rules(h, lengths))
            vlan = (h[:, 12] == 0x81) & (h[:, 13] == 0) & (h[:, 16] == 0x08) & (h[:, 17] == 0)
            vlan &= _decoder_rules(h, lengths, 18, tunnel_ports)
            self._add(starts, h, 18, vlan)
            decodable += [(14, ipv4, True), (18, vlan, False)]
        elif block.linktype == LINKTYPE_LINUX_SLL:
            sll = (h[:, 14] == 0x08) & (h[:, 15] == 0) & (_u16(h, 2) != _SLL_NETLINK)
            sll &= _decoder_rules(h, lengths, 16, tunnel_ports)
            self._add(starts, h, 16, sll)
            decodable.append((16, sll, False))
        self._later = (h, lengths, tunnel_ports, decodable)
        self._unexplainable: _Bools | None = None

    def _add(self, starts: _Ints, h: _Bytes, off: int, mask: _Bools) -> None:
        """Frames of `mask` carry IPv4 (no options) and UDP at `off`."""
        self.eligible |= mask
        self.dst[mask] = ((_u32(h, off + 16) << 16) | _u16(h, off + 22))[mask]
        self.src[mask] = ((_u32(h, off + 12) << 16) | _u16(h, off + 20))[mask]
        self.payload_start[mask] = starts[mask] + off + 28
        self.payload_end[mask] = (starts + off + 20 + _u16(h, off + 24))[mask]

    def unexplainable(self) -> _Bools:
        """Frames that, missing every endpoint, would be counted as unexplained RTP the
        moment their flow is known as such: `NetDecoder`'s fast path decodes them (so the
        per-frame path sees the same datagram) and their payload passes
        `OrphanStreams.note`'s test (at least 12 bytes; its first two lie within the
        gathered header bytes). Computed when first asked: only while such flows exist."""
        if self._unexplainable is None:
            h, lengths, tunnel_ports, decodable = self._later
            mask = np.zeros(len(h), dtype=bool)
            for off, frames, check in decodable:
                if check:
                    frames = frames & _decoder_rules(h, lengths, off, tunnel_ports)
                pt = h[:, off + 29] & 0x7F
                mask |= (
                    frames
                    & (_u16(h, off + 24) >= 8 + 12)
                    & (h[:, off + 28] >> 6 == 2)
                    & ((pt < 72) | (pt > 76))
                )
            self._unexplainable = mask
        return self._unexplainable


def gather_headers(buf: _Bytes, starts: _Ints) -> _Bytes:
    """The first `len(_HEADER)` bytes from each start (past the buffer's end: its last
    byte, for frames too short to be eligible anyway). Runs of evenly spaced starts (a
    capture's records of one length: RTP of one codec) are copied from strided views;
    the rest are gathered with an index, in slices (an index of 8 bytes a header byte is
    big). A strided copy costs about a fourteenth of the gather."""
    n, width = len(starts), len(_HEADER)
    h = np.empty((n, width), dtype=np.uint8)
    gathered = np.ones(n, dtype=bool)
    if n > _EVEN_RUN:
        step = np.diff(starts)
        cuts = np.flatnonzero(step[1:] != step[:-1]) + 1
        firsts = np.concatenate(([0], cuts))
        lasts = np.concatenate((cuts, [n]))  # frames [first, last): spaced by step[first]
        long_runs = np.flatnonzero(lasts - firsts >= _EVEN_RUN)
        readable = len(buf) - width
        for a, b in zip(firsts[long_runs].tolist(), lasts[long_runs].tolist(), strict=True):
            stride = int(step[a])
            if stride <= 0 or int(starts[b - 1]) > readable:
                continue
            view = np.lib.stride_tricks.as_strided(
                buf[int(starts[a]) :], shape=(b - a, width), strides=(stride, 1), writeable=False
            )
            h[a:b] = view
            gathered[a:b] = False
    rest = np.flatnonzero(gathered) if not gathered.all() else None
    picks = starts if rest is None else starts[rest]
    for at in range(0, len(picks), _GATHER):
        index = picks[at : at + _GATHER, None] + _HEADER
        np.minimum(index, len(buf) - 1, out=index)  # short frames: never eligible
        if rest is None:
            h[at : at + _GATHER] = buf[index]
        else:
            h[rest[at : at + _GATHER]] = buf[index]
    return h


def _u16(h: _Bytes, at: int) -> _Ints:
    value: _Ints = (h[:, at].astype(np.int64) << 8) | h[:, at + 1]
    return value


def _u32(h: _Bytes, at: int) -> _Ints:
    value: _Ints = np.ascontiguousarray(h[:, at : at + 4]).view(">u4")[:, 0].astype(np.int64)
    return value


def _inline_rules(h: _Bytes, lengths: _Ints) -> _Bools:
    """`RecorderCore.receive_frame`'s fast-path test (IPv4 at 14)."""
    udp_end = 34 + _u16(h, 38)
    rules: _Bools = (
        (lengths >= 42)  # first: every index above is inside the frame
        & (h[:, 14] == 0x45)
        & (h[:, 23] == 17)
        & ((h[:, 20] & 0x3F) == 0)
        & (h[:, 21] == 0)
        & (udp_end >= 42)
        & (udp_end <= lengths)
    )
    return rules


def _decoder_rules(h: _Bytes, lengths: _Ints, off: int, tunnel_ports: frozenset[int]) -> _Bools:
    """`NetDecoder.decode`'s fast-path test for IPv4 at `off` (tag or cooked header)."""
    total, ulen = _u16(h, off + 2), _u16(h, off + 24)
    rules: _Bools = (
        (lengths >= off + 28)
        & (h[:, off] == 0x45)
        & (h[:, off + 9] == 17)
        & ((_u16(h, off + 6) & 0x3FFF) == 0)
        & (total >= 28)
        & (total <= lengths - off)
        & (ulen >= 8)
        & (ulen <= total - 20)
        & ~np.isin(_u16(h, off + 22), list(tunnel_ports))
    )
    return rules


def receive_block(core: RecorderCore, block: FrameBlock, start: int = 0) -> None:
    """Feed frames `start:` of `block` to `core`, in order. `core.block_position` names
    the frame being fed one by one, so that a shell can go on after it if it raised."""
    n = len(block)
    core.block_position = start - 1  # nothing handled yet: a shell resumes at `start`
    if block.linktype not in _FAST_LINKTYPES or n - start < _SHORT_RUN or not block.data:
        _one_by_one(core, block, start, n)
        return
    c = _Classified(block, core.tunnel_ports)
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
        if core.orphans.fast:
            _mark_unexplained(core, c, codes, pos)
        slow = (np.flatnonzero(codes == -1) + pos).tolist()
        if due < len(latest) and (not slow or slow[-1] != pos + due):
            slow.append(pos + due)
        # The frames marked UNEXPLAINED stay so until the table changes, or a new flow
        # pushes an old one out of the bounded table of unexplained flows.
        version, evicted, changed = table.version, core.orphans.evicted, False
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
            if (
                table.version != version
                or core.orphans.evicted != evicted
                or core.get_timer() > threshold
            ):
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


def _mark_unexplained(core: RecorderCore, c: _Classified, codes: _Ints, start: int) -> None:
    """Code UNEXPLAINED the frames of flows found unexplained before, while nothing about
    their two ports changed since (`CallTable.port_gen`): the per-frame path would find
    them unexplained again, at about 17 us a packet, and break the runs of known RTP."""
    stop = start + len(codes)
    candidates = np.flatnonzero((codes < 0) & c.unexplainable()[start:stop])
    if not len(candidates):
        return
    fast, gen = core.orphans.fast, core.calls.port_gen
    srcs = c.src[start:stop][candidates].tolist()
    dsts = c.dst[start:stop][candidates].tolist()
    for k, src, dst in zip(candidates.tolist(), srcs, dsts, strict=True):
        flow = fast.get(src << 48 | dst)
        if flow is not None and flow.judged == (gen.get(src & 0xFFFF, 0), gen.get(dst & 0xFFFF, 0)):
            codes[k] = UNEXPLAINED


def _count_unexplained(
    core: RecorderCore, block: FrameBlock, c: _Classified, frames: _Ints
) -> None:
    """What `OrphanStreams.note` and the drop counter do for each of these frames."""
    fast = core.orphans.fast
    for src, dst, t in zip(
        c.src[frames].tolist(), c.dst[frames].tolist(), block.times[frames].tolist(), strict=True
    ):
        flow = fast[src << 48 | dst]  # (Python ints: 96 bits)
        flow.packets += 1
        flow.last_ns = t
    core.stats.drops[("rtp", "unsignalled")] += len(frames)


def _queue(
    core: RecorderCore, block: FrameBlock, c: _Classified, codes: _Ints, start: int, stop: int
) -> None:
    """Queue fast frames start:stop on their calls, as the per-frame fast path would, and
    count those of unexplained flows."""
    if stop - start < _SHORT_RUN:
        _one_by_one(core, block, start, stop)
        return
    unexplained = np.flatnonzero(codes == UNEXPLAINED)
    # Per call side, capture order kept; the unexplained frames (the only negative codes
    # in a run) sort first and are counted apart.
    order = np.argsort(codes, kind="stable")[len(unexplained) :]
    sorted_codes = codes[order]
    bounds = np.flatnonzero(sorted_codes[1:] != sorted_codes[:-1]) + 1
    firsts = [0, *bounds.tolist()] if len(order) else []
    lasts = [*bounds.tolist(), len(order)] if len(order) else []
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
    if len(unexplained):
        _count_unexplained(core, block, c, unexplained + start)
    core.stats.frames += stop - start
