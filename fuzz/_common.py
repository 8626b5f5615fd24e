"""Shared set-up for the atheris harnesses: import path and seed inputs.

Run a harness from the repository root, e.g. `python fuzz/fuzz_sip.py -runs=20000`.
Invariant of every harness (h11's): the parser returns a value or raises
`recorder.errors.DecodeError` with a documented reason, never anything else.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def splice(seed: bytes, pos: int, cut: int, insert: bytes) -> bytes:
    """`seed` with `cut` bytes at `pos` replaced by `insert`."""
    pos = min(pos, len(seed))
    return seed[:pos] + insert + seed[pos + cut :]
