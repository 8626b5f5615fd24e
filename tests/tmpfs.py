"""A small tmpfs for tests that need a file system to fill up (mounting needs root)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def mounted_tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """`folder` (existing) as a tmpfs of `size` (as mount takes it: "4m"); the test is
    skipped with the reason where it cannot be mounted, and fails there in CI."""
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        reason = f"cannot mount a tmpfs here: {done.stderr.strip()}"
        if os.environ.get("RECORDER_REQUIRE_TOOLS") == "1":  # CI runs as root: must mount
            pytest.fail(f"{reason} and RECORDER_REQUIRE_TOOLS=1")
        pytest.skip(reason)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
