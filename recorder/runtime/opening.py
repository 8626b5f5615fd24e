"""Opening a stored recording: its file key from the key store, unwrapped by a master key,
and a reader that hashes every byte it reads (so a file is read once to check both its
authentication and its recorded SHA-256)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import BinaryIO

from recorder.container.keywrap import unwrap_file_key
from recorder.container.masterkey import MasterKey
from recorder.errors import IntegrityError
from recorder.runtime.keystore import KeyStore


def file_key_for(keys: KeyStore, masters: Mapping[str, MasterKey], recording_id: str) -> bytes:
    entry = keys.get(recording_id)
    if entry is None:
        raise IntegrityError("its file key is not in the key store (destroyed or never stored)")
    _kid, wrapped = entry
    return unwrap_file_key(masters, wrapped, recording_id)


class HashingReader:
    """A read-only file wrapper that feeds everything read into a SHA-256."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.sha256 = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1, /) -> bytes:
        data = self._f.read(n)
        self.sha256.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        """Read (and hash) whatever the decryption did not consume."""
        while self.read(1 << 20):
            pass
