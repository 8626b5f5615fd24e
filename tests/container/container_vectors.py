"""The format v1 test-vector corpus: deterministic inputs, generation, parsing, checking.

Regenerate the committed files (only when the format changes on purpose):

    python -m tests.container.container_vectors --write

Each vector file is `key: value` lines, a blank line, then the recording file in
base64 (76-column lines). docs/format-v1.md explains the fields and the procedure
`check_vector` follows, so another implementation can run the same corpus.
"""

from __future__ import annotations

import base64
import hashlib
import io
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from recorder.container.format import (
    SEALED_SEGMENT_BYTES,
    SEGMENT_BYTES,
    RecordingHeader,
    header_mac_key,
    payload_keys,
    segment_nonce,
)
from recorder.container.keywrap import unwrap_file_key, wrap_file_key
from recorder.container.masterkey import MasterKey
from recorder.container.reader import decrypt_recording, salvage_recording
from recorder.container.segments import seal_recording
from recorder.errors import IntegrityError

VECTOR_DIR = Path(__file__).resolve().parents[1] / "vectors"

MASTER = MasterKey.from_secret(bytes(range(0x00, 0x20)))
OTHER_MASTER = MasterKey.from_secret(bytes(range(0xE0, 0x100)))
FILE_KEY = bytes(range(0x40, 0x60))
FILE_KEY_2 = bytes(range(0x60, 0x80))
SALT = bytes(range(0x80, 0xA0))
SALT_2 = bytes(range(0xA0, 0xC0))
WRAP_NONCE = bytes(range(0xC0, 0xCC))
RECORDING_ID = "vec-0001"
HEADER = RecordingHeader(
    recording_id=RECORDING_ID,
    created_ns=1_700_000_000_123_456_789,
    content="pcm_s16le",
    sample_rate=8000,
    channels=2,
    channel_map=("caller", "callee"),
    extra={"codec_in": "PCMU", "part": 0},
)
HEADER_2 = RecordingHeader(
    recording_id="vec-0002",
    created_ns=1_700_000_000_223_456_789,
    content="pcm_s16le",
    sample_rate=8000,
    channels=2,
    channel_map=("caller", "callee"),
    extra={"codec_in": "PCMU", "part": 0},
)


def plaintext(n: int) -> bytes:
    """The vectors' payload: byte i is i mod 251 (a period that never lines up with segments)."""
    return bytes(i % 251 for i in range(n))


def flip(data: bytes, pos: int, bit: int = 0) -> bytes:
    """`data` with one bit flipped."""
    out = bytearray(data)
    out[pos] ^= 1 << bit
    return bytes(out)


def wrapped(master: MasterKey = MASTER, key: bytes = FILE_KEY, rid: str = RECORDING_ID) -> bytes:
    """The vectors' wrapped file key."""
    return wrap_file_key(master, key, rid, WRAP_NONCE)


def short_file() -> bytes:
    """The worked example of docs/format-v1.md: 37 bytes of payload, one final segment."""
    return seal_recording(HEADER, FILE_KEY, SALT, plaintext(37))


def long_file() -> bytes:
    """One full segment and a 100-byte final segment."""
    return seal_recording(HEADER, FILE_KEY, SALT, plaintext(SEGMENT_BYTES + 100))


def header_len(data: bytes) -> int:
    """Offset of segment 0 (the header is 12 + 4 + metadata + 32 + 32 + 32 bytes)."""
    return 112 + int.from_bytes(data[12:16], "big")


