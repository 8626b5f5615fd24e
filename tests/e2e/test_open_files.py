"""Every recording being written holds its file open, so the limit on open files caps the
calls recorded at once; systemd's default soft limit for a service, and many shells', is
1,024. The recorder raises its soft limit to the hard one. Where it cannot, it refuses the
calls beyond the limit, each with an index entry and an audit record saying why, and
records every other call whole; the process never stops for it (it used to end with
EMFILE at the first call over the limit, losing every call then open)."""

from __future__ import annotations

import errno
import json
import os
import re
import resource
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from recorder.config import Config
from recorder.container.masterkey import MasterKey
from recorder.core.events import RecordingAudio, RecordingEnded, RecordingStarted
from recorder.runtime.keystore import KeyStore
from recorder.runtime.session import ArchiveSession
from tests.service.recordings import export_pcm, recordings, verify

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from loadgen import generate

CALLS = 300
T0 = 1_700_000_000 * 10**9


def replay(
    capture: Path, archive: Path, nofile: tuple[int, int]
) -> subprocess.CompletedProcess[str]:
    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

    key = archive.with_suffix(".key")
    args = ["replay", "--dev-key", "--archive", str(archive), "--key", str(key), str(capture)]
    return subprocess.run(
        [sys.executable, "-m", "recorder", *args],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limited,
    )


def unrecorded(archive: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(archive / "index.sqlite") as db:
        return list(db.execute("SELECT outcome, reason FROM calls"))


def audit_events(archive: Path, name: str) -> list[dict[str, object]]:
    lines = (archive / "audit" / "audit.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == name]


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("load") / "calls.pcap"
    generate(path, CALLS, 2.0)  # all 300 calls begin within 20 ms
    return path


def test_a_low_soft_limit_is_raised_and_every_call_is_recorded(
    capture: Path, tmp_path: Path
) -> None:
    """Soft 256 (what 300 calls overflow), hard 1,024: raised to 1,024, room for 896."""
    archive = tmp_path / "archive"
    done = replay(capture, archive, (256, 1024))
    assert done.returncode == 0, done.stderr
    assert "warning: open files are limited to 1,024" in done.stderr  # raised, still < 10,000
    assert len(recordings(archive)) == CALLS and unrecorded(archive) == []


def test_under_a_hard_limit_the_calls_beyond_it_are_refused_and_the_rest_recorded(
    capture: Path, tmp_path: Path
) -> None:
    archive = tmp_path / "archive"
    done = replay(capture, archive, (256, 256))
    assert done.returncode == 0, done.stderr  # before: OSError EMFILE, no summary
    assert "warning: open files are limited to 256" in done.stderr
    rows = recordings(archive)
    refused = unrecorded(archive)
    assert len(rows) == 256 - 128 and len(rows) + len(refused) == CALLS
    assert {outcome for outcome, _ in refused} == {"refused"}
    assert "limit on open files allows 128 recordings" in refused[0][1]
    assert f"calls not recorded {len(refused)}\n  refused" in done.stdout
    assert len(audit_events(archive, "recording.refused")) == len(refused)
    assert {r["state"] for r in rows} == {"closed"}  # whole, sealed, none recovered
    verify(archive, archive.with_suffix(".key"))
    pcm = export_pcm(archive, archive.with_suffix(".key"), str(rows[0]["id"]), tmp_path / "a.wav")
    assert len(pcm) == 2 * 8000  # two seconds of both sides


def test_a_file_that_cannot_be_created_fails_that_call_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Other causes of a failed create (no inode left, say) fail that call, not the writer."""
    session = ArchiveSession(tmp_path / "a", MasterKey.from_secret(bytes(32)), "t", Config())
    writer = session.writer
    real_open = os.open
    creates: list[str] = []

    def no_inode_for_c2(path: str, flags: int, mode: int = 0o777) -> int:
        if str(path).endswith(".partial"):
            if path not in creates:
                creates.append(path)
            if creates.index(path) == 1:  # the second call's file
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", no_inode_for_c2)
    for serial in (1, 2, 3):
        writer.handle(RecordingStarted(serial, f"c{serial}", "a", "b", T0, 8000, 2))
    monkeypatch.undo()
    for serial in (1, 2, 3):
        writer.handle(RecordingAudio(serial, bytes(32000)))
        writer.handle(RecordingEnded(serial, T0 + 10**9, "bye", ("PCMU",)))
    writer.commit()
    session.close()
    assert (writer.stats.opened, writer.stats.closed, writer.stats.failed) == (2, 2, 1)
    assert unrecorded(tmp_path / "a") == [
        ("failed", "cannot create the recording's file: No space left on device")
    ]
    (failure,) = audit_events(tmp_path / "a", "recording.failed")
    assert "No space left" in str(failure["reason"])
    rows = recordings(tmp_path / "a")
    assert sorted(str(r["call_id"]) for r in rows) == ["c1", "c3"]
    with KeyStore(tmp_path / "a" / "keys.sqlite") as keys:  # no key left for the failed call
        assert sorted(keys.recording_ids()) == sorted(str(r["id"]) for r in rows)


def test_the_shipped_unit_allows_ten_thousand_concurrent_recordings() -> None:
    from recorder.runtime.fdlimit import ENOUGH_CALLS, RESERVED

    unit = (Path(__file__).resolve().parents[2] / "systemd" / "recorder.service").read_text()
    (value,) = re.findall(r"^LimitNOFILE=(\d+)$", unit, re.MULTILINE)
    assert int(value) - RESERVED >= ENOUGH_CALLS


def test_the_shipped_unit_never_stops_restarting() -> None:
    """A capture device that goes away makes `run` exit 1; systemd's default start limit
    (5 starts in 10 s) would then give up for good, and a device that comes back would not
    be recorded from. Every key of the unit is one systemd knows."""
    import subprocess

    from tests.conftest import require_tool

    path = Path(__file__).resolve().parents[2] / "systemd" / "recorder.service"
    unit = path.read_text()
    section = unit.split("[Service]")[0]
    assert re.findall(r"^StartLimitIntervalSec=(\S+)$", section, re.MULTILINE) == ["0"]
    assert re.findall(r"^Restart=(\S+)$", unit, re.MULTILINE) == ["on-failure"]
    analyze = require_tool("systemd-analyze")  # (CI installs it: a missing one fails there)
    done = subprocess.run(
        [analyze, "verify", str(path)], capture_output=True, text=True, timeout=60
    )
    assert "Unknown key" not in done.stderr + done.stdout
