"""Another process holding the index's write lock (an operator's sqlite3 shell, a backup
script) no longer stops the recorder: its index writes wait, recording goes on, and once
the lock is released the catalog, the audit trail and the files agree again.

Before (`runtime/catalog.py`), the writer's commit waited the busy timeout, 10 s with the
capture loop standing still, then ended the process with "database is locked": a replay of
1,000 calls with the lock held 15 s from its second second left no recording indexed."""

from __future__ import annotations

import sqlite3
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import generate_latest

from recorder.config import Config
from recorder.core.events import (
    CallNotRecorded,
    RecordingAudio,
    RecordingEnded,
    RecordingStarted,
)
from recorder.runtime import catalog
from recorder.runtime.catalog import Backlog, Catalog, IndexWrite, apply_backlogs
from recorder.runtime.index import Index
from recorder.runtime.metrics import Sources, make_registry
from recorder.runtime.session import ArchiveSession
from tests.e2e.test_two_recorders import (
    MASTER,
    T,
    audit_events,
    key_file,
    kill_once_written,
    tone,
)
from tests.service.recordings import export_pcm, recordings, verify


@pytest.fixture(autouse=True)
def no_retry_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog, "RETRY_S", 0.0)  # every commit tries again


class LockedIndex:
    """Another connection holding the index's write lock, as `sqlite3` would."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        self.db.execute("ROLLBACK")
        self.db.close()


def events_of(archive: Path) -> list[str]:
    return [str(e["event"]) for e in audit_events(archive)]


def test_a_locked_index_delays_the_catalog_never_the_recordings(tmp_path: Path) -> None:
    archive, key = tmp_path / "a", key_file(tmp_path)
    session = ArchiveSession(archive, MASTER, "service", Config())
    writer = session.writer
    lock = LockedIndex(archive / "index.sqlite")

    writer.handle(RecordingStarted(1, "c1", "a", "b", T, 8000, 2))
    writer.handle(RecordingAudio(1, tone(2, 1000)))
    writer.commit()  # waited 10 s, then raised "database is locked"
    writer.handle(RecordingStarted(2, "c2", "c", "d", T, 8000, 2))
    writer.handle(RecordingAudio(2, tone(1, 2000)))
    writer.handle(RecordingAudio(1, tone(1, 1000)))
    writer.handle(RecordingEnded(1, T + 3 * 10**9, "bye", ("PCMU",)))
    writer.handle(CallNotRecorded("c3", "e", "f", T, T, "not_answered", "486"))
    writer.commit()

    # The recordings and their evidence did not wait: c1 is final and audited, c2 open.
    assert (writer.stats.opened, writer.stats.closed) == (2, 1)
    assert len(list((archive / "recordings").rglob("*.rec"))) == 1
    assert len(list((archive / "recordings").rglob("*.rec.partial"))) == 1
    assert events_of(archive).count("recording.opened") == 2
    assert events_of(archive).count("recording.closed") == 1
    assert recordings(archive) == []  # only their rows wait
    assert writer.catalog_stats.waiting == 4 and writer.catalog_stats.deferred >= 2
    assert len(backlog_lines(archive)) == 4  # on disk, should the recorder die now
    metrics = generate_latest(make_registry(Sources(writer=writer))).decode().splitlines()
    assert "recorder_index_writes_waiting 4.0" in metrics  # what an operator sees

    lock.release()
    writer.handle(RecordingAudio(2, tone(1, 2000)))
    writer.handle(RecordingEnded(2, T + 2 * 10**9, "bye", ("PCMU",)))
    writer.commit()
    assert writer.catalog_stats.waiting == 0 and writer.stats.closed == 2
    assert backlog_lines(archive) == []  # made: gone
    session.close()

    assert events_of(archive).count("recording.closed") == 2
    verify(archive, key)
    rows = {str(r["call_id"]): r for r in recordings(archive)}
    assert {c: r["state"] for c, r in rows.items()} == {"c1": "closed", "c2": "closed"}
    for call_id, expected in (("c1", tone(3, 1000)), ("c2", tone(2, 2000))):
        pcm = export_pcm(archive, key, str(rows[call_id]["id"]), tmp_path / "o.wav")
        assert np.array_equal(pcm, np.frombuffer(expected, "<i2").reshape(-1, 2))
    with sqlite3.connect(archive / "index.sqlite") as db:
        assert db.execute("SELECT outcome FROM calls WHERE call_id = 'c3'").fetchall() == [
            ("not_answered",)
        ]


def test_the_end_of_a_session_waits_for_the_lock(tmp_path: Path) -> None:
    archive, key = tmp_path / "a", key_file(tmp_path)
    session = ArchiveSession(archive, MASTER, "replay", Config())
    lock = LockedIndex(archive / "index.sqlite")
    session.writer.handle(RecordingStarted(1, "c1", "a", "b", T, 8000, 2))
    session.writer.handle(RecordingAudio(1, tone(1, 1000)))
    session.writer.handle(RecordingEnded(1, T + 10**9, "bye", ("PCMU",)))
    session.writer.commit()
    assert session.writer.catalog_stats.waiting == 2
    threading.Timer(0.5, lock.release).start()
    session.writer.settle()  # what replay and the service do before their summary
    assert session.writer.catalog_stats.waiting == 0
    session.close()
    verify(archive, key)
    [row] = recordings(archive)
    assert row["state"] == "closed"


def test_a_session_that_ends_while_the_index_stays_locked_leaves_it_to_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shutdown while the lock is still held: no traceback, no lost call. The writes
    wait in the backlog; the next start makes them: the recording has its row, with its
    call."""
    monkeypatch.setattr(catalog, "CLOSING_WAIT_S", 0.2)
    archive, key = tmp_path / "a", key_file(tmp_path)
    session = ArchiveSession(archive, MASTER, "service", Config())
    lock = LockedIndex(archive / "index.sqlite")
    session.writer.handle(RecordingStarted(1, "c1", "+4930111", "+4930222", T, 8000, 2))
    session.writer.handle(RecordingAudio(1, tone(2, 1000)))
    session.writer.handle(RecordingEnded(1, T + 2 * 10**9, "shutdown", ("PCMU",)))
    session.close()  # gives up after CLOSING_WAIT_S, and says so
    assert len(backlog_lines(archive)) == 2
    assert len(list((archive / "recordings").rglob("*.rec"))) == 1
    lock.release()

    ArchiveSession(archive, MASTER, "service", Config()).close()
    verify(archive, key)
    [row] = recordings(archive)
    assert (row["call_id"], row["caller"], row["state"], row["complete"]) == (
        "c1",
        "+4930111",
        "closed",
        1,
    )
    pcm = export_pcm(archive, key, str(row["id"]), tmp_path / "o.wav")
    assert np.array_equal(pcm, np.frombuffer(tone(2, 1000), "<i2").reshape(-1, 2))
    assert backlog_lines(archive) == []
    assert "index.backlog_applied" in events_of(archive)


