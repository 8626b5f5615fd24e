"""The 44-byte RIFF/WAVE header for PCM, built at export time.

Recordings store bare PCM: a WAV header's sizes are only known at the end, and an
append-only authenticated stream cannot patch them. Export prepends this header,
computed from the authenticated metadata and the verified plaintext length.
"""

from __future__ import annotations

import struct

WAV_HEADER_BYTES = 44
_WAVE_FORMAT_PCM = 1
_MAX_DATA = 0xFFFFFFFE - 36  # RIFF sizes are u32; longer exports need splitting (or RF64)


def wav_header(sample_rate: int, channels: int, data_bytes: int, bits: int = 16) -> bytes:
    """A canonical PCM WAV header for `data_bytes` of interleaved little-endian samples.
    An odd `data_bytes` (8-bit mono only) counts a pad byte the caller appends after the data."""
    if bits not in (8, 16, 24, 32):
        raise ValueError("bits per sample must be 8, 16, 24 or 32")
    if not 1 <= channels <= 0xFFFF or not 1 <= sample_rate <= 0xFFFFFFFF:
        raise ValueError("bad channel count or sample rate")
    block_align = channels * bits // 8
    byte_rate = sample_rate * block_align
    if block_align > 0xFFFF or byte_rate > 0xFFFFFFFF:
        raise ValueError("bad channel count or sample rate")
    if not 0 <= data_bytes <= _MAX_DATA or data_bytes % block_align:
        raise ValueError("data size must be whole sample frames and fit a RIFF file")
    # An odd data chunk gets a pad byte (RIFF); only possible for 8-bit mono.
    pad = data_bytes & 1
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + data_bytes + pad,
        b"WAVE",
        b"fmt ",
        16,
        _WAVE_FORMAT_PCM,
        channels,
        sample_rate,
        byte_rate,
        block_align,
        bits,
        b"data",
        data_bytes,
    )
