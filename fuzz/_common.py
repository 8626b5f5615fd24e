"""Shared set-up for the atheris harnesses: import path, seed inputs and the fuzz loop.

Run a harness from the repository root, e.g. `python fuzz/fuzz_sip.py -runs=20000`.
Invariant of every harness (h11's): the parser returns a value or raises
`recorder.errors.DecodeError` with a documented reason, never anything else.
"""

from __future__ import annotations

import operator
import sys
from collections.abc import Callable
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


def fuzz(test_one_input: Callable[[bytes], None]) -> None:
    """`atheris.Setup` and `atheris.Fuzz`, with numpy array comparisons kept out of
    atheris's comparison tracing. atheris 3.0's `_trace_cmp` leaks a comparison's result
    when it is not a bool: about 0.5 KB a run for one `array == value`, so a harness over
    the numpy fast paths ended in libFuzzer's out-of-memory (2 GB) after about 70,000 runs,
    a leak of the fuzzer's, not of the recorder (the same inputs without instrumentation
    kept 58 MB). Arrays were never worth tracing: libFuzzer learns from numbers, bytes and
    strings."""
    import atheris  # type: ignore[import-untyped, import-not-found, unused-ignore]
    import numpy as np
    from atheris import instrument_bytecode  # type: ignore[import-untyped, import-not-found, unused-ignore]

    shift = getattr(instrument_bytecode, "CMP_OP_SHIFT_AMOUNT", 0)  # 0 before Python 3.12

    ops = (operator.lt, operator.le, operator.eq, operator.ne, operator.gt, operator.ge)
    patched = False

    def one_input(data: bytes) -> None:
        nonlocal patched
        if not patched:  # `atheris.Fuzz` binds its own `_trace_cmp` as it starts
            patched = True
            native = atheris._trace_cmp

            def trace_cmp(a: Any, b: Any, op: int, counter: int, is_const: bool) -> Any:
                if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                    return ops[op >> shift](a, b)
                return native(a, b, op, counter, is_const)

            atheris._trace_cmp = trace_cmp
        test_one_input(data)

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
