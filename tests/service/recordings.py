"""Reading an archive the way an operator does: list --json, verify, export to WAV."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
import wave
from pathlib import Path

import numpy as np

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recorder", *args], capture_output=True, text=True, timeout=60
    )


def recordings(archive: Path) -> list[dict[str, object]]:
    done = cli("list", "--archive", str(archive), "--json")
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, object]] = json.loads(done.stdout)
    return rows


def verify(archive: Path, key: Path) -> str:
    done = cli("verify", "--archive", str(archive), "--key", str(key))
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def export_pcm(archive: Path, key: Path, recording_id: str, out: Path) -> np.ndarray:
    """The recording as an (n, 2) int16 array (caller, callee)."""
    done = cli("export", "--archive", str(archive), "--key", str(key), recording_id, "-o", str(out))
    assert done.returncode == 0, done.stderr
    with wave.open(str(out), "rb") as w:
        assert w.getnchannels() == 2 and w.getsampwidth() == 2
        frames = w.readframes(w.getnframes())
    return np.frombuffer(frames, "<i2").reshape(-1, 2)


def ulaw(data: bytes) -> np.ndarray:
    return np.frombuffer(audioop.ulaw2lin(data, 2), "<i2")


def alaw(data: bytes) -> np.ndarray:
    return np.frombuffer(audioop.alaw2lin(data, 2), "<i2")


def find(channel: np.ndarray, expected: np.ndarray) -> int:
    """Where `expected` starts in `channel` (sample exact), or -1."""
    if len(expected) == 0 or len(channel) < len(expected):
        return -1
    head = expected[:160]
    for start in np.flatnonzero(channel == head[0]):
        if start + len(expected) <= len(channel) and np.array_equal(
            channel[start : start + len(expected)], expected
        ):
            return int(start)
    return -1
