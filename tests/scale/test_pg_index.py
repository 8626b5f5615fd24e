"""The PostgreSQL index and key store answer exactly as the SQLite ones do: one transcript
of calls made against both must be equal. Plus what only PostgreSQL needs: NUL in text,
concurrent first opens (one migration), and a lost connection that comes back."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from recorder.errors import ArchiveError
from recorder.runtime.index import Index, RecordingRow, StoredObject
from recorder.runtime.keystore import KeyStore
from recorder.scale.errors import BackendUnavailable
from recorder.scale.pg import PG_SCHEMA_VERSION, PgIndex, PgKeyStore
from tests.scale.servers import Postgres

T = 1_700_000_000_000_000_000


def _row(n: int, **over: Any) -> RecordingRow:
    values: dict[str, Any] = dict(
        id=f"20231114T221320Z-{n:016x}",
        call_id=f"call-{n}@h\udcff",
        caller=f"+49301{n % 3}",
        callee="+4930555",
        start_ns=T + n * 10**9,
        sample_rate=8000,
        channels=2,
        path=f"recordings/2023/11/14/{n}.rec",
        created_ns=T,
    )
    values.update(over)
    return RecordingRow(**values)


def _outcome(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except (ArchiveError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"


def _index_transcript(index: Index) -> list[Any]:
    out: list[Any] = []
    for n in range(5):
        index.add_recording(_row(n, purpose="mifid" if n % 2 else "quality"))
    out.append(_outcome(index.add_recording, _row(1)))
    out.append(index.update_recording(_row(2).id, end_ns=T + 9, codecs=["PCMA", "é"], complete=True,
                                      state="closed", sha256="ab", expires_ns=T + 100))  # fmt: skip
    out.append(index.update_recording(_row(3).id, state="recovered", end_ns=T + 5))
    out.append(index.update_recording("nope", size=1))
    out.append(_outcome(index.update_recording, _row(2).id, bogus=1))
    out.append(_outcome(index.update_recording, _row(2).id, state="half"))
    out.append(index.get(_row(2).id))
    out.append(index.list_recordings())
    out.append(index.find_recordings(number="+493011"))
    out.append(index.find_recordings(start_from_ns=T + 2 * 10**9, start_to_ns=T + 4 * 10**9))
    out.append(index.find_recordings(purpose="mifid", number="+4930555"))
    out.append(index.expired(T + 100))
    out.append(index.without_expiry())
    out.append(
        [index.set_hold(_row(1).id, "case\udcff", "dpo", T), index.set_hold("x", "r", "a", T)]
    )
    out.append([index.set_hold(_row(1).id, "case 2", "dpo", T + 1), index.hold_of(_row(1).id)])
    out.append([index.holds(), index.clear_hold(_row(1).id), index.clear_hold(_row(1).id)])
    for last in (T + 5, T + 3):
        index.add_call(call_id="c1", caller="a", callee="b", first_seen_ns=T, last_seen_ns=last,
                       outcome="no_audio", reason=str(last), sensor_id="s")  # fmt: skip
    index.add_call(call_id="c2", caller="+4930555", callee="b", first_seen_ns=T + 1,
                   last_seen_ns=T + 1, outcome="refused")  # fmt: skip
    out.append(index.list_calls())
    out.append([index.delete_calls("+4930555"), index.purge_calls(T + 4), index.list_calls()])
    obj = StoredObject(recording_id=_row(2).id, object_key="k", version_id="v", sha256="ab",
                       size=5, uploaded_ns=T, sensor_id="s")  # fmt: skip
    out.append([index.add_object(obj), index.add_object(obj), index.object_of(obj.recording_id)])
    out.append(index.update_object(obj.recording_id, locked_until_ns=T + 7, legal_hold=True))
    out.append([index.list_objects(), index.delete_object(obj.recording_id), index.list_objects()])
    out.append([index.delete_recording(_row(0).id), index.delete_recording(_row(0).id)])
    out.append(index.list_recordings())
    return out


def _keys_transcript(keys: KeyStore) -> list[Any]:
    out: list[Any] = []
    keys.put("r1", "kid-a", b"\x00wrapped1", created_ns=T)
    keys.put("r2", "kid-a", b"wrapped2")
    out.append(_outcome(keys.put, "r1", "kid-b", b"other"))
    out.append(_outcome(keys.put, "r3", "", b"x"))
    out.append([keys.get("r1"), keys.get("none")])
    out.append([keys.replace("r2", "kid-b", b"rewrapped"), keys.replace("none", "k", b"w")])
    out.append([keys.kids_in_use(), keys.recording_ids()])
    out.append([keys.delete("r1"), keys.delete("r1"), keys.get("r1"), keys.recording_ids()])
    return out


def test_same_answers_as_sqlite(dsn: str, tmp_path: Path) -> None:
    with Index(tmp_path / "index.sqlite") as lite, PgIndex(dsn) as pg:
        expected, got = _index_transcript(lite), _index_transcript(pg)
        assert pg.schema_version() == PG_SCHEMA_VERSION
    for i, (a, b) in enumerate(zip(expected, got, strict=True)):
        assert a == b, f"step {i}"
    with KeyStore(tmp_path / "keys.sqlite") as lite, PgKeyStore(dsn) as pg:
        assert _keys_transcript(lite) == _keys_transcript(pg)


def test_nul_in_text_is_kept_visible(dsn: str) -> None:
    with PgIndex(dsn) as index:
        index.add_recording(_row(1, call_id="a\x00b", caller="\x00"))
        row = index.get(_row(1).id)
    assert row is not None and (row.call_id, row.caller) == ("a\\x00b", "\\x00")


def test_sensors_starting_together_migrate_once(dsn: str) -> None:
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            PgIndex(dsn).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with PgIndex(dsn) as index:
        versions = index._pg.execute("SELECT version FROM schema_version").fetchall()
    assert versions == [(v,) for v in range(1, PG_SCHEMA_VERSION + 1)]


def test_lost_connection_is_unavailable_then_comes_back(own_postgres: Postgres) -> None:
    dsn = own_postgres.create_database("lost")
    index = PgIndex(dsn, connect_timeout_s=2)
    index.add_recording(_row(1))
    own_postgres.stop("fast")
    with pytest.raises(BackendUnavailable) as down:
        index.list_recordings()
    assert down.value.backend == "postgresql"
    assert str(down.value).startswith("postgresql unavailable: ")
    with pytest.raises(BackendUnavailable):
        index.get(_row(1).id)  # reconnecting fails too while the server is away
    own_postgres.start()
    assert [r.id for r in index.list_recordings()] == [_row(1).id]
    index.close()
