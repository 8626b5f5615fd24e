"""Fixtures shared by every test folder.

Tests that need the capture corpus in ../shared/pcaps or an outside tool (tshark,
sipp) skip with the reason where it is absent (a user's checkout); CI sets
RECORDER_REQUIRE_SHARED=1 and RECORDER_REQUIRE_TOOLS=1, which turn those skips into
failures so that nothing is silently left untested there.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHIPPED_PCAPS = REPO / "pcaps"


def shared_pcaps_dir() -> Path:
    return Path(os.environ.get("RECORDER_SHARED_PCAPS", REPO.parent / "shared" / "pcaps"))


def require_shared() -> Path:
    folder = shared_pcaps_dir()
    if not folder.is_dir():
        reason = f"capture corpus {folder} is absent (set RECORDER_SHARED_PCAPS)"
        if os.environ.get("RECORDER_REQUIRE_SHARED") == "1":
            pytest.fail(reason + " and RECORDER_REQUIRE_SHARED=1")
        pytest.skip(reason)
    return folder


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed"
        if os.environ.get("RECORDER_REQUIRE_TOOLS") == "1":
            pytest.fail(reason + " and RECORDER_REQUIRE_TOOLS=1")
        pytest.skip(reason)
    return path


@pytest.fixture
def shared_pcaps() -> Path:
    return require_shared()


@pytest.fixture
def tshark() -> str:
    return require_tool("tshark")
