"""Wrapping a recording's file key under a master key (AES-256-GCM).

The wrapped key lives in the archive's key store, outside the recording: deleting
it shreds the recording. Blob layout (docs/format-v1.md, "Wrapped file key"):

    version (0x01) || kid length (u8) || kid (ASCII) || nonce (12) || AES-GCM(file key) + tag

The AEAD key is HKDF-derived from the master secret; the AAD binds the label,
the version, the kid and the recording id, so a wrapped key moved to another
recording, or relabelled with another kid, fails to open.
"""

from __future__ import annotations

from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from recorder.container.format import FILE_KEY_BYTES, NONCE_BYTES, TAG_BYTES
from recorder.container.masterkey import MasterKey
from recorder.errors import IntegrityError

WRAP_VERSION = 1
WRAP_KEY_INFO = b"recorder/v1 file-key wrap"
WRAP_AAD_LABEL = b"recorder/v1 file-key\x00"
_MAX_KID = 64


def _wrapping_key(master: MasterKey) -> AESGCM:
    # A derived key, so the master secret itself is never used as an AES key.
    return AESGCM(HKDF(hashes.SHA256(), 32, None, WRAP_KEY_INFO).derive(master.secret))


def _prefix(kid: str) -> bytes:
    if not (1 <= len(kid) <= _MAX_KID and kid.isascii() and kid.isprintable()):
        raise ValueError("a key id is 1-64 printable ASCII characters")
    raw = kid.encode("ascii")
    return bytes((WRAP_VERSION, len(raw))) + raw


def _aad(prefix: bytes, recording_id: str) -> bytes:
    # The prefix is self-delimiting (it carries the kid's length) and the id comes last.
    return WRAP_AAD_LABEL + prefix + recording_id.encode("utf-8")


def wrap_file_key(master: MasterKey, file_key: bytes, recording_id: str, nonce: bytes) -> bytes:
    """Wrap `file_key` for `recording_id`. `nonce` is 12 fresh random bytes (`os.urandom(12)`)."""
    if len(file_key) != FILE_KEY_BYTES:
        raise ValueError(f"a file key is {FILE_KEY_BYTES} bytes")
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"a wrap nonce is {NONCE_BYTES} bytes")
    prefix = _prefix(master.kid)
    sealed = _wrapping_key(master).encrypt(nonce, file_key, _aad(prefix, recording_id))
    return prefix + nonce + sealed


def _split(blob: bytes) -> tuple[bytes, str, bytes, bytes]:
    """prefix, kid, nonce, sealed key; IntegrityError if the blob is not a v1 wrapped key."""
    if len(blob) < 2 or blob[0] != WRAP_VERSION:
        raise IntegrityError("wrapped key malformed: unknown version")
    end = 2 + blob[1]
    if blob[1] == 0 or len(blob) != end + NONCE_BYTES + FILE_KEY_BYTES + TAG_BYTES:
        raise IntegrityError("wrapped key malformed: bad length")
    try:
        kid = blob[2:end].decode("ascii")
    except UnicodeDecodeError:
        raise IntegrityError("wrapped key malformed: bad key id") from None
    if not kid.isprintable():
        raise IntegrityError("wrapped key malformed: bad key id")
    return blob[:end], kid, blob[end : end + NONCE_BYTES], blob[end + NONCE_BYTES :]


def wrapped_key_kid(blob: bytes) -> str:
    """The id of the master key a wrapped key needs (not authenticated until unwrapped)."""
    return _split(blob)[1]


def unwrap_file_key(keys: Mapping[str, MasterKey], blob: bytes, recording_id: str) -> bytes:
    """Recover the file key of `recording_id` with the master keys loaded, by kid."""
    prefix, kid, nonce, sealed = _split(blob)
    master = keys.get(kid)
    if master is None:
        raise IntegrityError(f"wrapped key needs master key {kid}, which is not loaded")
    try:
        return _wrapping_key(master).decrypt(nonce, sealed, _aad(prefix, recording_id))
    except InvalidTag:
        raise IntegrityError(
            f"wrapped key failed authentication under master key {kid}: "
            "wrong master key, wrong recording id or tampered key"
        ) from None
