"""Master key files: create them safely, and refuse to load one that is not kept secret.

The file is text, so an operator can recognise it and back it up::

    # recorder master key, kid 0123456789abcdef
    RECORDER-MASTER-KEY-V1 <32 bytes, standard base64>

Lines starting with "#" and blank lines are ignored. The same file works as a systemd
credential (`LoadCredential=master-key:/etc/recorder/master.key`): systemd copies it into
`$CREDENTIALS_DIRECTORY` as 0400 or 0440, so group read is accepted there and nowhere else.
Every failure raises `KeyFileError` with one line naming the problem and the path.

Several master keys (after a rotation) live in a key directory: see `KeyRing`.
"""

from __future__ import annotations

import binascii
import os
import stat
from base64 import b64decode, b64encode
from dataclasses import dataclass
from pathlib import Path

from recorder.container.masterkey import MASTER_KEY_BYTES, MasterKey
from recorder.errors import KeyFileError
from recorder.runtime.files import fsync_dir

PREFIX = "RECORDER-MASTER-KEY-V1"
MAX_FILE_BYTES = 4096  # a key file is ~100 bytes; anything big is the wrong file


def generate_master_key() -> MasterKey:
    """A fresh random 256-bit master key from the OS CSPRNG."""
    return MasterKey.from_secret(os.urandom(MASTER_KEY_BYTES))


def credential_path(name: str) -> Path | None:
    """`$CREDENTIALS_DIRECTORY/name` when running under systemd with credentials, else None."""
    folder = os.environ.get("CREDENTIALS_DIRECTORY")
    return Path(folder) / name if folder else None


def encode_key_file(key: MasterKey) -> bytes:
    """The bytes `write_key_file` stores for `key`."""
    line = b64encode(key.secret).decode("ascii")
    return f"# recorder master key, kid {key.kid}\n{PREFIX} {line}\n".encode("ascii")


