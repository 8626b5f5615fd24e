"""parse_sip, looks_like_sip and the header helpers, on real-world shapes and malformed input."""

from __future__ import annotations

import pytest

from recorder.core.sip.message import (
    MAX_HEADERS,
    MAX_LINE_CHARS,
    MAX_MESSAGE_BYTES,
    REASONS,
    looks_like_sip,
    parse_sip,
)
from recorder.errors import DecodeError

from .samples import (
    ACK,
    COMPACT_BYE,
    FOLDED_OPTIONS,
    INVITE,
    OK,
    RINGING,
    SDP_ANSWER,
    SDP_OFFER,
    SESSION_PROGRESS,
)

HEAD = b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x\r\n"


def test_invite_with_sdp() -> None:
    msg = parse_sip(INVITE)
    assert msg.is_request
    assert msg.method == "INVITE"
    assert msg.request_uri == "sip:+4930555@pbx.example.com;user=phone"
    assert (msg.status, msg.reason) == (None, None)
    assert msg.call_id == "a84b4c76e66710@pc33.example.com"
    assert msg.from_tag == "1928301774"
    assert msg.to_tag is None
    assert msg.cseq == (314159, "INVITE")
    assert msg.content_type == "application/sdp"
    assert msg.body == SDP_OFFER
    assert msg.header("Max-Forwards") == "70"
    assert msg.header("SUPPORTED") == "100rel, timer"
    assert msg.header("k") == "100rel, timer"
    assert msg.header("x-missing") is None
    assert [name for name, _ in msg.headers] == [
        "via",
        "max-forwards",
        "from",
        "to",
        "call-id",
        "cseq",
        "contact",
        "allow",
        "supported",
        "content-type",
        "content-length",
    ]


@pytest.mark.parametrize(
    ("data", "status", "reason", "body"),
    [
        (RINGING, 180, "Ringing", b""),
        (SESSION_PROGRESS, 183, "Session Progress", SDP_ANSWER),
        (OK, 200, "OK", SDP_ANSWER),
    ],
)
def test_responses(data: bytes, status: int, reason: str, body: bytes) -> None:
    msg = parse_sip(data)
    assert not msg.is_request
    assert (msg.method, msg.request_uri) == (None, None)
    assert (msg.status, msg.reason) == (status, reason)
    assert msg.body == body
    assert msg.from_tag == "1928301774"
    assert msg.to_tag == "a6c85cf"
    assert msg.cseq == (314159, "INVITE")


def test_compact_forms_are_expanded() -> None:
    msg = parse_sip(COMPACT_BYE)
    assert msg.method == "BYE"
    assert msg.call_id == "a84b4c76e66710@pc33.example.com"
    assert msg.header("call-id") == msg.header("i") == msg.header("Call-ID")
    assert msg.from_tag == "1928301774"
    assert msg.to_tag == "a6c85cf"
    assert [name for name, _ in msg.headers] == [
        "via",
        "from",
        "to",
        "call-id",
        "cseq",
        "content-length",
    ]


@pytest.mark.parametrize(
    ("letter", "name"),
    [
        ("i", "call-id"),
        ("f", "from"),
        ("t", "to"),
        ("v", "via"),
        ("c", "content-type"),
        ("m", "contact"),
        ("k", "supported"),
        ("s", "subject"),
        ("e", "content-encoding"),
        ("o", "event"),
        ("r", "refer-to"),
        ("b", "referred-by"),
        ("x", "session-expires"),
        ("u", "allow-events"),
        ("L", "content-length"),
    ],
)
def test_each_compact_form(letter: str, name: str) -> None:
    value = "0" if name == "content-length" else "v"
    msg = parse_sip(HEAD + f"{letter}: {value}\r\n\r\n".encode())
    assert msg.headers[-1] == (name, value)


def test_folded_header_and_space_before_colon() -> None:
    msg = parse_sip(FOLDED_OPTIONS)
    assert msg.header("subject") == "I know you're there, pick up the phone and talk to me!"
    assert msg.cseq == (7, "OPTIONS")


def test_header_all_keeps_order_and_values() -> None:
    msg = parse_sip(HEAD + b"Via: a\r\nv: b\r\nRoute: r\r\nVIA: c, d\r\n\r\n")
    assert msg.header_all("via") == ["a", "b", "c, d"]
    assert msg.header("Via") == "a"
    assert msg.header_all("record-route") == []


