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
    session.hold.close()  # (the kernel releases a killed process's hold)
    again = ArchiveSession(tmp_path / "a", MASTER, "t", Config())
    again.close()
    assert not partial.exists()
    trail = (tmp_path / "a" / "audit" / "audit.jsonl").read_text().splitlines()
    events = [json.loads(line)["event"] for line in trail]
    assert "recording.discarded" in events and "recording.recovery_failed" not in events


def _crash(session: ArchiveSession) -> None:
    """Leave the session as a killed process would: nothing closed, nothing finished
    (killed once the append thread wrote what it was handed: writer.py bounds the rest)."""
    session.writer._appender.wait()
    for rec in session.writer._open.values():
        os.close(rec.fd)
    session.writer._group.close()
    session.audit.close()
    session.keys.close()
    session.index.close()
    session.hold.close()  # (the kernel releases a killed process's hold)


def test_recovery_cuts_a_torn_tail_but_leaves_a_damaged_file_untouched(tmp_path: Path) -> None:
    from recorder.container.format import SEALED_SEGMENT_BYTES
    from recorder.container.reader import read_header_block

    session = ArchiveSession(tmp_path / "a", MASTER, "t", Config())
    for serial in (1, 2):
        session.writer.handle(started(serial))
        session.writer.handle(RecordingAudio(serial, bytes(3 * 16384 + 100)))  # 3 segments
    torn, damaged = sorted((tmp_path / "a" / "recordings").rglob("*.rec.partial"))
    _crash(session)
    with torn.open("ab") as f:
        f.write(b"\x01" * 50)  # a torn write after the last whole segment
    data = bytearray(damaged.read_bytes())
    with damaged.open("rb") as f:
        start = read_header_block(f).length
    data[start + SEALED_SEGMENT_BYTES + 10] ^= 1  # segment 1 of 3: damage, not a crash
    damaged.write_bytes(bytes(data))
    ArchiveSession(tmp_path / "a", MASTER, "t", Config()).close()
    assert damaged.read_bytes() == bytes(data)  # untouched, for investigation
    recovered = torn.with_name(torn.name.removesuffix(".partial"))
    assert recovered.stat().st_size == start + 3 * SEALED_SEGMENT_BYTES
    trail = [
        json.loads(x) for x in (tmp_path / "a" / "audit" / "audit.jsonl").read_text().splitlines()
    ]
    failed = [r for r in trail if r["event"] == "recording.recovery_failed"]
    assert len(failed) == 1 and "damage" in failed[0]["reason"]
    assert [r["bytes_cut"] for r in trail if r["event"] == "recording.recovered"] == [50]
    from recorder.runtime.archive import Archive
    from recorder.runtime.verify import verify_archive

    report = verify_archive(Archive(tmp_path / "a"), {MASTER.kid: MASTER}, "auditor")
    assert [f for f in report.failures if "not recovered after a crash" in f] == [
        f"recording {damaged.name.removesuffix('.rec.partial')}: not recovered after a crash: "
        + failed[0]["reason"]
    ]