def _cases() -> dict[str, tuple[str, bytes, bytes, str]]:
    """name -> (comment, file, wrapped key, recording id to unwrap with)."""
    short, long = short_file(), long_file()
    hs, hl = header_len(short), header_len(long)
    other = seal_recording(HEADER_2, FILE_KEY_2, SALT_2, plaintext(37))
    seg0, final = long[hl : hl + SEALED_SEGMENT_BYTES], long[hl + SEALED_SEGMENT_BYTES :]
    w, rid = wrapped(), RECORDING_ID
    tampered_blob = flip(w, len(w) - 1)
    relabelled = wrapped(OTHER_MASTER)[:2] + MASTER.kid.encode() + wrapped(OTHER_MASTER)[18:]
    return {
        "success_empty": (
            "no payload: one empty final segment",
            seal_recording(HEADER, FILE_KEY, SALT, b""),
            w,
            rid,
        ),
        "success_short": ("the worked example: 37 bytes", short, w, rid),
        "success_full_segment": (
            "16384 bytes: a full segment and an empty final one",
            seal_recording(HEADER, FILE_KEY, SALT, plaintext(SEGMENT_BYTES)),
            w,
            rid,
        ),
        "success_two_segments": ("16484 bytes: a full segment and a 100-byte final", long, w, rid),
        "header_metadata_flipped": ("one bit flipped in the metadata", flip(short, 20), w, rid),
        "header_salt_flipped": ("one bit flipped in the salt", flip(short, hs - 96), w, rid),
        "header_mac_flipped": ("one bit flipped in the header MAC", flip(short, hs - 64), w, rid),
        "header_commitment_flipped": (
            "one bit flipped in the key commitment",
            flip(short, hs - 32),
            w,
            rid,
        ),
        "header_bad_magic": ("the magic says v2", short[:10] + b"2" + short[11:], w, rid),
        "header_swapped": (
            "the header of another recording (another file key) on this payload",
            other[: header_len(other)] + short[hs:],
            w,
            rid,
        ),
        "payload_from_other_file": (
            "this recording's header on the payload of another",
            short[:hs] + other[header_len(other) :],
            w,
            rid,
        ),
        "payload_segment_flipped": (
            "one bit flipped in full segment 0",
            flip(long, hl + 100),
            w,
            rid,
        ),
        "payload_segments_swapped": (
            "the final segment moved before segment 0",
            long[:hl] + final + seg0,
            w,
            rid,
        ),
        "payload_segment_dropped": ("segment 0 removed", long[:hl] + final, w, rid),
        "payload_trailing_data": (
            "five zero bytes after the final segment",
            short + bytes(5),
            w,
            rid,
        ),
        "truncated_header_only": ("the file ends after the header", short[:hs], w, rid),
        "truncated_at_boundary": (
            "the final segment is missing",
            long[: hl + SEALED_SEGMENT_BYTES],
            w,
            rid,
        ),
        "payload_torn_tail": (
            "the final segment is cut after 50 bytes",
            long[: hl + SEALED_SEGMENT_BYTES + 50],
            w,
            rid,
        ),
        "payload_torn_full_segment": (
            "the file ends 1000 bytes into segment 0",
            long[: hl + 1000],
            w,
            rid,
        ),
        "key_unknown_kid": (
            "the file key is wrapped by a master key that is not loaded",
            short,
            wrapped(OTHER_MASTER),
            rid,
        ),
        "key_wrong_master": (
            "wrapped by another master key, relabelled with the loaded kid",
            short,
            relabelled,
            rid,
        ),
        "key_other_recording": (
            "a wrapped key moved to another recording id",
            short,
            w,
            "vec-0002",
        ),
        "key_tampered": ("one bit flipped in the wrapped key's tag", short, tampered_blob, rid),
    }


CATEGORIES = {
    "success": "success",
    "header": "header failure",
    "payload": "payload failure",
    "truncated": "truncated",
    "key": "wrong key",
}


@dataclass(frozen=True)
class Outcome:
    """What a reader must report for a vector (the fields of its file, minus inputs)."""

    expect: str
    error: str | None
    salvage: str | None
    plaintext_length: int | None
    plaintext_sha256: str | None


def run(data: bytes, blob: bytes, recording_id: str, master: MasterKey = MASTER) -> Outcome:
    """The procedure of docs/format-v1.md, "Test vectors": unwrap, strict, then salvage."""
    try:
        file_key = unwrap_file_key({master.kid: master}, blob, recording_id)
    except IntegrityError as exc:
        return Outcome("wrong key", str(exc), None, None, None)
    try:
        _, out = decrypt_recording(io.BytesIO(data), file_key)
    except IntegrityError as exc:
        error = str(exc)
    else:
        return Outcome("success", None, None, len(out), hashlib.sha256(out).hexdigest())
    try:
        got = salvage_recording(io.BytesIO(data), file_key)
    except IntegrityError:
        return Outcome("header failure", error, None, None, None)
    st = got.status
    salvage = f"{st.stop} segments={st.segments_verified} verified_bytes={st.verified_bytes}"
    expect = "truncated" if st.stop == "no final segment" else "payload failure"
    digest = hashlib.sha256(got.plaintext).hexdigest()
    return Outcome(expect, error, salvage, len(got.plaintext), digest)


