"""Recording format v1: constants, the header and the key derivations.

The layout and every derivation are specified in docs/format-v1.md. A file is

    magic || u32 metadata length || metadata (canonical JSON) || salt
    || header MAC || key commitment || sealed segments

The header MAC is age's construction (C2SP age.md); the payload key, base nonce
and key commitment come from one HKDF call, as in C2SP chunked-encryption, with
the header's hash in `info` (Tink's "associated data goes into HKDF info"), so
a payload cannot be relabelled with another recording's metadata.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.constant_time import bytes_eq
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from recorder.errors import IntegrityError

MAGIC = b"RECORDER/v1\n"
SEGMENT_BYTES = 16384  # plaintext bytes in every segment but the final one
TAG_BYTES = 16
SEALED_SEGMENT_BYTES = SEGMENT_BYTES + TAG_BYTES
FILE_KEY_BYTES = 32
SALT_BYTES = 32
MAC_BYTES = 32
COMMITMENT_BYTES = 32
NONCE_BYTES = 12
MAX_SEGMENTS = 2**32  # Tink's bound: the counter never leaves 32 bits
MAX_METADATA_BYTES = 65536
# magic, the length field, salt, MAC and commitment: everything but the metadata.
HEADER_OVERHEAD = len(MAGIC) + 4 + SALT_BYTES + MAC_BYTES + COMMITMENT_BYTES

HEADER_MAC_INFO = b"recorder/v1 header"
PAYLOAD_INFO = b"recorder/v1 payload"

_MAX_INT = 2**63
_FIELDS = frozenset(
    {
        "channel_map",
        "channels",
        "content",
        "created_ns",
        "extra",
        "recording_id",
        "sample_rate",
        "segment_bytes",
    }
)


def _check_text(name: str, value: object, max_len: int) -> None:
    if not isinstance(value, str) or not 1 <= len(value) <= max_len or not value.isprintable():
        raise ValueError(f"{name} must be 1-{max_len} printable characters")


def _check_int(name: str, value: object, low: int, high: int) -> None:
    # bool is an int subclass; JSON true must not pass as 1.
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}]")


@dataclass(frozen=True)
class RecordingHeader:
    """The authenticated metadata of one recording file. No phone numbers or URIs here:
    they live in the index, so the header of a shredded recording reveals nothing."""

    recording_id: str
    created_ns: int
    content: str  # "pcm_s16le"; "rtp" for raw RTP. The container treats payload as opaque.
    sample_rate: int
    channels: int
    channel_map: tuple[str, ...]
    segment_bytes: int = SEGMENT_BYTES
    extra: dict[str, str | int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_text("recording_id", self.recording_id, 256)
        _check_int("created_ns", self.created_ns, 0, _MAX_INT - 1)
        _check_text("content", self.content, 64)
        _check_int("sample_rate", self.sample_rate, 1, 1_000_000)
        _check_int("channels", self.channels, 1, 64)
        if not isinstance(self.channel_map, tuple | list):
            raise ValueError("channel_map must be a list of names")
        object.__setattr__(self, "channel_map", tuple(self.channel_map))
        if len(self.channel_map) != self.channels:
            raise ValueError("channel_map must name every channel")
        for name in self.channel_map:
            _check_text("channel name", name, 64)
        if self.segment_bytes != SEGMENT_BYTES:
            raise ValueError(f"segment_bytes must be {SEGMENT_BYTES} in format v1")
        _check_extra(self.extra)

    def to_json(self) -> bytes:
        """Canonical metadata: UTF-8 JSON, sorted keys, no spaces."""
        obj: dict[str, Any] = {
            "channel_map": list(self.channel_map),
            "channels": self.channels,
            "content": self.content,
            "created_ns": self.created_ns,
            "extra": dict(self.extra),
            "recording_id": self.recording_id,
            "sample_rate": self.sample_rate,
            "segment_bytes": self.segment_bytes,
        }
        return _canonical(obj)

    @classmethod
    def from_json(cls, data: bytes) -> RecordingHeader:
        """Parse canonical metadata, or raise IntegrityError("header malformed: ...")."""
        try:
            obj = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise IntegrityError("header malformed: metadata is not JSON") from None
        if not isinstance(obj, dict) or set(obj) != _FIELDS:
            raise IntegrityError("header malformed: wrong metadata fields")
        try:
            header = cls(**obj)
        except (TypeError, ValueError) as exc:
            raise IntegrityError(f"header malformed: {exc}") from None
        if header.to_json() != data:
            raise IntegrityError("header malformed: metadata is not canonical")
        return header


def _check_extra(extra: object) -> None:
    if not isinstance(extra, dict) or len(extra) > 64:
        raise ValueError("extra must be a dict of at most 64 entries")
    for key, value in extra.items():
        _check_text("extra key", key, 64)
        if isinstance(value, str):
            if len(value) > 1024:
                raise ValueError("extra values are at most 1024 characters")
        else:
            _check_int("extra value", value, -_MAX_INT, _MAX_INT - 1)


def _canonical(obj: dict[str, Any]) -> bytes:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        raise ValueError("metadata strings must be valid Unicode") from None


class PayloadKeys(NamedTuple):
    """What one HKDF call yields for the payload (C2SP chunked-encryption layout)."""

    key: bytes
    base_nonce: bytes
    commitment: bytes


def sha256(data: bytes) -> bytes:
    """SHA-256 of `data`."""
    digest = hashes.Hash(hashes.SHA256())
    digest.update(data)
    return digest.finalize()


def header_mac_key(file_key: bytes) -> bytes:
    """HKDF-SHA-256(ikm=file key, salt absent, info="recorder/v1 header"), 32 bytes (age)."""
    return HKDF(hashes.SHA256(), 32, None, HEADER_MAC_INFO).derive(file_key)


def header_mac(file_key: bytes, signed: bytes) -> bytes:
    """HMAC-SHA-256 over magic..salt with the header key."""
    mac = hmac.HMAC(header_mac_key(file_key), hashes.SHA256())
    mac.update(signed)
    return mac.finalize()


def verify_header_mac(file_key: bytes, signed: bytes, tag: bytes) -> None:
    """Constant-time MAC check; raises IntegrityError("header MAC ...")."""
    mac = hmac.HMAC(header_mac_key(file_key), hashes.SHA256())
    mac.update(signed)
    try:
        mac.verify(tag)
    except InvalidSignature:
        raise IntegrityError("header MAC failed: wrong file key or tampered header") from None


def payload_keys(file_key: bytes, salt: bytes, signed: bytes, tag: bytes) -> PayloadKeys:
    """key || base nonce || commitment = HKDF-SHA-256(ikm=file key, salt=salt,
    info="recorder/v1 payload" || SHA-256(magic..salt || MAC))."""
    info = PAYLOAD_INFO + sha256(signed + tag)
    okm = HKDF(hashes.SHA256(), 32 + NONCE_BYTES + COMMITMENT_BYTES, salt, info).derive(file_key)
    return PayloadKeys(okm[:32], okm[32 : 32 + NONCE_BYTES], okm[32 + NONCE_BYTES :])


def verify_commitment(keys: PayloadKeys, commitment: bytes) -> None:
    """Check the key commitment before any segment is opened (AES-GCM alone does not commit)."""
    if not bytes_eq(keys.commitment, commitment):
        raise IntegrityError("key commitment failed: header and payload keys disagree")


def segment_nonce(base_nonce: bytes, counter: int) -> bytes:
    """base nonce XOR the 96-bit big-endian counter; refuses counters beyond 2^32 - 1."""
    if not 0 <= counter < MAX_SEGMENTS:
        raise IntegrityError("too many segments: the counter is limited to 2^32")
    return (int.from_bytes(base_nonce, "big") ^ counter).to_bytes(NONCE_BYTES, "big")


def plaintext_length(payload_bytes: int) -> int | None:
    """Plaintext size of a complete file whose segments take `payload_bytes` (file size minus
    header length), or None when no valid segmentation has that size. Lets an exporter write a
    WAV header before streaming; the strict reader still has the last word."""
    full, final = divmod(payload_bytes, SEALED_SEGMENT_BYTES)
    if payload_bytes < 0 or final < TAG_BYTES or full >= MAX_SEGMENTS:
        return None
    return payload_bytes - TAG_BYTES * (full + 1)


@dataclass(frozen=True)
class HeaderBlock:
    """A header as stored: `signed` is magic..salt (what the MAC covers)."""

    header: RecordingHeader
    signed: bytes
    salt: bytes
    mac: bytes
    commitment: bytes

    @property
    def length(self) -> int:
        """Bytes from the start of the file to the first segment."""
        return len(self.signed) + MAC_BYTES + COMMITMENT_BYTES

    @property
    def raw(self) -> bytes:
        """The header exactly as written to the file."""
        return self.signed + self.mac + self.commitment


def encode_header(header: RecordingHeader, file_key: bytes, salt: bytes) -> HeaderBlock:
    """Build the stored header for `header` under `file_key` and a random 32-byte `salt`."""
    return sealing_header(header, file_key, salt)[0]


def sealing_header(
    header: RecordingHeader, file_key: bytes, salt: bytes
) -> tuple[HeaderBlock, PayloadKeys]:
    """`encode_header` and the payload keys it commits to, from one HKDF run (a writer
    needs both; deriving them twice cost about 15 us a recording)."""
    if len(file_key) != FILE_KEY_BYTES:
        raise ValueError(f"a file key is {FILE_KEY_BYTES} bytes")
    if len(salt) != SALT_BYTES:
        raise ValueError(f"a header salt is {SALT_BYTES} bytes")
    meta = header.to_json()
    if len(meta) > MAX_METADATA_BYTES:
        raise ValueError("metadata too large")
    signed = MAGIC + len(meta).to_bytes(4, "big") + meta + salt
    tag = header_mac(file_key, signed)
    keys = payload_keys(file_key, salt, signed, tag)
    return HeaderBlock(header, signed, salt, tag, keys.commitment), keys
