"""Audio decoders: G.711 (ITU-T G.711 µ-law and A-law) and G.722.

G.711 is decoded through 256-entry tables built from the ITU-T G.711
expansion rules (the same values as the reference `g711.c` and the retired
`audioop`), applied with one numpy gather per packet. G.722 goes through the
`G722` package (a wrapper of the public-domain, bit-exact libg722); its RTP
clock is 8000 Hz although it carries 16000 samples a second (RFC 3551 §4.5.2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Samples = NDArray[np.int16]


def _ulaw_expand(code: int) -> int:
    # ITU-T G.711 §µ-law: bits are stored inverted; 4-bit mantissa, 3-bit segment.
    u = ~code & 0xFF
    magnitude = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return (0x84 - magnitude) if u & 0x80 else (magnitude - 0x84)


def _alaw_expand(code: int) -> int:
    # ITU-T G.711 §A-law: even bits are inverted (XOR 0x55); segment 0 is linear.
    a = code ^ 0x55
    magnitude = (a & 0x0F) << 4
    segment = (a & 0x70) >> 4
    if segment == 0:
        magnitude += 8
    else:
        magnitude = (magnitude + 0x108) << (segment - 1)
    return magnitude if a & 0x80 else -magnitude


ULAW_TABLE: Samples = np.array([_ulaw_expand(c) for c in range(256)], dtype=np.int16)
ALAW_TABLE: Samples = np.array([_alaw_expand(c) for c in range(256)], dtype=np.int16)


def _pair_table(table: Samples) -> NDArray[np.int32]:
    """Two G.711 bytes at once: entry b0 + 256*b1 holds the samples of b0 then b1 (as the
    memory of two int16), so a block decodes with half as many gathers."""
    codes = np.arange(65536)
    pairs = np.empty((65536, 2), dtype=np.int16)
    pairs[:, 0] = table[codes & 0xFF]
    pairs[:, 1] = table[codes >> 8]
    return pairs.view(np.int32).reshape(65536)


G711_PAIRS = (_pair_table(ULAW_TABLE), _pair_table(ALAW_TABLE))  # by table: 0 µ-law, 1 A-law
G711_TABLES = np.stack([ULAW_TABLE, ALAW_TABLE])


def decode_g711_block(payloads: NDArray[np.uint8], tables: NDArray[np.int64]) -> Samples:
    """Decode a block of G.711 payloads (one packet a row) whose row i uses table
    `tables[i]` (0 µ-law, 1 A-law); gives one row of samples a packet."""
    if payloads.shape[1] % 2:
        odd: Samples = G711_TABLES[tables[:, None], payloads]
        return odd
    pairs = np.ascontiguousarray(payloads).view("<u2")
    first = int(tables[0])
    if (tables == first).all():
        decoded = G711_PAIRS[first][pairs]
    else:
        decoded = np.where(tables[:, None] == 0, G711_PAIRS[0][pairs], G711_PAIRS[1][pairs])
    out: Samples = decoded.view(np.int16)
    return out


def decode_ulaw(payload: bytes) -> Samples:
    return ULAW_TABLE[np.frombuffer(payload, dtype=np.uint8)]


def decode_alaw(payload: bytes) -> Samples:
    return ALAW_TABLE[np.frombuffer(payload, dtype=np.uint8)]


class G722Decoder:
    """A stateful G.722 64 kbit/s decoder; one per RTP stream, fed in arrival order."""

    def __init__(self) -> None:
        import G722  # a C extension: imported lazily so G.711-only use never loads it

        self._codec = G722.G722(16000, 64000)

    def __call__(self, payload: bytes) -> Samples:
        return np.frombuffer(self._codec.decode(payload), dtype=np.int16)


@dataclass(frozen=True, slots=True)
class CodecInfo:
    """How to decode one encoding: its sample rate and a decoder factory (stateful codecs
    need a fresh decoder per stream)."""

    name: str
    sample_rate: int
    rtp_clock: int
    new_decoder: Callable[[], Callable[[bytes], Samples]]


def _stateless(fn: Callable[[bytes], Samples]) -> Callable[[], Callable[[bytes], Samples]]:
    return lambda: fn


# Encodings we turn into PCM, keyed by the upper-case SDP encoding name.
DECODABLE: dict[str, CodecInfo] = {
    "PCMU": CodecInfo("PCMU", 8000, 8000, _stateless(decode_ulaw)),
    "PCMA": CodecInfo("PCMA", 8000, 8000, _stateless(decode_alaw)),
    "G722": CodecInfo("G722", 16000, 8000, G722Decoder),
}

# Payloads that carry no audio to place on the timeline: their time stays silent.
SILENT_ENCODINGS = frozenset({"TELEPHONE-EVENT", "CN"})
# Decoders with state between packets: each packet must reach them once (no copies).
STATEFUL = frozenset({"G722"})
