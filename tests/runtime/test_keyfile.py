"""Master key files: creation, strict loading, one-line errors naming the path."""

from __future__ import annotations

import os
from base64 import b64encode
from pathlib import Path

import pytest

from recorder.container.masterkey import MasterKey
from recorder.errors import KeyFileError
from recorder.runtime.keyfile import (
    PREFIX,
    credential_path,
    encode_key_file,
    generate_master_key,
    load_key_file,
    write_key_file,
)

SECRET = bytes(range(32))
KEY = MasterKey.from_secret(SECRET)


def _plant(path: Path, text: str | bytes, mode: int = 0o600) -> Path:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    path.chmod(mode)
    return path


def _message(path: Path) -> str:
    with pytest.raises(KeyFileError) as info:
        load_key_file(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_generate_gives_distinct_32_byte_keys() -> None:
    a, b = generate_master_key(), generate_master_key()
    assert len(a.secret) == 32
    assert a.secret != b.secret
    assert a.kid == MasterKey.from_secret(a.secret).kid


def test_write_then_load_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    write_key_file(path, KEY)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert path.read_bytes() == (
        f"# recorder master key, kid {KEY.kid}\n{PREFIX} {b64encode(SECRET).decode()}\n".encode()
    )
    assert load_key_file(path) == KEY


@pytest.mark.parametrize("umask", [0o000, 0o077, 0o277])
def test_write_mode_is_0600_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        write_key_file(tmp_path / "k", KEY)
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "k").st_mode & 0o777 == 0o600


def test_write_refuses_to_overwrite(tmp_path: Path) -> None:
    path = _plant(tmp_path / "master.key", "precious")
    with pytest.raises(KeyFileError) as info:
        write_key_file(path, KEY)
    assert str(info.value) == f"key file {path} already exists; refusing to overwrite it"
    assert path.read_text() == "precious"


def test_write_refuses_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    link = tmp_path / "master.key"
    link.symlink_to(target)
    with pytest.raises(KeyFileError, match="already exists"):
        write_key_file(link, KEY)
    assert not target.exists()


def test_write_into_missing_folder(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "master.key"
    with pytest.raises(KeyFileError) as info:
        write_key_file(path, KEY)
    assert str(info.value) == f"cannot create key file {path}: No such file or directory"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    assert _message(path) == f"key file {path} does not exist"


def test_directory(tmp_path: Path) -> None:
    assert _message(tmp_path) == f"key file {tmp_path} is a directory"


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    path = tmp_path / "fifo"
    os.mkfifo(path, 0o600)
    assert _message(path) == f"key file {path} is not a regular file"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable(tmp_path: Path) -> None:
    path = _plant(tmp_path / "master.key", encode_key_file(KEY), 0o000)
    assert _message(path) == f"key file {path} is not readable by uid {os.getuid()}"


@pytest.mark.parametrize(
    ("mode", "problem"),
    [
        (0o644, "readable by others (mode 0644)"),
        (0o604, "readable by others (mode 0604)"),
        (0o602, "writable by others (mode 0602)"),
        (0o601, "executable by others (mode 0601)"),
        (0o640, "readable by its group (mode 0640)"),
        (0o620, "writable by its group (mode 0620)"),
        (0o660, "readable by its group (mode 0660)"),
        (0o666, "readable by others (mode 0666)"),
    ],
)
def test_loose_permissions_are_refused(tmp_path: Path, mode: int, problem: str) -> None:
    path = _plant(tmp_path / "master.key", encode_key_file(KEY), mode)
    assert _message(path) == f"key file {path} is {problem}; run chmod 600 {path}"


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_private_modes_are_accepted(tmp_path: Path, mode: int) -> None:
    path = _plant(tmp_path / "master.key", encode_key_file(KEY), mode)
    assert load_key_file(path) == KEY


def test_credentials_directory_allows_group_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    inside = _plant(creds / "master-key", encode_key_file(KEY), 0o440)
    assert credential_path("master-key") == inside
    assert load_key_file(inside) == KEY
    outside = _plant(tmp_path / "master.key", encode_key_file(KEY), 0o440)
    assert _message(outside) == (
        f"key file {outside} is readable by its group (mode 0440); run chmod 600 {outside}"
    )
    world = _plant(creds / "other", encode_key_file(KEY), 0o444)
    assert "is readable by others (mode 0444)" in _message(world)
    group_write = _plant(creds / "gw", encode_key_file(KEY), 0o460)
    assert "is writable by its group (mode 0460)" in _message(group_write)


def test_credential_path_without_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert credential_path("master-key") is None


GOOD_LINE = f"{PREFIX} {b64encode(SECRET).decode()}"
WRONG_FORMAT = "is not a recorder master key (expected one line 'RECORDER-MASTER-KEY-V1 <base64>')"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", WRONG_FORMAT),
        ("# only a comment\n", WRONG_FORMAT),
        (b64encode(SECRET).decode() + "\n", WRONG_FORMAT),
        (f"RECORDER-MASTER-KEY-V2 {b64encode(SECRET).decode()}\n", WRONG_FORMAT),
        (f"{GOOD_LINE}\n{GOOD_LINE}\n", WRONG_FORMAT),
        (f"{PREFIX}{b64encode(SECRET).decode()}\n", WRONG_FORMAT),
        (f"{PREFIX} not*base64!\n", "holds invalid base64 after RECORDER-MASTER-KEY-V1"),
        (
            f"{PREFIX} {b64encode(SECRET[:16]).decode()}\n",
            "holds a 16-byte key; a master key is 32 bytes",
        ),
        (
            f"{PREFIX} {b64encode(SECRET + b'x').decode()}\n",
            "holds a 33-byte key; a master key is 32 bytes",
        ),
        (f"{PREFIX} \n", WRONG_FORMAT),
        (b"\xff" * 32, "is not a recorder master key (not text)"),
        ("#" * 5000, "is too large to be a master key file"),
    ],
)
def test_malformed_files(tmp_path: Path, content: str | bytes, problem: str) -> None:
    path = _plant(tmp_path / "master.key", content)
    assert _message(path) == f"key file {path} {problem}"


def test_comments_blank_lines_and_crlf_are_tolerated(tmp_path: Path) -> None:
    path = _plant(tmp_path / "k", f"\r\n# note\r\n\r\n  {GOOD_LINE}  \r\n")
    assert load_key_file(path) == KEY


def test_path_with_control_characters_stays_one_line(tmp_path: Path) -> None:
    path = tmp_path / "evil\nname"
    assert _message(path) == f"key file {str(path)!r} does not exist"


def test_repr_never_shows_the_secret(tmp_path: Path) -> None:
    write_key_file(tmp_path / "k", KEY)
    assert SECRET.hex() not in repr(load_key_file(tmp_path / "k"))