def test_lf_only_line_ends_and_leading_crlf() -> None:
    data = b"\r\n\r\nACK sip:a@b SIP/2.0\nCall-ID: lf\nContent-Length: 2\n\nhi"
    msg = parse_sip(data)
    assert msg.method == "ACK"
    assert msg.call_id == "lf"
    assert msg.body == b"hi"


def test_body_without_content_length_is_rest_of_datagram() -> None:
    msg = parse_sip(HEAD + b"Content-Type: application/sdp\r\n\r\n" + SDP_OFFER)
    assert msg.body == SDP_OFFER


def test_body_is_cut_at_content_length() -> None:
    msg = parse_sip(HEAD + b"Content-Length: 3\r\n\r\nabcdef")
    assert msg.body == b"abc"


def test_no_blank_line_means_no_body() -> None:
    msg = parse_sip(b"BYE sip:a@b SIP/2.0\r\nCall-ID: x\r\n")
    assert msg.call_id == "x"
    assert msg.body == b""


def test_equal_duplicate_content_length_is_accepted() -> None:
    msg = parse_sip(HEAD + b"Content-Length: 2\r\nl: 2\r\n\r\nokxx")
    assert msg.body == b"ok"


def test_method_is_upper_case_and_extension_methods_parse() -> None:
    assert parse_sip(b"invite sip:a@b sip/2.0\r\n\r\n").method == "INVITE"
    assert parse_sip(b"X-CUSTOM sip:a@b SIP/2.0\r\n\r\n").method == "X-CUSTOM"


def test_status_line_without_reason() -> None:
    msg = parse_sip(b"SIP/2.0 486\r\nCall-ID: x\r\n\r\n")
    assert (msg.status, msg.reason) == (486, "")


def test_invalid_utf8_is_replaced_not_raised() -> None:
    msg = parse_sip(HEAD + b"Subject: caf\xe9 \xff\xfe\r\n\r\n")
    assert msg.header("subject") == "caf\ufffd \ufffd\ufffd"


