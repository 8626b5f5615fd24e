"""Run each atheris harness in fuzz/ briefly: it must finish its runs without a crash.

RECORDER_FUZZ_RUNS sets the number of runs (default 2000); skipped without atheris.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Every harness in fuzz/, so that a new one is run here without being listed.
HARNESSES = sorted(p.name for p in (REPO / "fuzz").glob("fuzz_*.py"))


def test_every_harness_is_found() -> None:
    assert "fuzz_frame.py" in HARNESSES and "fuzz_capture.py" in HARNESSES


@pytest.mark.parametrize("harness", HARNESSES)
def test_harness_runs_clean(harness: str, tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    runs = os.environ.get("RECORDER_FUZZ_RUNS", "2000")
    result = subprocess.run(
        [sys.executable, str(REPO / "fuzz" / harness), f"-runs={runs}", "-seed=1"],
        cwd=tmp_path,  # crash artefacts, if any, land here rather than in the checkout
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"Done {runs} runs" in result.stderr
