"""Fuzz parse_rtp: (pt, seq, ts, ssrc, payload) within range, or DecodeError("rtp")."""

from __future__ import annotations

import struct

import _common  # puts the repository on sys.path
import atheris  # type: ignore[import-untyped, import-not-found, unused-ignore]

with atheris.instrument_imports():
    from recorder.core.rtp.packet import parse_rtp
    from recorder.errors import DecodeError

REASONS = frozenset({"truncated", "bad_version", "bad_padding"})
SEED = struct.pack("!BBHII", 0x80, 0, 7, 160, 0x1234) + bytes(160)


def check(data: bytes) -> None:
    try:
        pt, seq, ts, ssrc, payload = parse_rtp(data)
    except DecodeError as exc:
        if exc.layer != "rtp" or exc.reason not in REASONS:
            raise AssertionError(f"undocumented error {exc.layer}/{exc.reason}") from exc
        return
    if not (0 <= pt < 128 and 0 <= seq < 65536 and 0 <= ts < 2**32 and 0 <= ssrc < 2**32):
        raise AssertionError("header field out of range")
    if len(payload) > len(data) - 12:
        raise AssertionError("payload longer than the packet allows")


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeBool():
        check(fdp.ConsumeBytes(fdp.remaining_bytes()))
        return
    pos = fdp.ConsumeIntInRange(0, 16)
    check(_common.splice(SEED, pos, fdp.ConsumeIntInRange(0, 4), fdp.ConsumeBytes(8)))


def main() -> None:
    _common.fuzz(test_one_input)


if __name__ == "__main__":
    main()
