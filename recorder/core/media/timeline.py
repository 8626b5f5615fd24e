"""One call's two sides placed on one sample grid, emitted as interleaved stereo PCM.

Rules (the recording's timeline contract):
- sample 0 is the capture time of the call's first RTP packet (either side);
- each side is anchored at the capture time of its first packet, then placed by its
  RTP timestamps, so loss leaves silence, a duplicate lands on the same samples and a
  reordered packet goes back to its place;
- a new SSRC re-anchors the side at the capture time of its first packet; so does a
  timestamp jump: a packet straying from the capture clock by more than `max_drift_s`
  that is the newest so far, or the third stray in a row (a lone straggler is dropped);
- audio is held for `jitter_s` behind the capture clock before it is emitted; a packet
  older than what was already emitted is counted late and dropped;
- the recording ends with the end of the last packet placed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from recorder.core.media.codecs import CodecInfo, Samples

Positions = NDArray[np.int64]  # grid sample of each packet's first sample
Block = NDArray[np.int16]  # one row of samples per packet

NS_PER_S = 1_000_000_000
_DUP_WINDOW = 512  # packets remembered per side to recognise duplicates (10 s at 20 ms)
CONFIRM_JUMP = 3  # stray packets in a row that prove a timestamp jump, not lateness


@dataclass(slots=True)
class SideStats:
    packets: int = 0
    duplicates: int = 0
    late: int = 0
    reanchors: int = 0
    ssrc_changes: int = 0
    resampled: int = 0


class SideTimeline:
    """One direction of audio: where its RTP timestamps fall on the call's grid."""

    __slots__ = (
        "_decoders",
        "_seen",
        "_seen_at",
        "anchor",
        "buffer",
        "end",
        "first_ext",
        "last_ext",
        "last_ts",
        "max_ext",
        "ssrc",
        "stats",
        "strays",
    )

    def __init__(self) -> None:
        self.ssrc: int | None = None
        self.anchor = 0  # grid sample of the anchor packet
        self.first_ext = 0  # extended RTP timestamp of the anchor packet
        self.last_ts = 0
        self.last_ext = 0
        self.max_ext = 0  # newest extended timestamp placed
        self.strays = 0  # stray packets in a row (see CallTimeline._position)
        self.buffer = np.zeros(0, dtype=np.int16)  # samples from the call's cursor onwards
        self.end = 0  # grid sample just after the last placed audio
        # A ring of the last packets' (sequence << 32 | timestamp): 4 KiB, not a set of ints.
        self._seen = np.full(_DUP_WINDOW, -1, dtype=np.int64)
        self._seen_at = 0
        self._decoders: dict[str, Callable[[bytes], Samples]] = {}
        self.stats = SideStats()

    def decoder(self, codec: CodecInfo) -> Callable[[bytes], Samples]:
        dec = self._decoders.get(codec.name)
        if dec is None:
            dec = self._decoders[codec.name] = codec.new_decoder()
        return dec

    def is_duplicate(self, seq: int, ts: int) -> bool:
        key = (seq << 32) | ts
        if (self._seen == key).any():
            self.stats.duplicates += 1
            return True
        self._seen[self._seen_at] = key
        self._seen_at = (self._seen_at + 1) % _DUP_WINDOW
        return False

    def seen(self, keys: NDArray[np.int64]) -> NDArray[np.bool_]:
        """Which of these packets (seq << 32 | ts) were placed before: copies."""
        if not len(keys) or keys.min() > self._seen.max():  # all newer: the usual case
            return np.zeros(len(keys), dtype=bool)
        ring = np.sort(self._seen)  # (np.isin costs several times more on 512 keys)
        at = np.minimum(np.searchsorted(ring, keys), len(ring) - 1)
        found: NDArray[np.bool_] = ring[at] == keys
        return found

    def remember(self, keys: NDArray[np.int64]) -> None:
        """Note packets placed by a batched path, so later copies count as duplicates."""
        keys = keys[-_DUP_WINDOW:]
        at = (self._seen_at + np.arange(len(keys))) % _DUP_WINDOW
        self._seen[at] = keys
        self._seen_at = (self._seen_at + len(keys)) % _DUP_WINDOW

    def reanchor(self, ssrc: int, ts: int, grid_now: int) -> None:
        if self.ssrc is not None:
            if ssrc != self.ssrc:
                self.stats.ssrc_changes += 1
                self._seen.fill(-1)  # a new stream: its numbers say nothing of the old
            else:
                self.stats.reanchors += 1
        self.ssrc = ssrc
        self.anchor = grid_now
        self.last_ts = ts
        self.last_ext = self.first_ext = self.max_ext = ts
        self.strays = 0


