"""Spare files: a recording's file made from one is a new, empty, owner-only file at its own
name; an existing name is never replaced; a failure leaves nothing at the recording's
path; no recording keeps a second (spare) name after a close or a crash; spares serve the
next run; and the writer records through them (so do the e2e tests)."""

from __future__ import annotations

import errno
import os
import stat
import time
from pathlib import Path

import numpy as np
import pytest

from recorder.config import Config
from recorder.container.masterkey import MasterKey
from recorder.core.events import RecordingAudio, RecordingEnded, RecordingStarted
from recorder.runtime.keyfile import write_key_file
from recorder.runtime.session import ArchiveSession
from recorder.runtime.spares import SparePool
from tests.service.recordings import export_pcm, recordings, verify

T0 = 1_700_000_000 * 10**9


def ready(pool: SparePool, count: int) -> None:
    deadline = time.monotonic() + 10
    while len(pool._ready) < count:
        assert time.monotonic() < deadline, "the pool did not fill"
        time.sleep(0.005)


def spares_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".spare"))


def only_plain_spares(folder: Path) -> None:
    """Every spare left is an empty file of its own (none is a recording's second name)."""
    for name in spares_in(folder):
        info = (folder / name).stat()
        assert (info.st_size, info.st_nlink) == (0, 1), name


def test_a_spare_becomes_a_new_empty_owner_only_file_at_its_path(tmp_path: Path) -> None:
    pool = SparePool(tmp_path / "spare", target=4)
    ready(pool, 4)
    day = tmp_path / "recordings" / "2024" / "01" / "02"  # not there yet: made on the way
    fd = pool.open(str(day / "x.rec.partial"), day)
    assert fd is not None
    os.write(fd, b"header")
    os.close(fd)
    info = (day / "x.rec.partial").stat()
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert (day / "x.rec.partial").read_bytes() == b"header"
    assert stat.S_IMODE(day.stat().st_mode) == 0o700
    pool.close()
    assert (day / "x.rec.partial").stat().st_nlink == 1  # its only name is the recording's
    only_plain_spares(tmp_path / "spare")
    assert (pool.taken, pool.missed) == (1, 0)


def test_an_existing_file_is_never_replaced(tmp_path: Path) -> None:
    pool = SparePool(tmp_path / "spare", target=2)
    ready(pool, 2)
    existing = tmp_path / "taken.rec.partial"
    existing.write_bytes(b"someone's audio")
    first = pool._ready[0]
    with pytest.raises(FileExistsError):
        pool.open(str(existing), tmp_path)
    assert existing.read_bytes() == b"someone's audio"
    # The spare goes back to the front of the pool, unchanged (the refill thread, woken by
    # the take, may have added one more meanwhile).
    assert pool._ready[0] == first and len(pool._ready) >= 2
    assert (Path(first).stat().st_size, Path(first).stat().st_nlink) == (0, 1)
    pool.close()


def test_a_spare_that_cannot_be_opened_is_a_miss_that_leaves_nothing_at_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = SparePool(tmp_path / "spare", target=2)
    ready(pool, 2)
    real_open = os.open

    def no_descriptor_left(path: str, flags: int, mode: int = 0o777) -> int:
        if str(path).endswith(".partial"):
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE), path)
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", no_descriptor_left)
    # The caller creates the file itself, so the error it reports is its own create's:
    # a spare never fails a call that a create would have recorded.
    assert pool.open(str(tmp_path / "y.rec.partial"), tmp_path) is None
    monkeypatch.undo()
    assert not (tmp_path / "y.rec.partial").exists()
    assert (pool.taken, pool.missed) == (0, 1)
    pool.close()
    only_plain_spares(tmp_path / "spare")


def test_a_file_where_the_folder_belongs_turns_spares_off_not_the_recorder(
    tmp_path: Path,
) -> None:
    (tmp_path / "spare").write_text("an operator's file")
    pool = SparePool(tmp_path / "spare", target=4)
    assert pool.open(str(tmp_path / "a.rec.partial"), tmp_path) is None
    assert pool.missed == 1
    pool.close()
    assert (tmp_path / "spare").read_text() == "an operator's file"


def test_with_none_ready_or_across_file_systems_the_caller_creates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = SparePool(tmp_path / "none", target=0)
    assert empty.open(str(tmp_path / "a.rec.partial"), tmp_path) is None
    assert not (tmp_path / "a.rec.partial").exists()
    pool = SparePool(tmp_path / "spare", target=2)
    ready(pool, 2)

    def other_device(src: str, dst: str) -> None:
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), src)

    monkeypatch.setattr(os, "link", other_device)
    assert pool.open(str(tmp_path / "b.rec.partial"), tmp_path) is None
    left = len(pool._ready)
    assert pool.open(str(tmp_path / "c.rec.partial"), tmp_path) is None
    assert pool._disabled and pool.missed == 2
    assert len(pool._ready) == left  # no other spare is tried once the link failed so
    monkeypatch.undo()
    pool.close()
    only_plain_spares(tmp_path / "spare")


