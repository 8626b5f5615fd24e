"""parse_sdp on real-world shapes (hold, IPv6, several m-lines, SRTP) and malformed input."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recorder.core.sdp.parse import (
    MAX_LINES,
    MAX_MEDIA,
    MAX_SDP_BYTES,
    REASONS,
    RtpMap,
    SdpMedia,
    codec_for,
    parse_sdp,
    static_payload_types,
)
from recorder.errors import DecodeError
from tests.sip.mutations import mutated


def packed(address: str) -> bytes:
    return ipaddress.ip_address(address).packed


OFFER = (
    b"v=0\r\n"
    b"o=- 3912345678 3912345679 IN IP4 192.0.2.10\r\n"
    b"s=SIP Call\r\n"
    b"c=IN IP4 192.0.2.10\r\n"
    b"t=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0 8 9 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:9 G722/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)


def test_basic_offer() -> None:
    sdp = parse_sdp(OFFER)
    assert sdp.connection == packed("192.0.2.10")
    assert sdp.direction is None
    assert sdp.origin == "- 3912345678 3912345679 IN IP4 192.0.2.10"
    (audio,) = sdp.media
    assert (audio.kind, audio.port, audio.proto) == ("audio", 40000, "RTP/AVP")
    assert audio.payload_types == [0, 8, 9, 101]
    assert audio.formats == ["0", "8", "9", "101"]
    assert audio.connection == audio.effective_connection == packed("192.0.2.10")
    assert audio.rtpmap == {
        0: RtpMap("PCMU", 8000, 1),
        8: RtpMap("PCMA", 8000, 1),
        9: RtpMap("G722", 8000, 1),
        101: RtpMap("TELEPHONE-EVENT", 8000, 1),
    }
    assert audio.fmtp == {101: "0-16"}
    assert audio.ptime == 20
    assert audio.direction == "sendrecv"
    assert (audio.rtcp_mux, audio.rtcp_port, audio.crypto, audio.is_srtp) == (
        False,
        None,
        False,
        False,
    )
    assert audio.is_rtp


def test_lf_only_and_unknown_lines() -> None:
    body = (
        b"v=0\nx-unknown\nz=0 0\nk=clear:x\nc=IN IP4 10.0.0.1\nm=audio 5004 RTP/AVP 0\n=\na=weird\n"
    )
    sdp = parse_sdp(body)
    assert sdp.media[0].connection == packed("10.0.0.1")
    assert sdp.media[0].port == 5004


def test_hold_by_zero_address_and_sendonly() -> None:
    body = OFFER.replace(b"c=IN IP4 192.0.2.10", b"c=IN IP4 0.0.0.0").replace(
        b"a=sendrecv", b"a=sendonly"
    )
    audio = parse_sdp(body).media[0]
    assert audio.connection == bytes(4)
    assert audio.direction == "sendonly"


def test_session_level_direction_is_inherited_and_overridden() -> None:
    body = (
        b"v=0\r\nc=IN IP4 192.0.2.1\r\na=inactive\r\n"
        b"m=audio 1000 RTP/AVP 0\r\n"
        b"m=audio 2000 RTP/AVP 0\r\na=recvonly\r\n"
    )
    sdp = parse_sdp(body)
    assert sdp.direction == "inactive"
    assert [m.direction for m in sdp.media] == ["inactive", "recvonly"]


def test_ipv6_and_media_level_connection_overrides() -> None:
    body = (
        b"v=0\r\n"
        b"o=- 1 1 IN IP6 2001:db8::1\r\n"
        b"c=IN IP6 2001:db8::1\r\n"
        b"m=audio 30000 RTP/AVP 8\r\n"
        b"m=audio 30002 RTP/AVP 0\r\n"
        b"c=IN IP4 203.0.113.5\r\n"
        b"m=audio 30004 RTP/AVP 0\r\n"
        b"c=IN IP6 [bad]\r\n"
    )
    sdp = parse_sdp(body)
    assert sdp.connection == packed("2001:db8::1")
    assert [m.connection for m in sdp.media] == [
        packed("2001:db8::1"),
        packed("203.0.113.5"),
        None,  # not a literal address: unknown, not the session's
    ]


def test_multiple_m_lines_audio_video_image() -> None:
    body = (
        b"v=0\r\nc=IN IP4 192.0.2.1\r\n"
        b"m=audio 49170 RTP/AVP 9 101\r\n"
        b"a=rtpmap:101 telephone-event/8000\r\n"
        b"a=rtcp:49171 IN IP4 192.0.2.1\r\n"
        b"m=video 51372 RTP/AVPF 99\r\n"
        b"a=rtpmap:99 H264/90000\r\n"
        b"a=fmtp:99 profile-level-id=42e01f;packetization-mode=1\r\n"
        b"a=rtcp-mux\r\n"
        b"m=image 0 udptl t38\r\n"
        b"a=T38FaxVersion:0\r\n"
    )
    audio, video, image = parse_sdp(body).media
    assert audio.rtcp_port == 49171
    assert codec_for(audio, 9) == RtpMap("G722", 8000, 1)  # static table
    assert codec_for(audio, 101) == RtpMap("TELEPHONE-EVENT", 8000, 1)
    assert codec_for(audio, 96) is None
    assert (video.kind, video.payload_types, video.rtcp_mux) == ("video", [99], True)
    assert video.fmtp[99] == "profile-level-id=42e01f;packetization-mode=1"
    assert video.rtpmap[99] == RtpMap("H264", 90000, 1)
    assert (image.kind, image.port, image.proto) == ("image", 0, "udptl")
    assert image.payload_types == []
    assert image.formats == ["t38"]
    assert not image.is_rtp


def test_sdes_srtp_crypto() -> None:
    body = (
        b"v=0\r\nc=IN IP4 192.0.2.1\r\n"
        b"m=audio 10000 RTP/SAVP 0\r\n"
        b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 "
        b"inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32\r\n"
        b"m=audio 10002 RTP/AVP 0\r\n"
        b"a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj\r\n"
        b"m=audio 10004 UDP/TLS/RTP/SAVPF 111\r\n"
    )
    first, second, third = parse_sdp(body).media
    assert (first.crypto, first.is_srtp) == (True, True)
    assert (second.crypto, second.is_srtp) == (True, True)
    assert (third.crypto, third.is_srtp, third.is_rtp) == (False, True, True)
    assert third.payload_types == [111]


def test_odd_attributes_are_ignored_or_read_leniently() -> None:
    body = (
        b"v=0\r\nc=IN IP4 192.0.2.1\r\n"
        b"m=audio 4000/2 RTP/AVP 0 8 200 abc 8\r\n"
        b"a=rtpmap:0\r\n"
        b"a=rtpmap:300 X/8000\r\n"
        b"a=rtpmap:8 /8000\r\n"
        b"a=rtpmap:97 opus/48000/2\r\n"
        b"a=rtpmap:98 L16/0\r\n"
        b"a=rtpmap:99 AMR/8000/x\r\n"
        b"a=ptime:20.0\r\n"
        b"a=ptime:fast\r\n"
        b"a=rtcp:abc\r\n"
        b"a=fmtp:abc x\r\n"
        b"a=sendonly:extra\r\n"
    )
    audio = parse_sdp(body).media[0]
    assert audio.port_count == 2
    assert audio.payload_types == [0, 8]
    assert audio.formats == ["0", "8", "200", "abc", "8"]
    assert audio.rtpmap == {97: RtpMap("OPUS", 48000, 2)}
    assert audio.ptime is None  # the later, unreadable a=ptime wins
    assert audio.rtcp_port is None
    assert audio.fmtp == {}
    assert audio.direction == "sendrecv"


def test_fqdn_connection_is_unknown() -> None:
    sdp = parse_sdp(b"v=0\r\nc=IN IP4 pbx.example.com\r\nm=audio 1 RTP/AVP 0\r\n")
    assert sdp.connection is None
    assert sdp.media[0].connection is None


def test_multicast_ttl_suffix_is_stripped() -> None:
    sdp = parse_sdp(b"v=0\r\nc=IN IP4 224.2.1.1/127/3\r\nm=audio 1 RTP/AVP 0\r\n")
    assert sdp.connection == packed("224.2.1.1")


def test_non_in_nettype_is_unknown() -> None:
    assert parse_sdp(b"v=0\r\nc=ATM NSAP 47.0005\r\n").connection is None


def test_static_payload_type_table() -> None:
    table = static_payload_types()
    assert table[0] == RtpMap("PCMU", 8000, 1)
    assert table[3] == RtpMap("GSM", 8000, 1)
    assert table[4] == RtpMap("G723", 8000, 1)
    assert table[8] == RtpMap("PCMA", 8000, 1)
    assert table[9] == RtpMap("G722", 8000, 1)
    assert table[13] == RtpMap("CN", 8000, 1)
    assert table[18] == RtpMap("G729", 8000, 1)
    assert 96 not in table
    with pytest.raises(TypeError):
        table[0] = RtpMap("X", 1)  # type: ignore[index]


def test_rtpmap_overrides_static_table() -> None:
    media = SdpMedia(kind="audio", port=1, proto="RTP/AVP", rtpmap={0: RtpMap("X-PCMU", 16000)})
    assert codec_for(media, 0) == RtpMap("X-PCMU", 16000, 1)
    assert codec_for(media, 8) == RtpMap("PCMA", 8000, 1)


MEDIA = b"m=audio 1 RTP/AVP 0\r\n"
MALFORMED: list[tuple[bytes, str]] = [
    (b"", "empty"),
    (b"\r\n\n  \r\n", "empty"),
    (b"v=0\r\n" + b"a" * MAX_SDP_BYTES, "too_large"),
    (b"v=0\n" + b"a=x\n" * MAX_LINES, "too_many_lines"),
    (b"v=0\n" + MEDIA * (MAX_MEDIA + 1), "too_many_media"),
    (b"o=- 1 1 IN IP4 1.2.3.4\r\nv=0\r\n", "no_version"),
    (b"\x00\x01binary", "no_version"),
    (b"v=0\r\nm=audio 1\r\n", "bad_media"),
    (b"v=0\r\nm=\r\n", "bad_media"),
    (b"v=0\r\nm=audio port RTP/AVP 0\r\n", "bad_port"),
    (b"v=0\r\nm=audio 65536 RTP/AVP 0\r\n", "bad_port"),
    (b"v=0\r\nm=audio -1 RTP/AVP 0\r\n", "bad_port"),
    (b"v=0\r\nm=audio 1/x RTP/AVP 0\r\n", "bad_port"),
    (b"v=0\r\nm=audio \xd9\xa1 RTP/AVP 0\r\n", "bad_port"),
    (b"v=0\r\nc=IN IP4\r\n", "bad_connection"),
    (b"v=0\r\nc=IN IP5 1.2.3.4\r\n", "bad_connection"),
    (b"v=0\r\nc=IN IP4 2001:db8::1\r\n", "bad_connection"),
    (b"v=0\r\nc=IN IP6 10.0.0.1\r\n", "bad_connection"),
    (b"v=0\r\n" + MEDIA + b"c=IN IP4 1.2.3.4 extra\r\n", "bad_connection"),
]


@pytest.mark.parametrize(("body", "reason"), MALFORMED)
def test_malformed_inputs_give_exact_reason(body: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        parse_sdp(body)
    assert (info.value.layer, info.value.reason) == ("sdp", reason)


def test_every_reason_is_covered_by_the_table() -> None:
    assert {reason for _, reason in MALFORMED} == REASONS


def test_caps_are_inclusive() -> None:
    assert len(parse_sdp(b"v=0\n" + MEDIA * MAX_MEDIA).media) == MAX_MEDIA


# -- invariant: parse_sdp returns a session or raises DecodeError("sdp", ...), nothing else ----


def check(body: bytes) -> None:
    try:
        sdp = parse_sdp(body)
    except DecodeError as exc:
        error = (exc.layer, exc.reason)
        assert error[0] == "sdp"
        assert error[1] in REASONS
        return
    for media in sdp.media:
        assert 0 <= media.port <= 65535
        assert all(0 <= pt <= 127 for pt in media.payload_types)
        assert media.connection is None or len(media.connection) in (4, 16)
        assert media.direction in ("sendrecv", "sendonly", "recvonly", "inactive")
        for pt in media.payload_types:
            codec_for(media, pt)


SEEDS = [
    OFFER,
    b"v=0\r\nc=IN IP6 2001:db8::1\r\nm=audio 1 RTP/AVP 0 8\r\na=rtcp:2\r\na=recvonly\r\n"
    b"m=video 2 RTP/AVPF 96\r\na=rtpmap:96 VP8/90000\r\na=fmtp:96 x=1\r\na=crypto:1 x\r\n",
]


@settings(max_examples=500)
@given(st.binary(max_size=2000))
def test_random_bytes_never_raise_anything_else(body: bytes) -> None:
    check(body)
    check(b"v=0\r\n" + body)


@settings(max_examples=1000)
@given(mutated(SEEDS))
def test_mutated_valid_bodies(body: bytes) -> None:
    check(body)
