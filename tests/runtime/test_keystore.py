"""The key store: wrapped file keys by recording id, and shredding that really erases."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from recorder.errors import ArchiveError
from recorder.runtime.keystore import KeyStore

KID_A = "0123456789abcdef"
KID_B = "fedcba9876543210"


def _wrapped(i: int) -> bytes:
    """40 distinct, recognisable bytes (the size of an RFC 3394 wrap of a 256-bit key)."""
    return bytes([0xA5, i]) + os.urandom(38)


def _all_bytes(path: Path) -> bytes:
    """The database and any journal/WAL files beside it."""
    return b"".join(p.read_bytes() for p in sorted(path.parent.glob(path.name + "*")))


def test_put_get_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "keys.sqlite"
    wrapped = _wrapped(1)
    with KeyStore(path) as store:
        store.put("rec-1", KID_A, wrapped, created_ns=5)
        assert store.get("rec-1") == (KID_A, wrapped)
        assert store.get("rec-2") is None
    with KeyStore.open(path, create=False) as again:
        assert again.get("rec-1") == (KID_A, wrapped)
        assert again.recording_ids() == ["rec-1"]
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_put_never_overwrites(tmp_path: Path) -> None:
    with KeyStore(tmp_path / "keys.sqlite") as store:
        store.put("rec-1", KID_A, b"first")
        with pytest.raises(ArchiveError) as info:
            store.put("rec-1", KID_B, b"second")
        assert str(info.value) == "recording 'rec-1' already has a key in the key store"
        assert store.get("rec-1") == (KID_A, b"first")


@pytest.mark.parametrize(("kid", "wrapped"), [("", b"x"), (KID_A, b""), (KID_A, "text")])
def test_put_refuses_empty_or_wrong_types(tmp_path: Path, kid: str, wrapped: bytes) -> None:
    with KeyStore(tmp_path / "keys.sqlite") as store, pytest.raises(ValueError):
        store.put("rec-1", kid, wrapped)


def test_delete(tmp_path: Path) -> None:
    with KeyStore(tmp_path / "keys.sqlite") as store:
        store.put("rec-1", KID_A, b"k")
        assert store.delete("rec-1") is True
        assert store.get("rec-1") is None
        assert store.delete("rec-1") is False


def test_replace_rewraps(tmp_path: Path) -> None:
    with KeyStore(tmp_path / "keys.sqlite") as store:
        store.put("rec-1", KID_A, b"old")
        assert store.replace("rec-1", KID_B, b"new-wrap") is True
        assert store.get("rec-1") == (KID_B, b"new-wrap")
        assert store.replace("rec-9", KID_B, b"x") is False
        assert store.get("rec-9") is None


def test_kids_in_use(tmp_path: Path) -> None:
    with KeyStore(tmp_path / "keys.sqlite") as store:
        assert store.kids_in_use() == {}
        for i in range(3):
            store.put(f"a{i}", KID_A, b"k")
        store.put("b0", KID_B, b"k")
        assert store.kids_in_use() == {KID_A: 3, KID_B: 1}
        store.delete("b0")
        assert store.kids_in_use() == {KID_A: 3}


def test_durability_settings(tmp_path: Path) -> None:
    with KeyStore(tmp_path / "keys.sqlite") as store:
        db = store._db
        assert db.execute("PRAGMA secure_delete").fetchone()[0] == 1
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_deleted_key_bytes_are_gone_from_every_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.sqlite"
    keys = {f"rec-{i}": _wrapped(i) for i in range(50)}
    with KeyStore(path) as store:
        for rid, wrapped in keys.items():
            store.put(rid, KID_A, wrapped)
    assert keys["rec-7"] in _all_bytes(path)  # the search below can find it
    with KeyStore(path) as store:
        assert store.delete("rec-7")
        assert store.replace("rec-8", KID_B, _wrapped(200))
    data = _all_bytes(path)
    assert keys["rec-7"] not in data
    assert keys["rec-8"] not in data
    assert keys["rec-9"] in data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.sqlite"]  # no WAL, no journal


def test_without_secure_delete_the_bytes_would_linger(tmp_path: Path) -> None:
    """The control for the test above: plain SQLite leaves deleted cells in the file."""
    path = tmp_path / "plain.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA secure_delete=OFF")
    db.execute("CREATE TABLE k (id TEXT PRIMARY KEY, wrapped BLOB)")
    keys = {f"rec-{i}": _wrapped(i) for i in range(50)}
    for rid, wrapped in keys.items():
        db.execute("INSERT INTO k VALUES (?, ?)", (rid, wrapped))
    db.execute("DELETE FROM k WHERE id = 'rec-7'")
    db.close()
    assert keys["rec-7"] in path.read_bytes()


def test_missing_store_without_create(tmp_path: Path) -> None:
    path = tmp_path / "keys.sqlite"
    with pytest.raises(ArchiveError) as info:
        KeyStore(path, create=False)
    assert str(info.value) == f"key store {path} does not exist"
    assert not path.exists()


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "keys.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ArchiveError) as info:
        KeyStore(path)
    assert str(info.value) == f"key store {path} is unusable: file is not a database"


def test_two_handles_see_each_others_writes(tmp_path: Path) -> None:
    path = tmp_path / "keys.sqlite"
    with KeyStore(path) as writer, KeyStore(path) as reader:
        writer.put("rec-1", KID_A, b"k1")
        assert reader.get("rec-1") == (KID_A, b"k1")
        reader.delete("rec-1")
        assert writer.get("rec-1") is None