_KILLED = textwrap.dedent(
    """
    import sqlite3, sys, time
    from pathlib import Path
    import numpy as np
    from recorder.config import Config
    from recorder.container.masterkey import MasterKey
    from recorder.core.events import RecordingAudio, RecordingEnded, RecordingStarted
    from recorder.runtime import catalog
    from recorder.runtime.session import ArchiveSession

    catalog.RETRY_S = 0.0
    archive = Path(sys.argv[1])
    session = ArchiveSession(archive, MasterKey.from_secret(bytes(range(32))), "killed", Config())
    other = sqlite3.connect(archive / "index.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's lock, as far as the writer knows
    pcm = np.full((3 * 8000, 2), (3000, -3000), dtype="<i2").tobytes()
    t = 1_700_000_000 * 10**9
    session.writer.handle(RecordingStarted(1, "ended", "+4930111", "b", t, 8000, 2))
    session.writer.handle(RecordingStarted(2, "open", "+4930222", "d", t, 8000, 2))
    session.writer.handle(RecordingAudio(1, pcm))
    session.writer.handle(RecordingAudio(2, pcm))
    session.writer.handle(RecordingEnded(1, t + 3 * 10**9, "bye", ("PCMU",)))
    session.writer.commit()  # 1 final and audited, 2 still open; their rows wait
    session.writer._appender.wait()  # (what writer.py bounds: the rest of a second)
    assert session.writer._catalog.stats.waiting == 3
    print("written", flush=True)
    time.sleep(600)
    """
)


def test_a_crash_while_the_index_is_locked_loses_no_row(tmp_path: Path) -> None:
    """Killed while the rows of an ended and of an open recording wait: the next start
    makes them from the backlog, then recovers the open one as always; both keep their
    call and numbers (without the backlog, the open one came back with neither)."""
    archive, key = tmp_path / "a", key_file(tmp_path)
    ArchiveSession(archive, MASTER, "setup", Config()).close()
    kill_once_written(_KILLED, archive)

    again = ArchiveSession(archive, MASTER, "service", Config())
    assert again.recovered == 1
    again.close()
    verify(archive, key)
    rows = {str(r["call_id"]): r for r in recordings(archive)}
    assert {c: (r["caller"], r["state"], r["complete"]) for c, r in rows.items()} == {
        "ended": ("+4930111", "closed", 1),
        "open": ("+4930222", "recovered", 0),
    }
    pcm = export_pcm(archive, key, str(rows["ended"]["id"]), tmp_path / "k.wav")
    assert np.array_equal(pcm, np.frombuffer(tone(3, 3000), "<i2").reshape(-1, 2))
    assert "index.backlog_applied" in events_of(archive)
    assert not list(archive.glob("*index-backlog-*"))


