"""Locate the shared capture corpus (../shared/pcaps next to the checkout).

Absent corpus: the tests skip, unless RECORDER_REQUIRE_SHARED=1 turns that into
a failure (CI sets it so a missing corpus cannot pass silently).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_PCAPS = Path(__file__).resolve().parents[2].parent / "shared" / "pcaps"


def shared_captures() -> list[Path]:
    """Every pcap/pcapng file in the corpus (sub-folders included), sorted; [] if absent."""
    if not SHARED_PCAPS.is_dir():
        return []
    return sorted(p for p in SHARED_PCAPS.rglob("*") if p.suffix in (".pcap", ".pcapng"))


def require_shared_corpus() -> None:
    """Skip (or fail, with RECORDER_REQUIRE_SHARED=1) when the corpus is missing."""
    if shared_captures():
        return
    message = f"shared capture corpus not found at {SHARED_PCAPS}"
    if os.environ.get("RECORDER_REQUIRE_SHARED") == "1":
        pytest.fail(message + " (RECORDER_REQUIRE_SHARED=1)")
    pytest.skip(message + "; set RECORDER_REQUIRE_SHARED=1 to make this a failure")