def test_empty_and_malformed_optional_fields() -> None:
    msg = parse_sip(b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID:\r\nCSeq: x INVITE\r\n\r\n")
    assert msg.call_id is None
    assert msg.cseq is None
    assert msg.content_type is None
    assert parse_sip(HEAD + b"CSeq: 1 INVITE extra\r\n\r\n").cseq is None
    assert parse_sip(HEAD + b"CSeq: 12345678901 INVITE\r\n\r\n").cseq is None
    assert parse_sip(HEAD + b"CSeq: \xd9\xa1 INVITE\r\n\r\n").cseq is None  # Arabic-Indic digit
    assert parse_sip(HEAD + b"CSeq: 1 inv@te\r\n\r\n").cseq is None
    ct = parse_sip(HEAD + b"c: Application/SDP; charset=x\r\n\r\n")
    assert ct.content_type == "application/sdp"


# Every malformed input and the exact reason it yields.
MALFORMED: list[tuple[bytes, str]] = [
    (b"", "empty"),
    (b"\r\n\r\n", "empty"),
    (b"\n", "empty"),
    (b"x" * (MAX_MESSAGE_BYTES + 1), "too_large"),
    (b"INVITE\r\n\r\n", "bad_start_line"),
    (b"INVITE sip:a@b\r\n\r\n", "bad_start_line"),
    (b"INVITE sip:a@b SIP/2.0 extra\r\n\r\n", "bad_start_line"),
    (b"\x80\x00\x12\x34 garbage\r\n", "bad_start_line"),
    (b"\x80\x00\x12\x34 garbage here\r\n", "bad_method"),
    (b"INV(TE sip:a@b SIP/2.0\r\n\r\n", "bad_method"),
    (b"INVITE sip:a@b SIP/3.0\r\n\r\n", "bad_version"),
    (b"INVITE sip:a@b HTTP/1.1\r\n\r\n", "bad_version"),
    (b"SIP/2.0 2000 OK\r\n\r\n", "bad_status"),
    (b"SIP/2.0 20 OK\r\n\r\n", "bad_status"),
    (b"SIP/2.0 099 Odd\r\n\r\n", "bad_status"),
    (b"SIP/2.0 700 Odd\r\n\r\n", "bad_status"),
    (b"SIP/2.0 abc OK\r\n\r\n", "bad_status"),
    (b"SIP/2.0 \xd9\xa1\xd9\xa1\xd9\xa1 OK\r\n\r\n", "bad_status"),
    (b"SIP/2.0 OK\r\n\r\n", "bad_status"),
    (HEAD + b"NoColonHere\r\n\r\n", "bad_header"),
    (HEAD + b": value\r\n\r\n", "bad_header_name"),
    (HEAD + b"Bad Name: v\r\n\r\n", "bad_header_name"),
    (HEAD + b"Caf\xc3\xa9: v\r\n\r\n", "bad_header_name"),
    (b"OPTIONS sip:a@b SIP/2.0\r\n folded-first\r\n\r\n", "bad_folding"),
    (HEAD + b"Content-Length: abc\r\n\r\n", "bad_content_length"),
    (HEAD + b"Content-Length: -1\r\n\r\n", "bad_content_length"),
    (HEAD + b"Content-Length: 1 2\r\n\r\n", "bad_content_length"),
    (HEAD + b"Content-Length: 9999999999\r\n\r\n", "bad_content_length"),
    (HEAD + b"Content-Length: \xd9\xa1\r\n\r\n", "bad_content_length"),
    (HEAD + b"Content-Length: 2\r\nl: 3\r\n\r\nabc", "bad_content_length"),
    (HEAD + b"X: " + b"a" * (MAX_LINE_CHARS + 1) + b"\r\n\r\n", "line_too_long"),
    (b"OPTIONS sip:" + b"a" * MAX_LINE_CHARS + b" SIP/2.0\r\n\r\n", "line_too_long"),
    (HEAD + b"X: v\r\n" * MAX_HEADERS + b"\r\n", "too_many_headers"),
    (HEAD + b" fold\r\n" * (MAX_HEADERS * 4) + b"\r\n", "too_many_headers"),
]


@pytest.mark.parametrize(("data", "reason"), MALFORMED)
def test_malformed_inputs_give_exact_reason(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        parse_sip(data)
    assert (info.value.layer, info.value.reason) == ("sip", reason)


def test_every_reason_is_covered_by_the_table() -> None:
    assert {reason for _, reason in MALFORMED} == REASONS


def test_header_count_at_the_cap_is_accepted() -> None:
    msg = parse_sip(b"OPTIONS sip:a@b SIP/2.0\r\n" + b"X: v\r\n" * MAX_HEADERS + b"\r\n")
    assert len(msg.headers) == MAX_HEADERS


def test_message_at_the_size_cap_is_accepted() -> None:
    head = HEAD + b"\r\n"
    msg = parse_sip(head + b"b" * (MAX_MESSAGE_BYTES - len(head)))
    assert len(msg.body) == MAX_MESSAGE_BYTES - len(head)


@pytest.mark.parametrize(
    "data",
    [INVITE, RINGING, SESSION_PROGRESS, OK, ACK, COMPACT_BYE, FOLDED_OPTIONS],
)
def test_looks_like_sip_accepts_samples(data: bytes) -> None:
    assert looks_like_sip(data)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"REGISTER sips:example.com SIP/2.0\r\n", True),
        (b"MESSAGE tel:+15550100 SIP/2.0\r\n", True),
        (b"SUBSCRIBE SIP:bob@x SIP/2.0\r\n", True),
        (b"SIP/2.0 100 Trying\r\n", True),
        (b"", False),
        (b"\x80\x00\x00\x01" + bytes(160), False),  # RTP (version 2)
        (b"\x81\xc8\x00\x0c", False),  # RTCP sender report
        (b"SIP/2.0 abc", False),
        (b"SIP/2.0", False),
        (b"INVITE", False),
        (b"INVITE ", False),
        (b"INVITE http://x SIP/2.0\r\n", False),
        (b"GET / HTTP/1.1\r\n", False),
        (b"invite sip:a@b SIP/2.0\r\n", False),  # methods are case-sensitive (RFC 3261 §7.1)
        (b"HELLO sip:a@b SIP/2.0\r\n", False),
        (b"\r\n\r\n", False),  # keep-alive
        (b"SUBSCRIBEX sip:a@b SIP/2.0\r\n", False),
    ],
)
def test_looks_like_sip_table(data: bytes, expected: bool) -> None:
    assert looks_like_sip(data) is expected


@pytest.mark.parametrize(
    ("data", "body"),
    [(HEAD + b"Content-Length: 10\r\n\r\nshort", b"short"), (HEAD + b"Content-Length: 1\r\n", b"")],
)
def test_body_shorter_than_content_length_is_kept_and_flagged(data: bytes, body: bytes) -> None:
    msg = parse_sip(data)
    assert msg.body == body
    assert msg.body_short is True
