"""The export WAV header, checked against Python's own `wave` reader."""

from __future__ import annotations

import io
import wave

import pytest

from recorder.container.wav import WAV_HEADER_BYTES, wav_header


def test_exact_bytes_for_stereo_8khz() -> None:
    assert wav_header(8000, 2, 1000) == bytes.fromhex(
        "52494646"
        "0c040000"
        "57415645"  # RIFF, 36 + 1000, WAVE
        "666d7420"
        "10000000"
        "0100"
        "0200"  # fmt , 16, PCM, 2 channels
        "401f0000"
        "007d0000"
        "0400"
        "1000"  # 8000 Hz, 32000 B/s, align 4, 16 bits
        "64617461"
        "e8030000"  # data, 1000
    )


@pytest.mark.parametrize(
    ("rate", "channels", "bits", "frames"),
    [
        (8000, 1, 16, 0),
        (8000, 2, 16, 160),
        (16000, 2, 16, 8000),
        (48000, 1, 8, 3),
        (44100, 3, 24, 7),
    ],
)
def test_python_wave_reads_it_back(rate: int, channels: int, bits: int, frames: int) -> None:
    width = bits // 8
    pcm = bytes(i % 256 for i in range(frames * channels * width))
    header = wav_header(rate, channels, len(pcm), bits)
    assert len(header) == WAV_HEADER_BYTES
    pad = b"\x00" * (len(pcm) & 1)
    with wave.open(io.BytesIO(header + pcm + pad), "rb") as w:
        assert w.getnchannels() == channels
        assert w.getsampwidth() == width
        assert w.getframerate() == rate
        assert w.getnframes() == frames
        assert w.readframes(frames) == pcm


def test_odd_data_counts_the_pad_byte() -> None:
    header = wav_header(8000, 1, 3, bits=8)
    assert int.from_bytes(header[4:8], "little") == 36 + 3 + 1
    assert int.from_bytes(header[40:44], "little") == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((8000, 1, 100, 12), "bits per sample"),
        ((8000, 0, 100, 16), "bad channel count"),
        ((0, 1, 100, 16), "bad channel count or sample rate"),
        ((2**32, 1, 100, 16), "bad channel count or sample rate"),
        ((8000, 2, 6, 16), "whole sample frames"),
        ((8000, 1, -2, 16), "whole sample frames"),
        ((8000, 1, 2**32 - 36, 16), "fit a RIFF file"),
    ],
)
def test_bad_parameters(args: tuple[int, int, int, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        wav_header(*args)


def test_largest_riff() -> None:
    header = wav_header(8000, 1, 2**32 - 2 - 36)
    assert int.from_bytes(header[4:8], "little") == 2**32 - 2