def test_spares_serve_the_next_run_and_a_crash_s_second_names_go(tmp_path: Path) -> None:
    folder = tmp_path / "spare"
    folder.mkdir()
    plain = "ab" * 16 + ".spare"
    (folder / plain).write_bytes(b"")
    (folder / "notes.txt").write_text("not ours")
    # A crash between the link and the spare's unlink: the spare names a recording's file.
    recording = tmp_path / "r.rec.partial"
    recording.write_bytes(b"audio")
    os.link(recording, folder / ("cd" * 16 + ".spare"))
    pool = SparePool(folder, target=3)
    ready(pool, 3)
    assert str(folder / plain) in pool._ready  # used again, not made again
    assert recording.read_bytes() == b"audio" and recording.stat().st_nlink == 1
    assert (folder / "notes.txt").read_text() == "not ours"
    pool.close()
    left = spares_in(folder)
    assert len(left) == 3 and plain in left
    again = SparePool(folder, target=3)
    ready(again, 3)
    assert sorted(Path(p).name for p in again._ready) == left  # nothing new was made
    again.close()
    SparePool(folder, target=0).close()  # spares turned off: none is kept
    assert spares_in(folder) == []
    assert (folder / "notes.txt").read_text() == "not ours"


def test_the_writer_opens_recordings_from_spares_and_they_verify(tmp_path: Path) -> None:
    archive, key = tmp_path / "a", tmp_path / "master.key"
    master = MasterKey.from_secret(bytes(32))
    write_key_file(key, master)
    session = ArchiveSession(archive, master, "t", Config(), spare_files=8)
    writer = session.writer
    ready(writer._spares, 3)
    tone = (b"\x10\x00\xf0\xff" * 8000)[: 2 * 2 * 8000]
    for serial in (1, 2, 3):
        writer.handle(RecordingStarted(serial, f"c{serial}", "a", "b", T0, 8000, 2))
    for serial in (1, 2, 3):
        writer.handle(RecordingAudio(serial, tone))
        writer.handle(RecordingEnded(serial, T0 + 10**9, "bye", ("PCMU",)))
    writer.commit()
    assert writer._spares.taken == 3
    session.close()
    only_plain_spares(archive / "spare")
    rows = recordings(archive)
    assert sorted(str(r["call_id"]) for r in rows) == ["c1", "c2", "c3"]
    assert {(archive / str(r["path"])).stat().st_nlink for r in rows} == {1}
    verify(archive, key)
    expected = np.frombuffer(tone, "<i2").reshape(-1, 2)
    for row in rows:
        pcm = export_pcm(archive, key, str(row["id"]), tmp_path / "o.wav")
        assert np.array_equal(pcm, expected)


def test_one_pool_holds_the_folder_so_no_spare_serves_two_recordings(tmp_path: Path) -> None:
    folder = tmp_path / "spare"
    first = SparePool(folder, target=4)
    ready(first, 4)
    held = spares_in(folder)
    second = SparePool(folder, target=4)  # another recorder on the same archive
    assert second.open(str(tmp_path / "b.rec.partial"), tmp_path) is None  # creates its own
    SparePool(folder, target=0).close()  # one with spares off leaves the held ones too
    assert spares_in(folder) == held
    fd = first.open(str(tmp_path / "a.rec.partial"), tmp_path)
    assert fd is not None
    os.close(fd)
    second.close()
    first.close()
    third = SparePool(folder, target=4)  # the folder is free again
    ready(third, 4)
    third.close()
    only_plain_spares(folder)


def test_a_spare_the_writer_cannot_open_still_records_the_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spare that fails (here: not ours to open) costs a create, never the call."""
    session = ArchiveSession(
        tmp_path / "a", MasterKey.from_secret(bytes(32)), "t", Config(), spare_files=4
    )
    writer = session.writer
    ready(writer._spares, 4)
    real_open = os.open

    def spare_not_ours(path: str, flags: int, mode: int = 0o777) -> int:
        if str(path).endswith(".partial") and not flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", spare_not_ours)
    writer.handle(RecordingStarted(1, "c1", "a", "b", T0, 8000, 2))
    monkeypatch.undo()
    writer.handle(RecordingAudio(1, bytes(32000)))
    writer.handle(RecordingEnded(1, T0 + 10**9, "bye", ("PCMU",)))
    writer.commit()
    assert (writer.stats.closed, writer.stats.failed) == (1, 0)
    assert writer.spare_counts == (0, 1)
    session.close()
    (row,) = recordings(tmp_path / "a")
    assert row["call_id"] == "c1" and (tmp_path / "a" / str(row["path"])).stat().st_nlink == 1


def test_a_left_spare_of_another_user_is_not_used(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file to another user")
    folder = tmp_path / "spare"
    folder.mkdir()
    theirs = folder / ("ef" * 16 + ".spare")
    theirs.write_bytes(b"")
    os.chown(theirs, 65534, 65534)
    pool = SparePool(folder, target=2)
    ready(pool, 2)
    assert str(theirs) not in pool._ready and not theirs.exists()
    pool.close()
