"""Fuzz parse_sdp / codec_for: a session or DecodeError("sdp"), nothing else."""

from __future__ import annotations

import _common  # puts the repository on sys.path
import atheris  # type: ignore[import-untyped, import-not-found, unused-ignore]

with atheris.instrument_imports():
    from recorder.core.sdp.parse import REASONS, codec_for, parse_sdp
    from recorder.errors import DecodeError
    from tests.sip.samples import SDP_ANSWER, SDP_OFFER

SEEDS = [
    SDP_OFFER,
    SDP_ANSWER,
    b"v=0\r\no=- 1 2 IN IP6 2001:db8::1\r\nc=IN IP6 2001:db8::1\r\na=sendonly\r\n"
    b"m=audio 30000/2 RTP/SAVP 0 96\r\na=rtpmap:96 opus/48000/2\r\na=fmtp:96 useinbandfec=1\r\n"
    b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:abc\r\na=rtcp:30001\r\na=rtcp-mux\r\n"
    b"a=ptime:20\r\nm=video 0 RTP/AVPF 97\r\nc=IN IP4 0.0.0.0\r\nm=image 4000 udptl t38\r\n",
]
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


def check(body: bytes) -> None:
    """Parse `body`; any exception other than a documented DecodeError escapes as a crash."""
    try:
        sdp = parse_sdp(body)
    except DecodeError as exc:
        if exc.layer != "sdp" or exc.reason not in REASONS:
            raise AssertionError(f"undocumented error {exc.layer}/{exc.reason}") from exc
        return
    for media in sdp.media:
        if not 0 <= media.port <= 65535 or media.direction not in DIRECTIONS:
            raise AssertionError("port or direction out of range")
        if media.connection is not None and len(media.connection) not in (4, 16):
            raise AssertionError("connection is not a packed address")
        for pt in media.payload_types:
            if not 0 <= pt <= 127:
                raise AssertionError("payload type out of range")
            codec_for(media, pt)


def test_one_input(data: bytes) -> None:
    check(_common.seeded_input(atheris.FuzzedDataProvider(data), SEEDS))


def main() -> None:
    _common.fuzz(test_one_input)


if __name__ == "__main__":
    main()