def write_key_file(path: Path, key: MasterKey) -> None:
    """Create `path` (mode 0600) holding `key`; never overwrite an existing file."""
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise KeyFileError(
            f"key file {_show(path)} already exists; refusing to overwrite it"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"cannot create key file {_show(path)}: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)  # the umask may have removed owner bits; it can never add any
        data = encode_key_file(key)
        while data:
            data = data[os.write(fd, data) :]
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        os.unlink(path)  # never leave half a key behind
        raise KeyFileError(f"cannot write key file {_show(path)}: {exc.strerror}") from None
    os.close(fd)
    fsync_dir(path.parent)


def load_key_file(path: Path) -> MasterKey:
    """Read and check a key file; `KeyFileError` names the path and the one thing wrong."""
    text = _read_private(path)
    return _parse(path, text)


def _read_private(path: Path) -> str:
    # O_NONBLOCK: opening a FIFO by mistake must fail fast, not hang the service.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise KeyFileError(f"key file {_show(path)} does not exist") from None
    except PermissionError:
        raise KeyFileError(f"key file {_show(path)} is not readable by uid {os.getuid()}") from None
    except OSError as exc:
        raise KeyFileError(f"cannot open key file {_show(path)}: {exc.strerror}") from None
    try:
        _check_mode(path, os.fstat(fd))  # fstat the open file: no race with a swapped path
        data = os.read(fd, MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {_show(path)}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise KeyFileError(f"key file {_show(path)} is too large to be a master key file")
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise KeyFileError(
            f"key file {_show(path)} is not a recorder master key (not text)"
        ) from None


def _check_mode(path: Path, st: os.stat_result) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise KeyFileError(f"key file {_show(path)} is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"key file {_show(path)} is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    extra = 0o040 if _in_credentials_dir(path) else 0  # systemd credentials may be 0440
    bad = mode & 0o077 & ~extra
    if not bad:
        return
    who, bits = ("others", bad & 0o007) if bad & 0o007 else ("its group", bad & 0o070)
    verb = "readable" if bits & 0o044 else "writable" if bits & 0o022 else "executable"
    raise KeyFileError(
        f"key file {_show(path)} is {verb} by {who} (mode {mode:04o}); run chmod 600 {_show(path)}"
    )


def _in_credentials_dir(path: Path) -> bool:
    folder = os.environ.get("CREDENTIALS_DIRECTORY")
    if not folder:
        return False
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def _parse(path: Path, text: str) -> MasterKey:
    lines = [ln.strip() for ln in text.splitlines()]
    keys = [ln for ln in lines if ln and not ln.startswith("#")]
    if len(keys) != 1 or not keys[0].startswith(PREFIX + " "):
        raise KeyFileError(
            f"key file {_show(path)} is not a recorder master key "
            f"(expected one line '{PREFIX} <base64>')"
        )
    try:
        secret = b64decode(keys[0][len(PREFIX) + 1 :].strip(), validate=True)
    except binascii.Error:
        raise KeyFileError(f"key file {_show(path)} holds invalid base64 after {PREFIX}") from None
    if len(secret) != MASTER_KEY_BYTES:
        raise KeyFileError(
            f"key file {_show(path)} holds a {len(secret)}-byte key; "
            f"a master key is {MASTER_KEY_BYTES} bytes"
        )
    return MasterKey.from_secret(secret)


def _show(path: Path) -> str:
    """The path for a one-line message: as typed, or repr() if it holds control characters."""
    text = str(path)
    return text if text.isprintable() else repr(text)


# -- key rings: several master keys, one current ---------------------------------------------

CURRENT_NAME = "current"
KEY_SUFFIX = ".key"


@dataclass(frozen=True)
class KeyRing:
    """The master keys an archive needs: `current` wraps new recordings' file keys, the
    others (older, after a rotation) only unwrap until `keys rewrap` and `keys retire`.

    On disk a ring is either one key file (a ring of one; `--key master.key`) or a key
    directory (mode 0700) holding `<kid>.key` files (each an ordinary key file, 0600) and a
    file `current` naming the current kid."""

    path: Path
    current: MasterKey
    keys: dict[str, MasterKey]  # by kid, the current one included

    @property
    def is_directory(self) -> bool:
        return self.path.is_dir()


def load_key_ring(path: Path) -> KeyRing:
    """A key file or key directory; `KeyFileError` names the path and the problem."""
    if not path.is_dir():
        key = load_key_file(path)
        return KeyRing(path, key, {key.kid: key})
    _check_dir(path)
    keys: dict[str, MasterKey] = {}
    for file in sorted(path.glob("*" + KEY_SUFFIX)):
        key = load_key_file(file)
        if file.name != key.kid + KEY_SUFFIX:
            raise KeyFileError(
                f"key file {_show(file)} holds key {key.kid}; it must be named {key.kid}.key"
            )
        keys[key.kid] = key
    kid = _read_private(path / CURRENT_NAME).strip() if (path / CURRENT_NAME).exists() else ""
    if kid not in keys:
        raise KeyFileError(
            f"key directory {_show(path)} has no current key "
            f"({'none named' if not kid else kid + '.key is missing'})"
        )
    return KeyRing(path, keys[kid], keys)


def add_ring_key(folder: Path, key: MasterKey) -> None:
    """Store `key` in the key directory (created 0700 if missing) and make it current."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    _check_dir(folder)
    file = folder / (key.kid + KEY_SUFFIX)
    if not file.exists():
        write_key_file(file, key)
    set_current(folder, key.kid)


def set_current(folder: Path, kid: str) -> None:
    """Atomically point the key directory's `current` at `kid`."""
    tmp = folder / f".{CURRENT_NAME}.tmp"
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, f"{kid}\n".encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, folder / CURRENT_NAME)
    fsync_dir(folder)


def remove_ring_key(folder: Path, kid: str) -> None:
    """Delete a retired key's file from the key directory (never the current key)."""
    ring = load_key_ring(folder)
    if kid == ring.current.kid:
        raise KeyFileError(f"key {kid} is the current key of {_show(folder)}; rotate first")
    (folder / (kid + KEY_SUFFIX)).unlink()
    fsync_dir(folder)


def _check_dir(folder: Path) -> None:
    mode = stat.S_IMODE(os.stat(folder).st_mode)
    if mode & 0o077:
        raise KeyFileError(
            f"key directory {_show(folder)} is accessible by others (mode {mode:04o}); "
            f"run chmod 700 {_show(folder)}"
        )
