"""Fuzz the capture-file reader (`recorder.runtime.sources`).

Differential: whatever the bytes (a shipped capture with fuzz spliced in, or fuzz alone),
reading the file block by block (16 MiB reads, runs of one record length walked at once,
a record cut by a read re-read after a seek back) must give exactly the frames, the stop
reason and the count that the record-by-record reader gives, for a fuzz-chosen read size
and run-probe setting. Opening may only fail with `CaptureFileError`.
"""

from __future__ import annotations

import os
from pathlib import Path

import _common
import atheris  # type: ignore[import-untyped, import-not-found, unused-ignore]

with atheris.instrument_imports():
    from recorder.runtime import sources
    from recorder.runtime.sources import CaptureFile, CaptureFileError
    from tests.net.capwrite import PCAP_MODIFIED, PCAP_NS, PCAP_US, pcap


def _classic(magic: int, order: str) -> bytes:
    """A classic pcap with runs of one record length (RTP-like) broken by other lengths."""
    lengths = [214] * 40 + [90] + [214] * 7 + [0, 3] + [74] * 30 + [214] * 5
    return pcap([(k, k * 7, bytes([k]) * n) for k, n in enumerate(lengths)], 1, magic, order)


SEEDS = [p.read_bytes()[:6000] for p in sorted((_common.ROOT / "pcaps").glob("*.pcap*"))] + [
    _classic(magic, order)[:9000]
    for magic in (PCAP_US, PCAP_NS, PCAP_MODIFIED)
    for order in ("<", ">")
]
READ_SIZES = (16, 100, 999, 4096, 1 << 20)
PROBES = ((1, 2, 2, 4), (3, 256, 32, 64))  # (wait, wait_max, worth, first probe)
# The capture lives in memory (libFuzzer ends the process with exit(): no clean-up would
# run, and a temporary file would be left behind by every run).
_MEMFD = os.memfd_create("fuzz-capture")
FILE = Path(f"/proc/self/fd/{_MEMFD}")


def read(path: Path) -> tuple[object, ...]:
    capture = CaptureFile(path)
    frames = list(capture)
    one = (frames, capture.truncated, capture.stop_reason, capture.frames)
    blocks = [f for b in capture.blocks() for f in b.frames()]
    return one, (blocks, capture.truncated, capture.stop_reason, capture.frames)


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    sources.BLOCK_BYTES = READ_SIZES[fdp.ConsumeIntInRange(0, len(READ_SIZES) - 1)]
    wait, wait_max, worth, probe = PROBES[fdp.ConsumeIntInRange(0, 1)]
    sources._RUN_WAIT, sources._RUN_WAIT_MAX = wait, wait_max
    sources._RUN_WORTH, sources._RUN_PROBE = worth, probe
    os.ftruncate(_MEMFD, 0)
    os.pwrite(_MEMFD, _common.seeded_input(fdp, SEEDS), 0)
    try:
        one, blocks = read(FILE)
    except CaptureFileError:
        return
    if one != blocks:
        raise AssertionError("blocks and frames differ")


if __name__ == "__main__":
    _common.fuzz(test_one_input)
