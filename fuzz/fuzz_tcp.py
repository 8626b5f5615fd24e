"""Fuzz TcpSipStreams.

Mode 0 (hostile): arbitrary segments, flags, sequence numbers and times;
`feed`/`expire` must never raise, every message must fit the cap and
parse to a message or DecodeError("sip").
Mode 1 (differential): a stream of valid messages cut and delivered in a
fuzz-chosen order with duplicates must yield exactly those messages.
"""

from __future__ import annotations

import _common  # puts the repository on sys.path
import atheris  # type: ignore[import-untyped, import-not-found, unused-ignore]

with atheris.instrument_imports():
    from recorder.core.sip.message import parse_sip
    from recorder.core.sip.tcp import SYN, StreamKey, TcpSipStreams
    from recorder.errors import DecodeError
    from tests.sip.samples import STREAM_MESSAGES

MASK = 0xFFFFFFFF
KEYS: list[StreamKey] = [
    (b"\x0a\x00\x00\x01", 5060, b"\x0a\x00\x00\x02", 5060),
    (b"\x0a\x00\x00\x02", 5060, b"\x0a\x00\x00\x01", 5060),
    (bytes(16), 40000, bytes(15) + b"\x01", 5060),
]
MAX_MESSAGE = 2048


def _check_messages(messages: list[bytes]) -> None:
    for msg in messages:
        if len(msg) > MAX_MESSAGE:
            raise AssertionError("a framed message exceeds the cap")
        try:
            parse_sip(msg)
        except DecodeError as exc:
            if exc.layer != "sip":
                raise


def hostile(fdp: atheris.FuzzedDataProvider) -> None:
    streams = TcpSipStreams(
        max_streams=2,
        max_message=MAX_MESSAGE,
        max_pending_bytes=4096,
        max_pending_segments=8,
        window=1 << 16,
        gap_timeout_ns=100,
        idle_timeout_ns=1000,
        max_total_bytes=8192,
    )
    now = 0
    seqs = [fdp.ConsumeIntInRange(0, MASK) for _ in KEYS]
    while fdp.remaining_bytes() > 0:
        k = fdp.ConsumeIntInRange(0, len(KEYS) - 1)
        seq = (seqs[k] + fdp.ConsumeIntInRange(-4096, 4096)) & MASK
        flags = fdp.ConsumeIntInRange(0, 255)
        payload = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 600))
        now += fdp.ConsumeIntInRange(0, 200)
        _check_messages(streams.feed(KEYS[k], seq, flags, payload, now))
        seqs[k] = (seq + len(payload)) & MASK
        if fdp.ConsumeBool():
            _check_messages([msg for _, msg in streams.expire(now)])
        if streams.buffered_bytes < 0 or len(streams) > 2:
            raise AssertionError("accounting broke")


def differential(fdp: atheris.FuzzedDataProvider) -> None:
    count = fdp.ConsumeIntInRange(1, 4)
    messages = [STREAM_MESSAGES[fdp.ConsumeIntInRange(0, len(STREAM_MESSAGES) - 1)]]
    messages += [
        STREAM_MESSAGES[fdp.ConsumeIntInRange(0, len(STREAM_MESSAGES) - 1)]
        for _ in range(count - 1)
    ]
    data = b"".join(messages)
    isn = fdp.ConsumeIntInRange(0, MASK)
    segments: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        # At most 48 cuts, so exhausted fuzz data (size 1) cannot mean thousands of feeds.
        size = fdp.ConsumeIntInRange(1, 700) if len(segments) < 48 else len(data)
        segments.append((pos, data[pos : pos + size]))
        pos += size
    for _ in range(fdp.ConsumeIntInRange(0, 5)):  # retransmissions with other boundaries
        start = fdp.ConsumeIntInRange(0, len(data) - 1)
        segments.append((start, data[start : start + fdp.ConsumeIntInRange(1, 700)]))
    order: list[tuple[int, bytes]] = []
    while segments:
        order.append(segments.pop(fdp.ConsumeIntInRange(0, len(segments) - 1)))
    streams = TcpSipStreams()
    out = streams.feed(KEYS[0], isn, SYN, b"", 0)
    for offset, piece in order:
        out += streams.feed(KEYS[0], (isn + 1 + offset) & MASK, 0, piece, 0)
    if out != messages:
        raise AssertionError("reassembly changed the message sequence")


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeBool():
        differential(fdp)
    else:
        hostile(fdp)


def main() -> None:
    _common.fuzz(test_one_input)


if __name__ == "__main__":
    main()
