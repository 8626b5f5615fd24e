"""Fuzz frame decoding and the whole core: NetDecoder.decode returns a datagram, None or a
documented DecodeError; RecorderCore.receive_frame never raises, whatever the frames, while
a call is up (so SIP, SDP and RTP paths all see the fuzz); and the same frames fed as blocks
(`receive_block`, the numpy fast path) give the same events and counters."""

from __future__ import annotations

import dataclasses
import struct

import _common  # puts the repository on sys.path
import atheris  # type: ignore[import-untyped, import-not-found, unused-ignore]

from tests.builders import fast_udp  # (not instrumented: a test helper)

with atheris.instrument_imports():
    import recorder.core.blocks as blocks
    from recorder.core.model import Frame, FrameBlock
    from recorder.core.net import DROP_REASONS, NetDecoder
    from recorder.core.pipeline import RecorderCore
    from recorder.errors import DecodeError

blocks._SHORT_RUN = 1  # the numpy fast path even for the fuzz's few frames
blocks._EVEN_RUN = 2  # and strided header copies for two frames of one length in a row
LINKTYPES = (0, 1, 101, 108, 113, 228, 229, 276, 197, 9, 50)
A, B = "10.0.0.1", "10.0.0.2"
SDP = (
    b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0 101\r\n"
)
INVITE = (
    b"INVITE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1\r\nFrom: <sip:a@x>;tag=1\r\n"
    b"To: <sip:b@x>\r\nCall-ID: fuzz\r\nCSeq: 1 INVITE\r\nContent-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP
)
RTP = struct.pack("!BBHII", 0x80, 0, 1, 160, 7) + bytes(160)
SEEDS = [
    fast_udp(A, 5060, B, 5060, INVITE),
    fast_udp(B, 4002, A, 4000, RTP),
    fast_udp(A, 4000, B, 4002, RTP),
    fast_udp("10.0.0.7", 4000, "10.0.0.8", 4002, RTP),  # unexplained (NAT'd, or nobody's)
]


def check_decoder(linktype: int, data: bytes) -> None:
    try:
        NetDecoder().decode(linktype, data, 0)
    except DecodeError as exc:
        if exc.reason not in DROP_REASONS.get(exc.layer, frozenset()):
            raise AssertionError(f"undocumented error {exc.layer}/{exc.reason}") from exc


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    linktype = LINKTYPES[fdp.ConsumeIntInRange(0, len(LINKTYPES) - 1)]
    core = RecorderCore()
    frames = [Frame(10**9, 1, SEEDS[0])]
    core.receive_frame(frames[0])
    now = 10**9
    while fdp.remaining_bytes():
        now += fdp.ConsumeIntInRange(0, 3 * 10**9)
        if fdp.ConsumeIntInRange(0, 3) == 0:  # raw bytes, short frames included
            raw = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 80))
            check_decoder(linktype, raw)
            frames.append(Frame(now, linktype if fdp.ConsumeBool() else 1, raw))
            core.receive_frame(frames[-1])
            continue
        seed = SEEDS[fdp.ConsumeIntInRange(0, len(SEEDS) - 1)]
        frame = _common.splice(
            seed,
            fdp.ConsumeIntInRange(0, len(seed)),
            fdp.ConsumeIntInRange(0, 8),
            fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64)),
        )
        kind = linktype if fdp.ConsumeBool() else 1
        check_decoder(kind, frame)
        frames.append(Frame(now, kind, frame))
        core.receive_frame(frames[-1])  # any exception is a crash
    core.close()
    events, stats = list(core.events()), dataclasses.asdict(core.stats)
    check_blocks(frames, events, stats)
    check_blocks(frames, events, stats, most=3)  # flows known from an earlier block


def check_blocks(
    frames: list[Frame], events: list[object], stats: dict[str, object], most: int = 0
) -> None:
    """The frames again, as blocks of one link type each (of at most `most` frames): the
    same outcome."""
    core = RecorderCore()
    run: list[Frame] = []
    for frame in [*frames, None]:
        if run and (frame is None or frame.linktype != run[0].linktype or len(run) == most):
            core.receive_block(FrameBlock.of(run[0].linktype, [(f.ts_ns, f.data) for f in run]))
            run = []
        if frame is not None:
            run.append(frame)
    core.close()
    if list(core.events()) != events or dataclasses.asdict(core.stats) != stats:
        raise AssertionError("blocks and frames one by one disagree")


def main() -> None:
    _common.fuzz(test_one_input)


if __name__ == "__main__":
    main()