def test_a_running_sessions_backlog_is_its_own(tmp_path: Path) -> None:
    archive = tmp_path / "a"
    ArchiveSession(archive, MASTER, "setup", Config()).close()
    mine = Backlog(archive)
    mine.append([call(1)])
    with Index(archive / "index.sqlite") as index:
        assert apply_backlogs(archive, index).made == 0  # locked: a running session's
    assert len(backlog_lines(archive)) == 1
    mine.clear()
    assert backlog_lines(archive) == []


def test_a_damaged_backlog_never_keeps_the_recorder_from_starting(tmp_path: Path) -> None:
    """Lines that are not index writes, or cannot be made, are skipped and counted (the
    audit says so); the rest are made, and the recorder starts."""
    archive = tmp_path / "a"
    ArchiveSession(archive, MASTER, "setup", Config()).close()
    good = catalog.add_call(
        call_id="c9", caller="a", callee="b", first_seen_ns=T, last_seen_ns=T,
        outcome="not_answered", reason="486", sensor_id=None,
    )  # fmt: skip
    (archive / "index-backlog-1-dead.jsonl").write_bytes(
        b"not json\n"
        + b'{"op": "drop_table", "args": {}}\n'
        + b'{"op": "update_recording", "args": {"id": "x", "no_such_column": 1}}\n'
        + b'{"op": "add_recording", "args": {"row": {"id": "x"}}}\n'
        + b'{"op": "add_call", "args": [1, 2]}\n'
        + good.line()
        + b'{"op": "add_call", "args": {"call_id": "torn'
    )
    ArchiveSession(archive, MASTER, "service", Config()).close()
    [applied] = [e for e in audit_events(archive) if e["event"] == "index.backlog_applied"]
    assert (applied["writes"], applied["skipped"], applied["outcome"]) == (1, 6, "failure")
    with sqlite3.connect(archive / "index.sqlite") as db:
        assert db.execute("SELECT call_id FROM calls").fetchall() == [("c9",)]
    assert backlog_lines(archive) == []


class FakeIndex:
    path = Path("fake")

    def __init__(self, failures: Iterator[BaseException | None]) -> None:
        self.failures = failures
        self.written: list[object] = []
        self.waits: list[float] = []

    def wait_for_locks(self, seconds: float) -> None:
        self.waits.append(seconds)

    def batch(self) -> _Batch:
        return _Batch(self, next(self.failures))

    def add_call(self, **fields: object) -> None:
        self.written.append(fields["call_id"])

    def update_recording(self, recording_id: str, **changes: object) -> bool:
        self.written.append(recording_id)
        return True


class _Batch:
    def __init__(self, index: FakeIndex, failure: BaseException | None) -> None:
        self.index, self.failure, self.mark = index, failure, len(index.written)

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None and self.failure is not None:
            del self.index.written[self.mark :]  # rolled back
            raise self.failure


def sqlite_error(code: int, message: str) -> sqlite3.OperationalError:
    exc = sqlite3.OperationalError(message)
    exc.sqlite_errorcode = code  # type: ignore[attr-defined]
    return exc


def call(n: int) -> IndexWrite:
    return catalog.add_call(call_id=n)


def backlog_lines(folder: Path) -> list[str]:
    return [
        line for path in folder.glob("index-backlog-*") for line in path.read_text().splitlines()
    ]


def test_writes_wait_in_order_on_disk(tmp_path: Path) -> None:
    busy, full = sqlite_error(5, "database is locked"), sqlite_error(13, "disk is full")
    index = FakeIndex(iter([busy, full, None]))
    cat = Catalog(index, Backlog(tmp_path))  # type: ignore[arg-type]
    cat.add(call(1))
    cat.write()
    assert len(backlog_lines(tmp_path)) == 1  # synced, for the next session if we die
    cat.add(call(2))
    cat.write()
    assert index.written == [] and cat.stats.waiting == 2
    assert len(backlog_lines(tmp_path)) == 2
    cat.write()
    assert index.written == [1, 2]
    assert cat.stats.deferred == 2 and cat.stats.waiting == 0
    assert backlog_lines(tmp_path) == []  # made: the backlog is gone
    assert index.waits == [catalog.LOCK_WAIT_S]  # a short wait for the lock


