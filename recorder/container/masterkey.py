"""The master key: a 256-bit secret and the id that names it.

The id is derived from the secret, so a wrapped file key can say which master
key opens it without revealing anything about the key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

MASTER_KEY_BYTES = 32


def key_id_for(secret: bytes) -> str:
    """16 hex digits naming a master key; a one-way function of the secret."""
    return hashlib.sha256(b"recorder/v1 key-id\x00" + secret).hexdigest()[:16]


@dataclass(frozen=True)
class MasterKey:
    secret: bytes
    kid: str

    @classmethod
    def from_secret(cls, secret: bytes) -> MasterKey:
        if len(secret) != MASTER_KEY_BYTES:
            raise ValueError(f"a master key is {MASTER_KEY_BYTES} bytes, not {len(secret)}")
        return cls(secret=secret, kid=key_id_for(secret))

    def __repr__(self) -> str:  # never print the secret
        return f"MasterKey(kid={self.kid!r})"
