"""The SQLite index (recordings, calls not recorded, schema versions) and RFC 3339 times."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recorder.errors import ArchiveError
from recorder.runtime import index as index_module
from recorder.runtime.index import CallRow, Index, RecordingRow
from recorder.runtime.timefmt import parse_rfc3339_ns, rfc3339_ns

T0 = 1_704_164_645_123_456_789  # 2024-01-02T03:04:05.123456789Z


def _row(rid: str = "rec-1", start_ns: int = T0, **changes: object) -> RecordingRow:
    row = RecordingRow(
        id=rid,
        call_id="a84b4c76e66710@pc33.example.com",
        caller="sip:alice@example.com",
        callee="sip:bob@example.org",
        start_ns=start_ns,
        end_ns=start_ns + 2_500_000_000,
        codecs=["PCMU", "G722"],
        sample_rate=16000,
        channels=2,
        complete=True,
        state="closed",
        path=f"recordings/2024/01/02/{rid}.rec",
        sha256="ab" * 32,
        size=12345,
        kid="0123456789abcdef",
        created_ns=T0 + 1,
    )
    return dataclasses.replace(row, **changes)  # type: ignore[arg-type]


@pytest.fixture
def index(tmp_path: Path) -> Iterator[Index]:
    with Index(tmp_path / "index.sqlite") as idx:
        yield idx


# --- timefmt ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ns", "digits", "text"),
    [
        (T0, 6, "2024-01-02T03:04:05.123456Z"),
        (T0, 9, "2024-01-02T03:04:05.123456789Z"),
        (T0, 3, "2024-01-02T03:04:05.123Z"),
        (T0, 0, "2024-01-02T03:04:05Z"),
        (0, 6, "1970-01-01T00:00:00.000000Z"),
        (999_999_999, 6, "1970-01-01T00:00:00.999999Z"),  # truncated, never rounded up
        (-1, 9, "1969-12-31T23:59:59.999999999Z"),
        (4_102_444_800 * 10**9, 6, "2100-01-01T00:00:00.000000Z"),
    ],
)
def test_rfc3339(ns: int, digits: int, text: str) -> None:
    assert rfc3339_ns(ns, digits=digits) == text


def test_rfc3339_default_is_microseconds() -> None:
    assert rfc3339_ns(T0) == "2024-01-02T03:04:05.123456Z"
    with pytest.raises(ValueError):
        rfc3339_ns(T0, digits=10)


@given(st.integers(min_value=-(10**18), max_value=10**19))
def test_rfc3339_round_trips_at_nanoseconds(ns: int) -> None:
    assert parse_rfc3339_ns(rfc3339_ns(ns, digits=9)) == ns


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2024-01-02 03:04:05Z",
        "2024-01-02T03:04:05",
        "2024-01-02T03:04:05+01:00",
        "2024-01-02T03:04:05.Z",
        "2024-01-02T03:04:05.1234567891Z",
        "2024-13-02T03:04:05Z",
    ],
)
def test_parse_rfc3339_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rfc3339_ns(text)


# --- recordings --------------------------------------------------------------------------


def test_add_get_round_trip(index: Index) -> None:
    row = _row(
        purpose="quality",
        legal_basis="consent",
        retention_class="short",
        expires_ns=T0 + 86_400 * 10**9,
        sensor_id="span0",
        reason="bye",
        notes="n",
    )
    index.add_recording(row)
    assert index.get("rec-1") == row
    assert index.get("rec-2") is None


def test_defaults_and_created_time(index: Index) -> None:
    row = RecordingRow(
        id="r",
        call_id="c",
        caller="a",
        callee="b",
        start_ns=T0,
        sample_rate=8000,
        channels=1,
        path="p",
    )
    before = time.time_ns()
    index.add_recording(row)
    got = index.get("r")
    assert got is not None
    assert got.created_ns is not None
    assert before <= got.created_ns <= time.time_ns()
    assert dataclasses.replace(got, created_ns=None) == row
    assert (got.purpose, got.retention_class, got.state, got.complete) == (
        "unspecified",
        "default",
        "open",
        False,
    )


def test_public_dict_contract(index: Index) -> None:
    index.add_recording(_row(expires_ns=T0 + 30 * 86_400 * 10**9))
    got = index.get("rec-1")
    assert got is not None
    assert got.to_public_dict() == {
        "id": "rec-1",
        "call_id": "a84b4c76e66710@pc33.example.com",
        "caller": "sip:alice@example.com",
        "callee": "sip:bob@example.org",
        "start": "2024-01-02T03:04:05.123456Z",
        "end": "2024-01-02T03:04:07.623456Z",
        "duration_s": 2.5,
        "codecs": ["PCMU", "G722"],
        "sample_rate": 16000,
        "channels": 2,
        "complete": True,
        "state": "closed",
        "reason": None,
        "path": "recordings/2024/01/02/rec-1.rec",
        "sha256": "ab" * 32,
        "size": 12345,
        "kid": "0123456789abcdef",
        "sensor_id": None,
        "purpose": "unspecified",
        "legal_basis": None,
        "retention_class": "default",
        "expires": "2024-02-01T03:04:05.123456Z",
        "content": "pcm_s16le",
    }


def test_public_dict_of_an_open_recording() -> None:
    public = _row(end_ns=None, sha256="", complete=False, state="open").to_public_dict()
    assert (public["end"], public["duration_s"], public["sha256"]) == (None, 0.0, None)
    assert public["complete"] is False


def test_list_is_ordered_by_start(index: Index) -> None:
    for rid, start in [("c", T0 + 3), ("a", T0 + 1), ("b", T0 + 2), ("a2", T0 + 1)]:
        index.add_recording(_row(rid, start))
    assert [r.id for r in index.list_recordings()] == ["a", "a2", "b", "c"]


def test_duplicate_id_is_refused(index: Index) -> None:
    index.add_recording(_row())
    with pytest.raises(ArchiveError) as info:
        index.add_recording(_row(caller="someone else"))
    assert str(info.value) == "recording 'rec-1' is already in the index"
    got = index.get("rec-1")
    assert got is not None
    assert got.caller == "sip:alice@example.com"


def test_update_recording(index: Index) -> None:
    index.add_recording(_row(end_ns=None, codecs=[], complete=False, state="open", sha256=""))
    assert index.update_recording(
        "rec-1",
        end_ns=T0 + 9,
        codecs=["PCMA"],
        complete=True,
        state="closed",
        sha256="cd" * 32,
        size=7,
        reason="bye",
    )
    assert index.get("rec-1") == _row(
        end_ns=T0 + 9, codecs=["PCMA"], sha256="cd" * 32, size=7, reason="bye"
    )
    assert index.update_recording("missing", size=1) is False
    assert index.update_recording("rec-1") is True
    assert index.update_recording("missing") is False


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"id": "x"}, "not index fields: id"),
        ({"size": 1, "colour": "red", "1=1; --": 0}, "not index fields: 1=1; --, colour"),
        (
            {"state": "deleted"},
            "state must be one of ('open', 'closed', 'recovered'), not 'deleted'",
        ),
        ({"codecs": "PCMU"}, "codecs must be a list of strings"),
    ],
)
def test_update_refuses_bad_fields(index: Index, changes: dict[str, object], message: str) -> None:
    index.add_recording(_row())
    with pytest.raises(ValueError) as info:
        index.update_recording("rec-1", **changes)
    assert str(info.value) == message
    assert index.get("rec-1") == _row()


def test_wire_strings_are_data(index: Index) -> None:
    hostile = "x'); DROP TABLE recordings; --\x00\u202eé"
    index.add_recording(_row(call_id=hostile, caller=hostile, callee='"; DELETE FROM calls'))
    index.add_call(
        call_id=hostile,
        caller=hostile,
        callee="b",
        first_seen_ns=1,
        last_seen_ns=2,
        outcome="no_audio",
        reason="?",
    )
    got = index.get("rec-1")
    assert got is not None
    assert (got.call_id, got.caller, got.callee) == (hostile, hostile, '"; DELETE FROM calls')
    assert index.list_calls()[0].call_id == hostile


def test_lone_surrogates_are_stored_as_visible_escapes(index: Index) -> None:
    """Wire bytes decoded with surrogateescape cannot be UTF-8 text; they stay readable."""
    index.add_recording(_row(call_id="a\udcffb", codecs=["X\udc80"]))
    index.add_call(
        call_id="c\udcfe",
        caller="a",
        callee="b",
        first_seen_ns=1,
        last_seen_ns=2,
        outcome="no_audio",
    )
    got = index.get("rec-1")
    assert got is not None
    assert got.call_id == "a\\udcffb"
    assert got.codecs == ["X\udc80"]  # JSON escapes keep codec names exact
    assert index.list_calls()[0].call_id == "c\\udcfe"


def test_delete_recording(index: Index) -> None:
    index.add_recording(_row())
    assert index.delete_recording("rec-1") is True
    assert index.get("rec-1") is None
    assert index.delete_recording("rec-1") is False


# --- calls not recorded -----------------------------------------------------------------------


def test_calls_not_recorded(index: Index) -> None:
    index.add_call(
        call_id="c2",
        caller="sip:a@x",
        callee="sip:b@y",
        first_seen_ns=T0 + 5,
        last_seen_ns=T0 + 6,
        outcome="not_answered",
        reason="486",
    )
    index.add_call(
        call_id="c1",
        caller="sip:a@x",
        callee="sip:c@y",
        first_seen_ns=T0,
        last_seen_ns=T0 + 1,
        outcome="no_audio",
        sensor_id="span0",
    )
    calls = index.list_calls()
    assert calls == [
        CallRow(
            call_id="c1",
            caller="sip:a@x",
            callee="sip:c@y",
            first_seen_ns=T0,
            last_seen_ns=T0 + 1,
            outcome="no_audio",
            reason="",
            sensor_id="span0",
        ),
        CallRow(
            call_id="c2",
            caller="sip:a@x",
            callee="sip:b@y",
            first_seen_ns=T0 + 5,
            last_seen_ns=T0 + 6,
            outcome="not_answered",
            reason="486",
        ),
    ]
    assert calls[1].to_public_dict() == {
        "call_id": "c2",
        "caller": "sip:a@x",
        "callee": "sip:b@y",
        "first_seen": "2024-01-02T03:04:05.123456Z",
        "last_seen": "2024-01-02T03:04:05.123456Z",
        "outcome": "not_answered",
        "reason": "486",
        "sensor_id": None,
    }


def test_same_call_twice_updates_one_row(index: Index) -> None:
    for last, outcome in [(T0 + 10, "no_audio"), (T0 + 5, "undecodable")]:
        index.add_call(
            call_id="c",
            caller="a",
            callee="b",
            first_seen_ns=T0,
            last_seen_ns=last,
            outcome=outcome,
            reason="r",
        )
    calls = index.list_calls()
    assert len(calls) == 1
    assert (calls[0].last_seen_ns, calls[0].outcome) == (T0 + 10, "undecodable")


# --- the database file -------------------------------------------------------------------------


def test_file_settings(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    with Index.open(path) as idx:
        assert idx.schema_version() == index_module.SCHEMA_VERSION == len(index_module._MIGRATIONS)
        assert idx._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert idx._db.execute("PRAGMA synchronous").fetchone()[0] == 2
        idx.add_recording(_row())
    assert os.stat(path).st_mode & 0o777 == 0o600
    with Index(path, create=False) as again:  # reopening does not migrate twice
        assert again.schema_version() == index_module.SCHEMA_VERSION
        assert [r.id for r in again.list_recordings()] == ["rec-1"]


def test_missing_index_without_create(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    with pytest.raises(ArchiveError) as info:
        Index(path, create=False)
    assert str(info.value) == f"index {path} does not exist"
    assert not path.exists()


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    path.write_bytes(b"garbage" * 1000)
    with pytest.raises(ArchiveError) as info:
        Index(path)
    assert str(info.value) == f"index {path} is unusable: file is not a database"


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    Index(path).close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO schema_version VALUES (7, 0)")
    db.commit()
    db.close()
    with pytest.raises(ArchiveError) as info:
        Index(path)
    assert str(info.value) == (
        f"index {path} has schema version 7; this recorder knows up to "
        f"{index_module.SCHEMA_VERSION} (upgrade the recorder)"
    )


def test_migration_hook_upgrades_an_old_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "index.sqlite"
    with Index(path) as old:
        old.add_recording(_row())

    def v2(db: sqlite3.Connection) -> None:
        db.execute("ALTER TABLE recordings ADD COLUMN future TEXT")

    current = index_module.SCHEMA_VERSION
    monkeypatch.setattr(index_module, "_MIGRATIONS", (*index_module._MIGRATIONS, v2))
    monkeypatch.setattr(index_module, "SCHEMA_VERSION", current + 1)
    with Index(path) as new:
        assert new.schema_version() == current + 1
        versions = new._db.execute("SELECT version FROM schema_version ORDER BY version")
        assert [v for (v,) in versions] == list(range(1, current + 2))
        assert new.get("rec-1") == _row()


def test_failed_migration_rolls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "index.sqlite"
    Index(path).close()

    def broken(db: sqlite3.Connection) -> None:
        db.execute("ALTER TABLE recordings ADD COLUMN half TEXT")
        raise RuntimeError("migration bug")

    current = index_module.SCHEMA_VERSION
    monkeypatch.setattr(index_module, "_MIGRATIONS", (*index_module._MIGRATIONS, broken))
    monkeypatch.setattr(index_module, "SCHEMA_VERSION", current + 1)
    with pytest.raises(RuntimeError, match="migration bug"):
        Index(path)
    monkeypatch.undo()
    with Index(path) as idx:
        assert idx.schema_version() == current
        columns = [r[1] for r in idx._db.execute("PRAGMA table_info(recordings)")]
        assert "half" not in columns


def test_reader_and_writer_coexist(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    with Index(path) as writer, Index(path) as reader:
        writer.add_recording(_row("a"))
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
        other.execute("DELETE FROM recordings WHERE id = 'a'")
        assert [r.id for r in reader.list_recordings()] == ["a"]  # WAL: readers never wait
        timer = threading.Timer(0.3, other.execute, ("COMMIT",))
        timer.start()
        started = time.monotonic()
        writer.add_recording(_row("c"))  # waits on the busy timeout, then succeeds
        assert time.monotonic() - started >= 0.2
        timer.join()
        other.close()
        assert [r.id for r in reader.list_recordings()] == ["c"]


def test_a_failed_commit_is_rolled_back_so_the_next_transaction_can_begin() -> None:
    """A COMMIT that fails (SQLITE_BUSY, a full disk) leaves the transaction open; the
    writer's next try would then fail at BEGIN, for ever."""
    from recorder.runtime.sqlitetx import transaction

    class Db:
        def __init__(self) -> None:
            self.in_transaction = False
            self.said: list[str] = []

        def execute(self, sql: str) -> None:
            self.said.append(sql)
            if sql == "BEGIN IMMEDIATE":
                self.in_transaction = True
            elif sql == "COMMIT":
                raise sqlite3.OperationalError("database is locked")
            elif sql == "ROLLBACK":
                self.in_transaction = False

    db = Db()
    with pytest.raises(sqlite3.OperationalError), transaction(db):  # type: ignore[arg-type]
        pass
    assert db.said == ["BEGIN IMMEDIATE", "COMMIT", "ROLLBACK"] and not db.in_transaction
