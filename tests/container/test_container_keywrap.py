"""Wrapping file keys: layout, binding to the recording id and the kid, every failure."""

from __future__ import annotations

import pytest

from recorder.container.keywrap import unwrap_file_key, wrap_file_key, wrapped_key_kid
from recorder.container.masterkey import MasterKey
from recorder.errors import IntegrityError

from .container_vectors import FILE_KEY, MASTER, OTHER_MASTER, RECORDING_ID, WRAP_NONCE, flip

KEYS = {MASTER.kid: MASTER}
BLOB = wrap_file_key(MASTER, FILE_KEY, RECORDING_ID, WRAP_NONCE)
AUTH_FAILED = (
    f"wrapped key failed authentication under master key {MASTER.kid}: "
    "wrong master key, wrong recording id or tampered key"
)


def test_layout() -> None:
    assert len(BLOB) == 1 + 1 + 16 + 12 + 32 + 16
    assert BLOB[0] == 1
    assert BLOB[1] == 16
    assert BLOB[2:18] == MASTER.kid.encode("ascii")
    assert BLOB[18:30] == WRAP_NONCE
    assert FILE_KEY not in BLOB
    assert wrapped_key_kid(BLOB) == MASTER.kid


def test_round_trip_and_rotation() -> None:
    assert unwrap_file_key(KEYS, BLOB, RECORDING_ID) == FILE_KEY
    # After rotation both keys are loaded; each blob names the one it needs.
    newer = wrap_file_key(OTHER_MASTER, FILE_KEY, RECORDING_ID, WRAP_NONCE)
    both = {MASTER.kid: MASTER, OTHER_MASTER.kid: OTHER_MASTER}
    assert unwrap_file_key(both, BLOB, RECORDING_ID) == FILE_KEY
    assert unwrap_file_key(both, newer, RECORDING_ID) == FILE_KEY
    assert newer[18:] != BLOB[18:]


def test_moved_to_another_recording_fails() -> None:
    with pytest.raises(IntegrityError) as info:
        unwrap_file_key(KEYS, BLOB, "vec-0002")
    assert str(info.value) == AUTH_FAILED


def test_unknown_kid_names_the_missing_key() -> None:
    blob = wrap_file_key(OTHER_MASTER, FILE_KEY, RECORDING_ID, WRAP_NONCE)
    with pytest.raises(IntegrityError) as info:
        unwrap_file_key(KEYS, blob, RECORDING_ID)
    assert (
        str(info.value) == f"wrapped key needs master key {OTHER_MASTER.kid}, which is not loaded"
    )


def test_wrong_master_under_the_right_kid_fails() -> None:
    impostor = MasterKey(secret=OTHER_MASTER.secret, kid=MASTER.kid)
    with pytest.raises(IntegrityError) as info:
        unwrap_file_key({MASTER.kid: impostor}, BLOB, RECORDING_ID)
    assert str(info.value) == AUTH_FAILED


def test_kid_is_authenticated() -> None:
    # A blob relabelled to claim another loaded kid fails even if that key could decrypt.
    other = MasterKey(secret=MASTER.secret, kid="0" * 16)
    relabelled = BLOB[:2] + other.kid.encode() + BLOB[18:]
    with pytest.raises(IntegrityError, match="failed authentication"):
        unwrap_file_key({other.kid: other}, relabelled, RECORDING_ID)


@pytest.mark.parametrize("pos", range(len(BLOB)))
def test_every_byte_is_authenticated(pos: int) -> None:
    with pytest.raises(IntegrityError, match=r"^wrapped key (malformed|needs|failed)"):
        unwrap_file_key(KEYS, flip(BLOB, pos, 6), RECORDING_ID)


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"", "unknown version"),
        (b"\x02" + BLOB[1:], "unknown version"),
        (BLOB[:-1], "bad length"),
        (BLOB + b"\x00", "bad length"),
        (b"\x01\x00" + BLOB[18:], "bad length"),
        (BLOB[:2] + b"\xff" * 16 + BLOB[18:], "bad key id"),
        (BLOB[:2] + b"\x07" * 16 + BLOB[18:], "bad key id"),
    ],
)
def test_malformed_blobs(blob: bytes, message: str) -> None:
    with pytest.raises(IntegrityError, match=f"^wrapped key malformed: {message}"):
        wrapped_key_kid(blob)
    with pytest.raises(IntegrityError, match=f"^wrapped key malformed: {message}"):
        unwrap_file_key(KEYS, blob, RECORDING_ID)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="file key is 32 bytes"):
        wrap_file_key(MASTER, FILE_KEY[:31], RECORDING_ID, WRAP_NONCE)
    with pytest.raises(ValueError, match="nonce is 12 bytes"):
        wrap_file_key(MASTER, FILE_KEY, RECORDING_ID, WRAP_NONCE[:8])
    with pytest.raises(ValueError, match="key id is 1-64 printable ASCII"):
        wrap_file_key(MasterKey(MASTER.secret, "é"), FILE_KEY, RECORDING_ID, WRAP_NONCE)