def render(name: str) -> str:
    """The text of one vector file."""
    comment, data, blob, rid = _cases()[name]
    out = run(data, blob, rid)
    lines = [
        f"expect: {out.expect}",
        f"comment: {comment}",
        f"master_key: {MASTER.secret.hex()}",
        f"recording_id: {rid}",
        f"wrapped_key: {blob.hex()}",
    ]
    for key in ("error", "salvage", "plaintext_length", "plaintext_sha256"):
        value = getattr(out, key)
        if value is not None:
            lines.append(f"{key}: {value}")
    body = base64.b64encode(data).decode()
    lines.append("")
    lines.extend(body[i : i + 76] for i in range(0, len(body), 76))
    return "\n".join(lines) + "\n"


def parse(text: str) -> tuple[dict[str, str], bytes]:
    """A vector file's fields and its recording file bytes."""
    head, _, body = text.partition("\n\n")
    fields = dict(line.split(": ", 1) for line in head.splitlines())
    return fields, base64.b64decode("".join(body.split()), validate=True)


def names() -> list[str]:
    """Every vector, in a stable order."""
    return sorted(_cases())


def write_all(folder: Path = VECTOR_DIR) -> None:
    """Regenerate the committed corpus."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names():
        (folder / f"{name}.txt").write_text(render(name), encoding="ascii")


def _hex_lines(label: str, data: bytes, width: int = 64) -> list[str]:
    text = data.hex()
    return [f"{label}:"] + ["  " + text[i : i + width] for i in range(0, len(text), width)]


def worked_example() -> str:
    """The worked example block of docs/format-v1.md (the test checks the doc holds it)."""
    data = short_file()
    hl = header_len(data)
    signed, mac, commitment = data[: hl - 64], data[hl - 64 : hl - 32], data[hl - 32 : hl]
    keys = payload_keys(FILE_KEY, SALT, signed, mac)
    assert keys.commitment == commitment
    blob = wrapped()
    wrap_key = HKDF(hashes.SHA256(), 32, None, b"recorder/v1 file-key wrap").derive(MASTER.secret)
    lines = [
        f"master secret:      {MASTER.secret.hex()}",
        f"kid:                {MASTER.kid}",
        f"wrapping key:       {wrap_key.hex()}",
        f"recording_id:       {RECORDING_ID}",
        f"wrap nonce:         {WRAP_NONCE.hex()}",
        f"wrap AAD:           {(b'recorder/v1 file-key' + bytes(1) + blob[:18]).hex()}",
        f"                    || {RECORDING_ID.encode().hex()}",
        f"file key:           {FILE_KEY.hex()}",
        f"salt:               {SALT.hex()}",
        f"header MAC key:     {header_mac_key(FILE_KEY).hex()}",
        f"header MAC:         {mac.hex()}",
        f"SHA-256(hdr||MAC):  {hashlib.sha256(signed + mac).hexdigest()}",
        f"payload key:        {keys.key.hex()}",
        f"base nonce:         {keys.base_nonce.hex()}",
        f"commitment:         {keys.commitment.hex()}",
        f"segment 0 nonce:    {segment_nonce(keys.base_nonce, 0).hex()}",
        f"plaintext (37):     {plaintext(37).hex()}",
        f"metadata ({len(HEADER.to_json())}):",
        "  " + HEADER.to_json().decode(),
    ]
    lines += _hex_lines(f"wrapped key ({len(blob)})", blob)
    lines += _hex_lines(f"file ({len(data)})", data)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] == ["--example"]:
        sys.stdout.write(worked_example())
    elif sys.argv[1:] == ["--write"]:
        write_all()
    else:
        sys.exit("usage: python -m tests.container.container_vectors --write | --example")
