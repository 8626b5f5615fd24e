"""The writer's group commit: keys of new recordings are committed together before any of
their audio, and a crash in between leaves nothing recovery must keep."""

from __future__ import annotations

import json
import os
from pathlib import Path

from recorder.config import Config
from recorder.container.masterkey import MasterKey
from recorder.core.events import RecordingAudio, RecordingStarted
from recorder.runtime.keystore import KeyStore
from recorder.runtime.session import ArchiveSession

T = 1_700_000_000 * 10**9
MASTER = MasterKey.from_secret(bytes(range(32)))


def started(serial: int) -> RecordingStarted:
    return RecordingStarted(serial, f"c{serial}", "a", "b", T, 8000, 2)


def test_keys_are_committed_before_the_first_audio(tmp_path: Path) -> None:
    session = ArchiveSession(tmp_path / "a", MASTER, "t", Config())
    for serial in range(1, 51):
        session.writer.handle(started(serial))
    with KeyStore(tmp_path / "a" / "keys.sqlite") as keys:
        assert keys.recording_ids() == []  # not yet: one transaction for all fifty
    session.writer.handle(RecordingAudio(1, bytes(32000)))
    with KeyStore(tmp_path / "a" / "keys.sqlite") as keys:
        assert len(keys.recording_ids()) == 50
    session.close()


def test_a_crash_before_the_commit_leaves_only_discarded_headers(tmp_path: Path) -> None:
    session = ArchiveSession(tmp_path / "a", MASTER, "t", Config())
    session.writer.handle(started(1))
    (partial,) = (tmp_path / "a" / "recordings").rglob("*.rec.partial")
    os.close(session.writer._open[1].fd)  # the process dies here: nothing committed
    session.writer._group.close()
    session.audit.close()
    session.keys.close()
    session.index.close()
    again = ArchiveSession(tmp_path / "a", MASTER, "t", Config())
    again.close()
    assert not partial.exists()
    trail = (tmp_path / "a" / "audit" / "audit.jsonl").read_text().splitlines()
    events = [json.loads(line)["event"] for line in trail]
    assert "recording.discarded" in events and "recording.recovery_failed" not in events