class CallTimeline:
    """Both sides of a call; `place` audio, `flush_until` / `finish` to get stereo PCM."""

    def __init__(
        self,
        origin_ns: int,
        sample_rate: int,
        *,
        jitter_s: float = 1.0,
        max_drift_s: float = 3.0,
    ) -> None:
        self.origin_ns = origin_ns
        self.sample_rate = sample_rate
        self.cursor = 0  # grid samples already emitted
        self.sides = (SideTimeline(), SideTimeline())
        self.jitter_samples = int(jitter_s * sample_rate)
        self.max_drift = int(max_drift_s * sample_rate)

    def grid_at(self, now_ns: int) -> int:
        """The grid sample that the capture clock `now_ns` corresponds to (rounded)."""
        return ((now_ns - self.origin_ns) * self.sample_rate + NS_PER_S // 2) // NS_PER_S

    def _position(
        self, side: SideTimeline, now_ns: int, ssrc: int, ts: int, clock: int
    ) -> int | None:
        """Grid sample where this packet's first sample belongs, or None for a straggler
        (dropped, counted late). A packet whose RTP time strays from the capture clock by
        more than `max_drift` is a timestamp jump when it is the newest so far, or when
        `CONFIRM_JUMP` stray packets come in a row: the side re-anchors there."""
        grid_now = self.grid_at(now_ns)
        if ssrc != side.ssrc:
            side.reanchor(ssrc, ts, grid_now)
            return grid_now
        delta = (ts - side.last_ts) & 0xFFFFFFFF
        if delta >= 0x80000000:
            delta -= 0x100000000
        ext = side.last_ext + delta
        pos = side.anchor + (ext - side.first_ext) * self.sample_rate // clock
        if abs(pos - grid_now) <= self.max_drift:
            side.strays = 0
            side.last_ts, side.last_ext = ts, ext
            side.max_ext = max(side.max_ext, ext)
            return pos
        side.strays += 1
        if ext > side.max_ext or side.strays >= CONFIRM_JUMP:
            side.reanchor(ssrc, ts, grid_now)
            return grid_now
        side.stats.late += 1
        return None

    def positions(
        self, side_no: int, times: Positions, ssrc: int, ts32: Positions, clock: int
    ) -> Positions | None:
        """Grid positions of a run of packets of one SSRC, in arrival order, when none of
        them needs a decision of `_position` (a new SSRC, a stray); else None, and the
        caller places the run packet by packet. The side's clock moves only on success."""
        side = self.sides[side_no]
        if ssrc != side.ssrc:
            return None
        grid = ((times - self.origin_ns) * self.sample_rate + NS_PER_S // 2) // NS_PER_S
        deltas = np.diff(ts32, prepend=side.last_ts) & 0xFFFFFFFF
        deltas[deltas >= 0x80000000] -= 0x100000000
        ext = side.last_ext + np.cumsum(deltas)
        pos = side.anchor + (ext - side.first_ext) * self.sample_rate // clock
        if (np.abs(pos - grid) > self.max_drift).any():
            return None
        side.strays = 0
        side.last_ts, side.last_ext = int(ts32[-1]), int(ext[-1])
        side.max_ext = max(side.max_ext, int(ext.max()))
        return pos

    def track(self, side_no: int, now_ns: int, ssrc: int, seq: int, ts: int, clock: int) -> None:
        """Follow a packet that carries no audio (DTMF, comfort noise): its time stays silent."""
        side = self.sides[side_no]
        side.stats.packets += 1
        if not side.is_duplicate(seq, ts):
            self._position(side, now_ns, ssrc, ts, clock)

    def place(
        self,
        side_no: int,
        now_ns: int,
        ssrc: int,
        seq: int,
        ts: int,
        codec: CodecInfo,
        payload: bytes,
    ) -> None:
        """Decode one RTP payload and write it at its place on the grid."""
        side = self.sides[side_no]
        side.stats.packets += 1
        if side.is_duplicate(seq, ts):
            return
        pos = self._position(side, now_ns, ssrc, ts, codec.rtp_clock)
        if pos is None:
            return
        samples = side.decoder(codec)(payload)
        if codec.sample_rate != self.sample_rate:
            samples = resample(samples, codec.sample_rate, self.sample_rate)
            side.stats.resampled += 1
        self.write(side, np.array([pos], dtype=np.int64), samples.reshape(1, -1))

    def write(self, side: SideTimeline, positions: Positions, samples: Block) -> None:
        """Write packets' samples (one row per packet) at their grid positions; what falls
        before the cursor (already emitted) is dropped and counted late."""
        width = samples.shape[1]
        offsets = positions - self.cursor
        late = offsets + width <= 0
        if late.any():
            side.stats.late += int(late.sum())
            keep = ~late
            offsets, samples = offsets[keep], samples[keep]
            if not len(offsets):
                return
        index = offsets[:, None] + np.arange(width)
        if offsets.min() < 0:  # partly late: only the samples still ahead of the cursor
            inside = index >= 0
            index, samples = index[inside], samples[inside]
        stop = int(index.max()) + 1
        _reserve(side, stop)
        side.buffer[index] = samples
        side.end = max(side.end, self.cursor + stop)

    def write_contiguous(self, side: SideTimeline, offset: int, samples: Samples) -> None:
        """Write samples that follow each other, `offset` samples past the cursor."""
        stop = offset + len(samples)
        _reserve(side, stop)
        side.buffer[offset:stop] = samples
        side.end = max(side.end, self.cursor + stop)

    def due_sample(self, now_ns: int) -> int:
        """How far audio can be emitted at capture time `now_ns` (held back by the jitter
        window)."""
        return self.grid_at(now_ns) - self.jitter_samples

    def flush_until(self, target: int) -> bytes | bytearray:
        """Emit interleaved stereo s16le for grid samples [cursor, target)."""
        count = target - self.cursor
        if count <= 0:
            return b""
        # Filled in place and handed over as it is: a bytes copy of every second of every
        # call cost more than the interleaving itself (the caller owns it from here).
        pcm = bytearray(count * 4)
        out = np.frombuffer(pcm, dtype="<i2").reshape(count, 2)
        for channel, side in enumerate(self.sides):
            buf = side.buffer
            out[: min(count, len(buf)), channel] = buf[:count]
            if count >= len(buf):
                buf[:] = 0
            else:  # keep the array: move what is left to its front, silence behind it
                rest = len(buf) - count
                buf[:rest] = buf[count:]
                buf[rest:] = 0
        self.cursor = target
        return pcm

    def end_sample(self) -> int:
        return max(self.sides[0].end, self.sides[1].end)

    def finish(self) -> bytes | bytearray:
        """Emit everything up to the end of the last packet placed."""
        return self.flush_until(self.end_sample())


def resample(samples: Block, src_rate: int, dst_rate: int) -> Block:
    """Integer-ratio rate change (along the last axis) for calls that mix 8 kHz and 16 kHz
    codecs: each sample repeated, or each pair averaged."""
    if src_rate * 2 == dst_rate:
        up: Block = np.repeat(samples, 2, axis=-1)
        return up
    if src_rate == dst_rate * 2:
        even = samples.shape[-1] // 2 * 2
        pairs = samples[..., :even].astype(np.int32).reshape(*samples.shape[:-1], -1, 2)
        down: Block = (pairs.sum(axis=-1) // 2).astype(np.int16)
        return down
    raise ValueError(f"no resampler from {src_rate} Hz to {dst_rate} Hz")


def _reserve(side: SideTimeline, size: int) -> None:
    """Grow a side's buffer (by doubling) to hold `size` samples past the cursor."""
    if len(side.buffer) < size:
        grown = np.zeros(max(size, 2 * len(side.buffer)), dtype=np.int16)
        grown[: len(side.buffer)] = side.buffer
        side.buffer = grown
