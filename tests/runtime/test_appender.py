"""The append thread: files keep their order, a slow disk blocks the loop instead of growing
memory, and a write that fails (a full file system) fails that recording only, which keeps
its verified prefix."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pytest

from recorder.config import ArchiveSettings, Config
from recorder.core.events import RecordingAudio, RecordingEnded, RecordingStarted
from recorder.runtime.appender import Appender
from recorder.runtime.keyfile import generate_master_key, write_key_file
from recorder.runtime.session import ArchiveSession
from tests.service.recordings import export_pcm, recordings
from tests.tmpfs import mounted_tmpfs

T0 = 1_700_000_000 * 10**9


@dataclass
class File:
    fd: int
    sha256: hashlib._Hash = field(default_factory=hashlib.sha256)
    size: int = 0
    failed: bool = False
    write_error: OSError | None = None


def test_bytes_reach_each_file_in_order_with_its_digest(tmp_path: Path) -> None:
    appender: Appender[File] = Appender(batch_bytes=1000)
    files = [File(os.open(tmp_path / f"f{n}", os.O_CREAT | os.O_WRONLY, 0o600)) for n in (0, 1)]
    expected = [bytearray(), bytearray()]
    for n in range(500):
        chunk = bytes([n % 256]) * (n % 37 + 1)
        appender.add(files[n % 2], chunk)
        expected[n % 2] += chunk
    appender.close()
    for n, f in enumerate(files):
        os.close(f.fd)
        assert (tmp_path / f"f{n}").read_bytes() == expected[n]
        assert f.sha256.hexdigest() == hashlib.sha256(expected[n]).hexdigest()
        assert f.size == len(expected[n])
    assert appender.bytes_written == sum(map(len, expected))


def test_a_stalled_file_blocks_the_caller_once_the_queue_is_full() -> None:
    """At most `max_pending` batches wait (plus the one being written): the caller blocks."""
    read_end, write_end = os.pipe()
    pipe_size = 1 << 16  # Linux default; a pipe nobody reads stalls the thread's write
    appender: Appender[File] = Appender(batch_bytes=pipe_size, max_pending=1)
    target = File(write_end)
    appender.add(target, b"x" * (2 * pipe_size))  # the thread's batch: stalls on the pipe
    deadline = time.monotonic() + 5
    while appender._queue.qsize() and time.monotonic() < deadline:
        time.sleep(0.01)  # until the thread has taken it (else the next add would block here)
    appender.add(target, b"y" * pipe_size)  # waits in the queue
    blocked = threading.Thread(target=appender.add, args=(target, b"z" * pipe_size))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive()  # held back: three batches' memory at most
    received = bytearray()
    while len(received) < 4 * pipe_size:
        received += os.read(read_end, 1 << 20)
    blocked.join(5)
    assert not blocked.is_alive()
    appender.close()
    assert received == b"x" * (2 * pipe_size) + b"y" * pipe_size + b"z" * pipe_size
    os.close(read_end)
    os.close(write_end)


def test_a_failed_write_skips_that_file_and_is_listed_once(tmp_path: Path) -> None:
    appender: Appender[File] = Appender(batch_bytes=1)
    good = File(os.open(tmp_path / "good", os.O_CREAT | os.O_WRONLY, 0o600))
    bad = File(os.open(tmp_path / "bad", os.O_CREAT | os.O_RDONLY, 0o600))  # EBADF on write
    for _ in range(3):
        appender.add(bad, b"bad")
        appender.add(good, b"good")
    appender.close()
    assert list(appender.failures) == [bad] and bad.write_error is not None
    assert (tmp_path / "good").read_bytes() == b"good" * 3 and bad.size == 0
    os.close(good.fd)
    os.close(bad.fd)


@pytest.fixture
def tiny_recordings_fs(tmp_path: Path) -> Iterator[Path]:
    """An archive whose recordings folder is a 1 MiB tmpfs (needs root), so that audio
    writes meet a full disk while the index, key store and audit trail do not."""
    archive = tmp_path / "archive"
    folder = archive / "recordings"
    folder.mkdir(parents=True, mode=0o700)
    with mounted_tmpfs(folder, "1m"):
        yield archive


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_full_disk_fails_one_recording_which_keeps_its_prefix(
    tiny_recordings_fs: Path, tmp_path: Path
) -> None:
    archive = tiny_recordings_fs
    key = generate_master_key()
    key_file = tmp_path / "master.key"
    write_key_file(key_file, key)
    config = replace(Config(), archive=ArchiveSettings(path=str(archive), min_free_bytes=0))
    session = ArchiveSession(archive, key, "test", config)
    writer = session.writer
    ballast = archive / "recordings" / "ballast"
    ballast.write_bytes(bytes(200_000))
    fds_before = _open_fds()
    second = (np.arange(16000, dtype="<i2") % 2000).tobytes()  # 1 s of stereo, 32,000 bytes
    writer.handle(RecordingStarted(1, "full", "a", "b", T0, 8000, 2))
    writer.handle(RecordingStarted(2, "after", "a", "b", T0, 8000, 2))
    for _ in range(40):  # 1.28 MB: more than the file system holds
        writer.handle(RecordingAudio(1, second))
        writer.commit()
    writer.handle(RecordingEnded(1, T0 + 40 * 10**9, "bye", ("PCMU",)))
    writer.commit()
    assert writer.stats.failed == 1 and writer.stats.closed == 0
    assert _open_fds() == fds_before + 1  # the failed file is closed; the other one is open
    ballast.unlink()  # room again, as an operator would make it
    writer.handle(RecordingAudio(2, second))
    writer.handle(RecordingEnded(2, T0 + 10**9, "bye", ("PCMU",)))
    writer.commit()
    session.close()
    assert writer.stats.closed == 1
    trail = [json.loads(x) for x in session.archive.audit_path.read_text().splitlines()]
    (failure,) = [r for r in trail if r["event"] == "recording.failed"]
    assert "No space left" in failure["reason"]
    ArchiveSession(archive, key, "test", config).close()  # the next start recovers #1
    rows = {r["call_id"]: r for r in recordings(archive)}
    after = export_pcm(archive, key_file, str(rows["after"]["id"]), tmp_path / "after.wav")
    assert after.tobytes() == second  # the recording after the failure is whole
    assert rows["full"]["state"] == "recovered"
    kept = export_pcm(archive, key_file, str(rows["full"]["id"]), tmp_path / "full.wav")
    seconds = len(kept) // 8000
    assert seconds >= 20 and kept.tobytes() == (second * 40)[: len(kept) * 4]
