"""The committed vector corpus and the worked example in docs/format-v1.md stay true."""

from __future__ import annotations

import hashlib
import hmac
import io
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from recorder.container.reader import decrypt_recording

from .container_vectors import (
    CATEGORIES,
    FILE_KEY,
    HEADER,
    MASTER,
    SALT,
    VECTOR_DIR,
    WRAP_NONCE,
    Outcome,
    names,
    parse,
    plaintext,
    render,
    run,
    short_file,
    worked_example,
    wrapped,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "format-v1.md"


def test_committed_corpus_is_exactly_what_the_generator_makes() -> None:
    committed = sorted(p.stem for p in VECTOR_DIR.glob("*.txt"))
    assert committed == names()
    for name in names():
        assert (VECTOR_DIR / f"{name}.txt").read_text(encoding="ascii") == render(name), name


@pytest.mark.parametrize("name", names())
def test_vector_outcome(name: str) -> None:
    fields, data = parse((VECTOR_DIR / f"{name}.txt").read_text(encoding="ascii"))
    assert fields["expect"] == CATEGORIES[name.split("_")[0]]
    assert bytes.fromhex(fields["master_key"]) == MASTER.secret
    got = run(data, bytes.fromhex(fields["wrapped_key"]), fields["recording_id"])
    length = fields.get("plaintext_length")
    assert got == Outcome(
        expect=fields["expect"],
        error=fields.get("error"),
        salvage=fields.get("salvage"),
        plaintext_length=None if length is None else int(length),
        plaintext_sha256=fields.get("plaintext_sha256"),
    )


def test_doc_holds_the_worked_example() -> None:
    assert worked_example() in DOC.read_text(encoding="utf-8")


def hkdf(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 with the standard library, to check the derivations independently."""
    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()
    okm, block, i = b"", b"", 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        okm += block
        i += 1
    return okm[:length]


def test_worked_example_follows_the_written_derivations() -> None:
    """Decrypt the example by the recipe in docs/format-v1.md, without the reader."""
    data = short_file()
    meta = HEADER.to_json()
    assert data[:12] == b"RECORDER/v1\n"
    assert data[12:16] == len(meta).to_bytes(4, "big")
    assert data[16 : 16 + len(meta)] == meta
    end = 16 + len(meta)
    assert data[end : end + 32] == SALT
    signed, mac, commitment = data[: end + 32], data[end + 32 : end + 64], data[end + 64 : end + 96]
    mac_key = hkdf(FILE_KEY, b"", b"recorder/v1 header", 32)
    assert hmac.new(mac_key, signed, hashlib.sha256).digest() == mac
    info = b"recorder/v1 payload" + hashlib.sha256(signed + mac).digest()
    okm = hkdf(FILE_KEY, SALT, info, 76)
    key, base_nonce = okm[:32], okm[32:44]
    assert okm[44:] == commitment
    assert AESGCM(key).decrypt(base_nonce, data[end + 96 :], None) == plaintext(37)
    # The wrapped key, by the same recipe.
    blob = wrapped()
    wrap_key = hkdf(MASTER.secret, b"", b"recorder/v1 file-key wrap", 32)
    aad = b"recorder/v1 file-key\x00" + blob[:18] + b"vec-0001"
    assert blob[18:30] == WRAP_NONCE
    assert AESGCM(wrap_key).decrypt(WRAP_NONCE, blob[30:], aad) == FILE_KEY
    assert decrypt_recording(io.BytesIO(data), FILE_KEY) == (HEADER, plaintext(37))
