"""Two recorders on one archive (the service, and a replay beside it): neither takes the
other's open recordings for a crash's leftovers; a killed recorder's recordings are
recovered by the next recorder that starts, beside another or not, with every whole segment
it had written; a leftover without audio waits for a recorder that starts alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from recorder.config import Config
from recorder.container.format import SEGMENT_BYTES
from recorder.container.masterkey import MasterKey
from recorder.core.events import RecordingAudio, RecordingEnded, RecordingStarted
from recorder.runtime.keyfile import write_key_file
from recorder.runtime.session import ArchiveSession
from tests.service.recordings import export_pcm, recordings, verify

T = 1_700_000_000 * 10**9
SECRET = bytes(range(32))
MASTER = MasterKey.from_secret(SECRET)
SEGMENT_FRAMES = SEGMENT_BYTES // 4  # stereo, 16-bit


def tone(seconds: int, level: int) -> bytes:
    frames = np.full((seconds * 8000, 2), (level, -level), dtype="<i2")
    return frames.tobytes()


def audit_events(archive: Path) -> list[dict[str, object]]:
    lines = (archive / "audit" / "audit.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "master.key"
    write_key_file(path, MASTER)
    return path


@pytest.mark.parametrize("spares", [0, 4], ids=["created", "spare-file"])
def test_a_second_recorder_leaves_the_first_ones_open_recordings(
    tmp_path: Path, spares: int
) -> None:
    archive, key = tmp_path / "a", key_file(tmp_path)
    first = ArchiveSession(archive, MASTER, "service", Config(), spare_files=spares)
    deadline = time.monotonic() + 10
    while len(first.writer._spares._ready) < spares:  # (the service's way: spares made ahead)
        assert time.monotonic() < deadline, "no spare files made"
        time.sleep(0.005)
    first.writer.handle(RecordingStarted(1, "c1", "a", "b", T, 8000, 2))
    assert first.writer.spare_counts == ((1, 0) if spares else (0, 0))
    first.writer.handle(RecordingAudio(1, tone(2, 1000)))
    first.writer.commit()
    first.writer._appender.wait()  # its sealed audio is in the file
    (partial,) = (archive / "recordings").rglob("*.rec.partial")
    size = partial.stat().st_size
    assert size > 2 * SEGMENT_BYTES

    second = ArchiveSession(archive, MASTER, "replay", Config())  # beside it: no recovery
    assert second.recovered == 0
    assert partial.stat().st_size == size  # neither cut nor renamed
    second.writer.handle(RecordingStarted(1, "c2", "c", "d", T, 8000, 2))
    second.writer.handle(RecordingAudio(1, tone(1, 2000)))
    second.writer.handle(RecordingEnded(1, T + 10**9, "bye", ("PCMU",)))
    second.close()

    first.writer.handle(RecordingAudio(1, tone(1, 1000)))  # the first one goes on
    first.writer.handle(RecordingEnded(1, T + 3 * 10**9, "bye", ("PCMU",)))
    first.close()

    deferred = [e for e in audit_events(archive) if e["event"] == "recovery.deferred"]
    assert [(e["actor"], e["partial_files"]) for e in deferred] == [("replay", 1)]
    verify(archive, key)
    rows = {str(r["call_id"]): r for r in recordings(archive)}
    assert {c: (r["state"], r["complete"]) for c, r in rows.items()} == {
        "c1": ("closed", 1),
        "c2": ("closed", 1),
    }
    for call_id, expected in (("c1", tone(3, 1000)), ("c2", tone(1, 2000))):
        pcm = export_pcm(archive, key, str(rows[call_id]["id"]), tmp_path / "o.wav")
        assert np.array_equal(pcm, np.frombuffer(expected, "<i2").reshape(-1, 2))


_KILLED = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import numpy as np
    from recorder.config import Config
    from recorder.container.masterkey import MasterKey
    from recorder.core.events import RecordingAudio, RecordingStarted
    from recorder.runtime.session import ArchiveSession

    session = ArchiveSession(
        Path(sys.argv[1]), MasterKey.from_secret(bytes(range(32))), "killed", Config()
    )
    pcm = np.full((2 * 8000, 2), (3000, -3000), dtype="<i2").tobytes()
    session.writer.handle(RecordingStarted(1, "killed", "a", "b", 1_700_000_000 * 10**9, 8000, 2))
    session.writer.handle(RecordingAudio(1, pcm))
    session.writer.commit()
    session.writer._appender.wait()  # (what writer.py bounds: the rest of a second)
    print("written", flush=True)
    time.sleep(600)
    """
)