def test_other_index_errors_still_raise_and_the_end_does_not_wait_forever(
    tmp_path: Path,
) -> None:
    index = FakeIndex(iter([sqlite_error(11, "database disk image is malformed")]))
    cat = Catalog(index, Backlog(tmp_path))  # type: ignore[arg-type]
    cat.add(call(1))
    with pytest.raises(sqlite3.OperationalError, match="malformed"):
        cat.write()
    index = FakeIndex(iter([sqlite_error(5, "database is locked")] * 2))
    cat = Catalog(index, Backlog(tmp_path))  # type: ignore[arg-type]
    cat.add(call(1))
    cat.write()  # waits
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        cat.write(closing=True)
    assert index.waits == [catalog.LOCK_WAIT_S, catalog.CLOSING_WAIT_S, catalog.LOCK_WAIT_S]
    assert len(backlog_lines(tmp_path)) == 1  # left for the next session


def test_tries_are_paced_while_the_lock_is_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalog, "RETRY_S", 3600.0)
    index = FakeIndex(iter([sqlite_error(5, "database is locked"), None]))
    cat = Catalog(index, Backlog(tmp_path))  # type: ignore[arg-type]
    cat.add(call(1))
    cat.write()
    cat.add(call(2))
    cat.write()  # not yet: the lock was held a moment ago; but the new write is on disk
    assert index.written == [] and len(backlog_lines(tmp_path)) == 2
    cat.write(closing=True)
    assert index.written == [1, 2]


def test_a_replay_that_ends_with_the_index_locked_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`recorder replay` says how many index writes still wait; the next session on the
    archive makes them."""
    from recorder.runtime import replay as replay_module
    from tests.builders import write_pcap
    from tests.core.test_clock_steps import CALL

    monkeypatch.setattr(catalog, "CLOSING_WAIT_S", 0.2)
    archive, key = tmp_path / "a", key_file(tmp_path)
    capture = write_pcap(tmp_path / "call.pcap", CALL)
    locks: list[LockedIndex] = []
    feed = replay_module.feed_blocks

    def locked_feed(*args: object, **kwargs: object) -> None:
        locks.append(LockedIndex(archive / "index.sqlite"))  # taken once the session runs
        feed(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(replay_module, "feed_blocks", locked_feed)
    summary = replay_module.replay([capture], archive, MASTER, "replay")
    assert (summary.recorded, summary.index_writes_waiting) == (1, 2)
    locks[0].release()
    ArchiveSession(archive, MASTER, "service", Config()).close()
    [row] = recordings(archive)
    assert (row["call_id"], row["state"], row["complete"]) == ("call-1@test", "closed", 1)
    assert row["duration_s"] == 20.0
    verify(archive, key)


def test_a_backlog_that_cannot_be_written_leaves_the_writes_waiting_in_memory() -> None:
    """The disk is full: the index cannot take the writes, nor the backlog. Recording goes
    on; the writes are made once the index can take them."""

    class FullDisk(Backlog):
        def append(self, writes: list[IndexWrite]) -> None:
            raise OSError(28, "No space left on device")

    full = sqlite_error(13, "database or disk is full")
    index = FakeIndex(iter([full, full, None]))
    cat = Catalog(index, FullDisk(Path("nowhere")))  # type: ignore[arg-type]
    cat.add(call(1))
    cat.write()
    cat.add(call(2))
    cat.write()
    assert index.written == [] and cat.stats.waiting == 2
    cat.write()
    assert index.written == [1, 2] and cat.stats.waiting == 0


def test_a_long_lock_and_a_flood_of_unrecorded_calls_stay_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past MAX_WAITING_CALLS waiting entries of unrecorded calls, more are dropped and
    counted; recordings' rows still wait, and are all made once the lock goes."""
    monkeypatch.setattr(catalog, "MAX_WAITING_CALLS", 3)
    busy = sqlite_error(5, "database is locked")
    index = FakeIndex(iter([busy, busy, None]))
    cat = Catalog(index, Backlog(tmp_path))  # type: ignore[arg-type]
    cat.add(call(1))
    cat.write()  # locked from here
    for n in range(2, 10):
        cat.add(call(n))
    cat.add(IndexWrite("update_recording", {"id": "r1", "state": "closed"}))
    cat.write()
    assert cat.stats.calls_dropped == 6 and cat.stats.waiting == 4
    cat.write()
    assert index.written == [1, 2, 3, "r1"]
