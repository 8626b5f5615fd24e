"""Placing the queued RTP of many calls at once.

Once a second of capture time, the sweep hands every call's queue here. Packets of one
length from all calls become one numpy block; their RTP headers are read, timestamps
unwrapped per stream with a segmented cumulative sum, G.711 payloads decoded with one
gather, and each stream's samples copied into its side's buffer with one slice
assignment. Per packet this costs a fraction of what numpy's per-call overhead costs on
a single call's fifty packets. Anything unusual for a stream (a new or irregular header,
a codec other than G.711, a rate change, a PCI pause, a clock jump) goes back to the
per-call path (`MediaPath.process`), which the results must equal
(tests/core/test_batch_equivalence.py). A call's first second joins too, once each side's
first packet has anchored its stream on that path (`_anchored`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from recorder.core.calls import Call
from recorder.core.media.codecs import STATEFUL, CodecInfo, decode_g711_block
from recorder.core.media.timeline import NS_PER_S

if TYPE_CHECKING:
    from recorder.core.media_path import MediaPath

CHUNK_PACKETS = 8192  # packets placed per numpy pass (about 10 MiB of index temporaries)
_TABLE_OF = {"PCMU": 0, "PCMA": 1}
# Stateful codecs (codecs.STATEFUL) placed here too, decoded stream by stream (each packet
# once, in arrival order, as on the per-call path): their samples per payload byte.
_SAMPLES_PER_BYTE = {"G722": 2}
_BATCHED = _TABLE_OF.keys() | _SAMPLES_PER_BYTE.keys()


@dataclass(slots=True)
class _Stream:
    call: Call
    sender: int
    times: list[int]
    datas: list[bytes]


def place_calls(path: MediaPath, calls: Iterable[Call]) -> None:
    """Place every queued packet of `calls` (their queues are emptied)."""
    by_length: dict[int, list[_Stream]] = {}
    for call in calls:
        if not _batchable(call, path) or not (call.recording_open or _anchored(path, call)):
            path.process(call)
            continue
        times_q, datas_q = call.pending_times, call.pending_datas
        call.pending_times, call.pending_datas = ([], []), ([], [])
        for sender in (0, 1):
            datas = datas_q[sender]
            if not datas:
                continue
            length = len(datas[0])
            if length > 12 and list(map(len, datas)).count(length) == len(datas):
                stream = _Stream(call, sender, times_q[sender], datas)
                by_length.setdefault(length, []).append(stream)
            else:
                path.process_side(call, sender, times_q[sender], datas)
    for length, streams in by_length.items():
        chunk: list[_Stream] = []
        packets = 0
        for stream in streams:  # bounded chunks: numpy's temporaries grow with the batch
            chunk.append(stream)
            packets += len(stream.datas)
            if packets >= CHUNK_PACKETS:
                _place(path, chunk, length)
                chunk, packets = [], 0
        if chunk:
            _place(path, chunk, length)


def _batchable(call: Call, path: MediaPath) -> bool:
    """Calls whose recording runs plainly; the rest take the per-call path."""
    if not call.pending_times[0] and not call.pending_times[1]:
        return False
    return (
        call.decision.record
        and not call.stopped
        and call.paused_since_ns is None
        and not call.pause_windows
        and path.dtmf_listener is None
    )


def _anchored(path: MediaPath, call: Call) -> bool:
    """A call's first audio (its recording not open yet): each side's first packet is
    placed as the per-call path places it (a new stream's first packet anchors it), so
    that the rest of its first second joins the batch instead of costing numpy's per-call
    overhead (with calls of a few seconds that was most of the placing). True when the
    recording is open and packets remain for the batch; else the per-call path places
    what remains. Nothing is placed here where that path must see a side's whole queue:
    packets of several lengths, a copy of the first packet (that path drops it as a
    duplicate before anchoring), a stream that is not new, or a first packet that is not
    audio decoded here."""
    times_q, datas_q = call.pending_times, call.pending_datas
    timeline = call.timeline
    for sender, datas in enumerate(datas_q):
        if datas:
            first = datas[0]
            length, key = len(first), first[2:8]
            if length <= 12 or list(map(len, datas)).count(length) != len(datas):
                return False
            if any(d[2:8] == key for d in itertools.islice(datas, 1, None)):
                return False
            ssrc = int.from_bytes(first[8:12], "big")
            if timeline is not None and timeline.sides[sender].ssrc == ssrc:
                return False
            # Audio this batch decodes; raw RTP is kept in the order the per-call path
            # keeps it (one side's whole queue, then the other's).
            mapping = call.encoding_for(1 - sender, first[1] & 0x7F)
            if mapping is None or mapping[0] not in _BATCHED or 1 - sender in call.srtp_sides:
                return False
    path.note_first_rtp(call, times_q, datas_q)
    for sender in (0, 1):
        if datas_q[sender]:
            path.process_side(call, sender, times_q[sender][:1], datas_q[sender][:1])
            del times_q[sender][0], datas_q[sender][0]
    return call.recording_open and bool(times_q[0] or times_q[1])


def _place(path: MediaPath, streams: list[_Stream], length: int) -> None:
    counts = [len(s.datas) for s in streams]
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    total = sum(counts)
    block = np.frombuffer(
        b"".join(itertools.chain.from_iterable(s.datas for s in streams)), dtype=np.uint8
    ).reshape(total, length)
    times = np.fromiter(
        itertools.chain.from_iterable(s.times for s in streams), dtype=np.int64, count=total
    )
    gid = np.repeat(np.arange(len(streams)), counts)
    head, kind = block[:, 0], block[:, 1] & 0x7F
    ssrc = block[:, 8:12].copy().view(">u4").ravel()
    odd = (head != 0x80) | ((kind >= 72) & (kind <= 76))  # not plain RTP, or RTCP
    irregular = (
        np.maximum.reduceat(odd, starts)
        | (np.minimum.reduceat(kind, starts) != np.maximum.reduceat(kind, starts))
        | (np.minimum.reduceat(ssrc, starts) != np.maximum.reduceat(ssrc, starts))
    ).tolist()
    ts32 = block[:, 4:8].copy().view(">u4").ravel().astype(np.int64)
    params = np.zeros((10, len(streams)), dtype=np.int64)  # per stream, filled below
    params[5] = 1  # clock, never zero
    chosen: list[int] = []
    stateful: dict[int, CodecInfo] = {}  # stream -> its stateful codec
    starts_l, kinds_l = starts.tolist(), kind[starts].tolist()
    ssrc_l = ssrc[starts].tolist()
    for g, stream in enumerate(streams):
        a, b = starts_l[g], starts_l[g] + counts[g]
        if irregular[g]:
            path.process_side(stream.call, stream.sender, stream.times, stream.datas)
            continue
        path.count_rtp(counts[g])
        found = path.codec(stream.call, stream.sender, kinds_l[g], counts[g])
        if isinstance(found, str):
            path.keep_raw(stream.call, stream.sender, found, stream.times, stream.datas)
            continue
        if found is None:
            continue
        encoding, clock, codec = found
        timeline = stream.call.timeline
        assert timeline is not None
        if (
            codec is None
            or (encoding not in _TABLE_OF and encoding not in _SAMPLES_PER_BYTE)
            or codec.sample_rate != timeline.sample_rate
        ):
            path.run(stream.call, stream.sender, times[a:b], block[a:b], count=False)
            continue
        side = timeline.sides[stream.sender]
        if ssrc_l[g] != side.ssrc:  # a new stream: the per-packet rules anchor it
            path.run(stream.call, stream.sender, times[a:b], block[a:b], count=False)
            continue
        params[:, g] = (
            side.anchor,
            side.first_ext,
            side.last_ts,
            side.last_ext,
            timeline.origin_ns,
            clock,
            timeline.sample_rate,
            _TABLE_OF.get(encoding, 0),
            timeline.max_drift,
            (length - 12) * _SAMPLES_PER_BYTE.get(encoding, 1),  # samples a packet
        )
        if encoding in STATEFUL:
            stateful[g] = codec
        chosen.append(g)
    if not chosen:
        return
    anchor, first_ext, _last_ts, last_ext, origin, clock, rate, table, drift, width = (
        params[k][gid] for k in range(10)
    )
    prev = np.empty_like(ts32)
    prev[1:] = ts32[:-1]
    prev[starts] = params[2]
    deltas = (ts32 - prev) & 0xFFFFFFFF
    deltas[deltas >= 0x80000000] -= 0x100000000
    running = np.cumsum(deltas)
    base = np.repeat(running[starts] - deltas[starts], counts)
    ext = last_ext + running - base
    positions = anchor + (ext - first_ext) * rate // clock
    grid = ((times - origin) * rate + NS_PER_S // 2) // NS_PER_S
    stray = np.maximum.reduceat(np.abs(positions - grid) > drift, starts)
    keys = (block[:, 2].astype(np.int64) << 40) | (block[:, 3].astype(np.int64) << 32) | ts32
    order = np.lexsort((keys, gid))  # stable: among copies, the first to arrive comes first
    same = (keys[order][1:] == keys[order][:-1]) & (gid[order][1:] == gid[order][:-1])
    duplicates = np.bincount(gid[order][1:][same], minlength=len(streams)).tolist()
    copy = np.zeros(total, dtype=bool)  # later copies of a packet: the first copy wins
    copy[order[1:][same]] = True
    # G.711 rows decoded with one gather (those of stateful codecs are decoded below).
    samples = decode_g711_block(block[:, 12:], table) if len(stateful) < len(chosen) else None
    step = np.ones(total, dtype=bool)
    step[1:] = positions[1:] - positions[:-1] == width[1:]
    step[starts] = True
    contiguous = np.minimum.reduceat(step, starts).tolist()
    stray_l = stray.tolist()
    latest = np.maximum.reduceat(times, starts).tolist()
    max_ext = np.maximum.reduceat(ext, starts).tolist()
    for g in chosen:
        stream = streams[g]
        a, b = starts_l[g], starts_l[g] + counts[g]
        call, timeline = stream.call, stream.call.timeline
        assert timeline is not None
        codec = stateful.get(g)
        side = timeline.sides[stream.sender]
        if stray_l[g] or (codec is not None and (duplicates[g] or side.seen(keys[a:b]).any())):
            # The RTP clock jumped: the per-call path re-anchors packet by packet; or a
            # stateful decoder would see a copy: the per-call path drops copies first.
            path.run(call, stream.sender, times[a:b], block[a:b], count=False)
            continue
        side.last_ts, side.last_ext = int(ts32[b - 1]), int(ext[b - 1])
        side.max_ext = max(side.max_ext, max_ext[g])
        side.strays = 0
        side.remember(keys[a:b])
        side.stats.packets += b - a
        side.stats.duplicates += duplicates[g]
        call.last_rtp_ns = max(call.last_rtp_ns, latest[g])
        if codec is None:
            assert samples is not None
            pcm = samples[a:b]
        else:  # each packet once, in arrival order (no copies: checked above)
            pcm = side.decoder(codec)(block[a:b, 12:].tobytes()).reshape(b - a, -1)
        offset = int(positions[a]) - timeline.cursor
        if contiguous[g] and offset >= 0 and not duplicates[g]:
            timeline.write_contiguous(side, offset, pcm.ravel())
        else:
            keep = ~copy[a:b]
            timeline.write(side, positions[a:b][keep], pcm[keep])
