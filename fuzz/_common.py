"""Shared set-up for the atheris harnesses: import path and seed inputs.

Run a harness from the repository root, e.g. `python fuzz/fuzz_sip.py -runs=20000`.
Invariant of every harness (h11's): the parser returns a value or raises
`recorder.errors.DecodeError` with a documented reason, never anything else.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def splice(seed: bytes, pos: int, cut: int, insert: bytes) -> bytes:
    """`seed` with `cut` bytes at `pos` replaced by `insert`."""
    pos = min(pos, len(seed))
    return seed[:pos] + insert + seed[pos + cut :]


def seeded_input(fdp: Any, seeds: list[bytes]) -> bytes:
    """Mode 0: raw bytes. Modes 1-2: fuzz bytes spliced into a valid seed (mode 2 also cuts
    up to 64 bytes of the seed). `fdp` is an atheris.FuzzedDataProvider."""
    mode = fdp.ConsumeIntInRange(0, 2)
    if mode == 0:
        return bytes(fdp.ConsumeBytes(fdp.remaining_bytes()))
    seed = seeds[fdp.ConsumeIntInRange(0, len(seeds) - 1)]
    pos = fdp.ConsumeIntInRange(0, len(seed))
    cut = fdp.ConsumeIntInRange(0, 64) if mode == 2 else 0
    return splice(seed, pos, cut, fdp.ConsumeBytes(fdp.remaining_bytes()))