def kill_once_written(script: str, archive: Path) -> None:
    """Run `script` (a recorder writing to `archive`) in a process of its own and SIGKILL
    it as soon as it prints "written"."""
    killed = subprocess.Popen(
        [sys.executable, "-c", script, str(archive)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    assert killed.stdout is not None
    watchdog = threading.Timer(60, killed.kill)  # a child that never writes fails, not hangs
    watchdog.start()
    try:
        assert killed.stdout.readline() == "written\n"
    finally:
        watchdog.cancel()
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        killed.stdout.close()


def test_a_killed_recorders_recordings_are_recovered_beside_a_running_one(
    tmp_path: Path,
) -> None:
    archive, key = tmp_path / "a", key_file(tmp_path)
    beside = ArchiveSession(archive, MASTER, "service", Config())
    beside.writer.handle(RecordingStarted(1, "beside", "c", "d", T, 8000, 2))
    beside.writer.handle(RecordingAudio(1, tone(2, 1000)))
    beside.writer.commit()
    beside.writer._appender.wait()
    (open_one,) = (archive / "recordings").rglob("*.rec.partial")
    size = open_one.stat().st_size
    kill_once_written(_KILLED, archive)
    (leftover,) = set((archive / "recordings").rglob("*.rec.partial")) - {open_one}

    # A replay starting beside `beside`: the killed recorder's lock went with it.
    replay = ArchiveSession(archive, MASTER, "replay", Config())
    assert replay.recovered == 1
    replay.close()
    assert not leftover.exists()
    assert open_one.stat().st_size == size  # the running one's is left alone
    beside.writer.handle(RecordingAudio(1, tone(1, 1000)))
    beside.writer.handle(RecordingEnded(1, T + 3 * 10**9, "bye", ("PCMU",)))
    beside.close()

    verify(archive, key)
    rows = {str(r["call_id"]): r for r in recordings(archive)}
    assert {c: (r["state"], r["complete"]) for c, r in rows.items()} == {
        "beside": ("closed", 1),
        "killed": ("recovered", 0),
    }
    pcm = export_pcm(archive, key, str(rows["beside"]["id"]), tmp_path / "b.wav")
    assert np.array_equal(pcm, np.frombuffer(tone(3, 1000), "<i2").reshape(-1, 2))
    pcm = export_pcm(archive, key, str(rows["killed"]["id"]), tmp_path / "k.wav")
    written = np.frombuffer(tone(2, 3000), "<i2").reshape(-1, 2)
    # Every whole segment written before the kill; the unsealed rest of one (0.5 s) is
    # what a kill can take here, as writer.py says.
    assert len(pcm) == len(written) // SEGMENT_FRAMES * SEGMENT_FRAMES
    assert np.array_equal(pcm, written[: len(pcm)])


def test_a_leftover_without_audio_waits_for_a_recorder_that_starts_alone(
    tmp_path: Path,
) -> None:
    """Without a key a partial file may be one a running recorder is creating: only a
    recorder that starts alone takes it (it holds no audio: keys are committed first)."""
    archive = tmp_path / "a"
    beside = ArchiveSession(archive, MASTER, "service", Config())
    crashed = ArchiveSession(archive, MASTER, "crashed", Config())
    crashed.writer.handle(RecordingStarted(1, "crashed", "a", "b", T, 8000, 2))
    (partial,) = (archive / "recordings").rglob("*.rec.partial")
    os.close(crashed.writer._open[1].fd)  # the process dies here: nothing committed
    crashed.writer._group.close()
    crashed.audit.close()
    crashed.keys.close()
    crashed.index.close()
    crashed.hold.close()

    ArchiveSession(archive, MASTER, "replay", Config()).close()
    assert partial.exists()
    beside.close()
    assert ArchiveSession(archive, MASTER, "service", Config()).recovered == 0
    assert not partial.exists()
    events = [(e["actor"], e["event"]) for e in audit_events(archive)]
    assert ("replay", "recovery.deferred") in events
    assert ("service", "recording.discarded") in events
