"""Real-world shaped SIP messages (CRLF line ends kept), shared by the SIP and TCP tests."""

from __future__ import annotations

SDP_OFFER = (
    b"v=0\r\n"
    b"o=- 3912345678 3912345678 IN IP4 192.0.2.10\r\n"
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


def _with_length(head: bytes, body: bytes) -> bytes:
    return head + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body


INVITE = _with_length(
    b"INVITE sip:+4930555@pbx.example.com;user=phone SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Alice Example" <sip:+4930123@example.com;user=phone>;tag=1928301774\r\n'
    b"To: <sip:+4930555@pbx.example.com;user=phone>\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@192.0.2.10:5060>\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, PRACK\r\n"
    b"Supported: 100rel, timer\r\n"
    b"Content-Type: application/sdp\r\n",
    SDP_OFFER,
)

RINGING = (
    b"SIP/2.0 180 Ringing\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport=5060\r\n"
    b'From: "Alice Example" <sip:+4930123@example.com;user=phone>;tag=1928301774\r\n'
    b"To: <sip:+4930555@pbx.example.com;user=phone>;tag=a6c85cf\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

SDP_ANSWER = (
    b"v=0\r\n"
    b"o=pbx 1 1 IN IP4 198.51.100.7\r\n"
    b"s=-\r\n"
    b"c=IN IP4 198.51.100.7\r\n"
    b"t=0 0\r\n"
    b"m=audio 20000 RTP/AVP 8 101\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
)

SESSION_PROGRESS = _with_length(
    b"SIP/2.0 183 Session Progress\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport=5060\r\n"
    b'From: "Alice Example" <sip:+4930123@example.com;user=phone>;tag=1928301774\r\n'
    b"To: <sip:+4930555@pbx.example.com;user=phone>;tag=a6c85cf\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Require: 100rel\r\n"
    b"RSeq: 1\r\n"
    b"Content-Type: application/sdp\r\n",
    SDP_ANSWER,
)

OK = _with_length(
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport=5060\r\n"
    b'From: "Alice Example" <sip:+4930123@example.com;user=phone>;tag=1928301774\r\n'
    b"To: <sip:+4930555@pbx.example.com;user=phone>;tag=a6c85cf\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:pbx@198.51.100.7:5060>\r\n"
    b"Content-Type: application/sdp\r\n",
    SDP_ANSWER,
)

# Compact forms throughout (RFC 3261 §7.3.3), as sent by many mobile clients.
COMPACT_BYE = (
    b"BYE sip:pbx@198.51.100.7:5060 SIP/2.0\r\n"
    b"v: SIP/2.0/TCP 192.0.2.10:5060;branch=z9hG4bKnashds10\r\n"
    b"f: <sip:+4930123@example.com>;tag=1928301774\r\n"
    b"t: <sip:+4930555@pbx.example.com>;tag=a6c85cf\r\n"
    b"i: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314160 BYE\r\n"
    b"l: 0\r\n"
    b"\r\n"
)

# A folded header (RFC 3261 §7.3.1) and a header with whitespace before the colon.
FOLDED_OPTIONS = (
    b"OPTIONS sip:carol@chicago.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bKhjhs8ass877\r\n"
    b"Subject: I know you're there,\r\n"
    b"         pick up the phone\r\n"
    b"         and talk to me!\r\n"
    b"From: <sip:alice@example.com>;tag=1\r\n"
    b"To: <sip:carol@chicago.example.com>\r\n"
    b"Call-ID: options-1@example.com\r\n"
    b"CSeq : 7 OPTIONS\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

ACK = (
    b"ACK sip:pbx@198.51.100.7:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 192.0.2.10:5060;branch=z9hG4bKnashds9\r\n"
    b"From: <sip:+4930123@example.com>;tag=1928301774\r\n"
    b"To: <sip:+4930555@pbx.example.com>;tag=a6c85cf\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 ACK\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

# Messages valid on a TCP stream (each with Content-Length).
STREAM_MESSAGES = (INVITE, RINGING, SESSION_PROGRESS, OK, ACK, COMPACT_BYE, FOLDED_OPTIONS)
