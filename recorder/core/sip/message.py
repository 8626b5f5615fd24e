"""Parse one SIP message (RFC 3261 §7) from bytes.

Contract (h11's discipline): `parse_sip` returns a `SipMessage` or raises
`DecodeError("sip", reason)` with one of the fixed reasons in `REASONS`;
any other exception is a bug. Everything that grows with input is capped.
Header values are decoded as UTF-8 with replacement and are data only:
never used as paths, format strings or log formats.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from recorder.core.sip.headers import (
    TOKEN_RE,
    canonical_name,
    header_param,
    header_uri,
    uri_user,
)
from recorder.errors import DecodeError

__all__ = [
    "MAX_HEADERS",
    "MAX_LINE_CHARS",
    "MAX_MESSAGE_BYTES",
    "METHODS",
    "REASONS",
    "SipMessage",
    "header_param",
    "header_uri",
    "looks_like_sip",
    "parse_sip",
    "uri_user",
]

LAYER = "sip"
MAX_MESSAGE_BYTES = 64 * 1024
MAX_HEADERS = 200
MAX_LINE_CHARS = 16 * 1024
# CSeq numbers are < 2**31 (RFC 3261 §8.1.1.5); 10 digits is the most we read.
_MAX_CSEQ_DIGITS = 10
_MAX_CONTENT_LENGTH_DIGITS = 9

# Every reason parse_sip can raise, for tests and counter labels.
REASONS = frozenset(
    {
        "empty",
        "too_large",
        "line_too_long",
        "too_many_headers",
        "bad_start_line",
        "bad_method",
        "bad_version",
        "bad_status",
        "bad_header",
        "bad_header_name",
        "bad_folding",
        "bad_content_length",
    }
)

# RFC 3261 §27.4 plus the methods of RFC 3262, 3265/6665, 3311, 3428, 3515, 3903, 6086.
METHODS = frozenset(
    {
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "PRACK",
        "SUBSCRIBE",
        "NOTIFY",
        "PUBLISH",
        "INFO",
        "REFER",
        "MESSAGE",
        "UPDATE",
    }
)
_METHOD_BYTES = frozenset(m.encode() for m in METHODS)
_FIRST_BYTES = frozenset(m[0] for m in _METHOD_BYTES) | {ord("S")}
_URI_STARTS = (b"sip:", b"sips:", b"tel:")
_VERSION = "SIP/2.0"


@dataclass(slots=True)
class SipMessage:
    """One parsed SIP request or response.

    `headers` keeps wire order as (canonical lower-case full name, value);
    compact forms are expanded and folded lines joined with one space.
    `body` is exactly Content-Length bytes when the header is present, unless the
    datagram ended first: then `body_short` is set and `body` is what there was.
    """

    method: str | None
    request_uri: str | None
    status: int | None
    reason: str | None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    body_short: bool = False

    @property
    def is_request(self) -> bool:
        """True for a request, False for a response."""
        return self.method is not None

    def header(self, name: str) -> str | None:
        """The first value of header `name` (any case, compact form accepted), or None."""
        wanted = canonical_name(name)
        for key, value in self.headers:
            if key == wanted:
                return value
        return None

    def header_all(self, name: str) -> list[str]:
        """Every value of header `name` in wire order (comma lists are not split)."""
        wanted = canonical_name(name)
        return [value for key, value in self.headers if key == wanted]

    @property
    def call_id(self) -> str | None:
        """The Call-ID, or None when absent or empty."""
        value = self.header("call-id")
        return value or None

    @property
    def from_tag(self) -> str | None:
        """The `tag` parameter of From."""
        return header_param(self.header("from"), "tag")

    @property
    def to_tag(self) -> str | None:
        """The `tag` parameter of To (None before the dialog is established)."""
        return header_param(self.header("to"), "tag")

    @property
    def cseq(self) -> tuple[int, str] | None:
        """(sequence number, upper-case method) of CSeq, or None when absent or malformed."""
        value = self.header("cseq")
        if value is None:
            return None
        parts = value.split()
        if len(parts) != 2:
            return None
        number, method = parts
        if not (number.isascii() and number.isdigit()) or len(number) > _MAX_CSEQ_DIGITS:
            return None
        if TOKEN_RE.fullmatch(method) is None:
            return None
        return int(number), method.upper()

    @property
    def content_type(self) -> str | None:
        """The media type of Content-Type, lower-case, without parameters (`application/sdp`)."""
        value = self.header("content-type")
        if value is None:
            return None
        return value.partition(";")[0].strip().lower() or None


def looks_like_sip(data: bytes) -> bool:
    """Cheap test of a datagram's first bytes: a SIP status line or a known request line.

    Runs on every UDP payload that is not a known RTP flow, so it only looks
    at the first few bytes and allocates little.
    """
    if not data or data[0] not in _FIRST_BYTES:
        return False
    if data.startswith(b"SIP/2.0 "):
        return data[8:11].isdigit()
    sp = data.find(b" ", 0, 10)
    if sp < 0 or data[:sp] not in _METHOD_BYTES:
        return False
    return data[sp + 1 : sp + 6].lower().startswith(_URI_STARTS)


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    """Split into (header block without the blank line, rest). Leading CRLFs are skipped
    (RFC 3261 §7.5); LF-only line ends are tolerated. No blank line: no body."""
    start = 0
    while start < len(data) and data[start] in b"\r\n":
        start += 1
    if start == len(data):
        raise DecodeError(LAYER, "empty")
    crlf = data.find(b"\n\r\n", start)
    lf = data.find(b"\n\n", start)
    if crlf < 0 and lf < 0:
        return data[start:], b""
    if lf < 0 or 0 <= crlf < lf:
        return data[start : crlf + 1], data[crlf + 3 :]
    return data[start : lf + 1], data[lf + 2 :]


def _parse_start_line(line: str, msg: SipMessage) -> None:
    """Fill method/URI or status/reason from the start line (RFC 3261 §7.1, §7.2)."""
    if line[:8].upper() == _VERSION + " ":
        rest = line[8:]
        code, _, reason = rest.partition(" ")
        if len(code) != 3 or not (code.isascii() and code.isdigit()) or code[0] not in "123456":
            raise DecodeError(LAYER, "bad_status")
        msg.status = int(code)
        msg.reason = reason.strip()
        return
    parts = line.split()
    if len(parts) != 3:
        raise DecodeError(LAYER, "bad_start_line")
    method, uri, version = parts
    if TOKEN_RE.fullmatch(method) is None:
        raise DecodeError(LAYER, "bad_method")
    if version.upper() != _VERSION:
        raise DecodeError(LAYER, "bad_version")
    msg.method = method.upper()
    msg.request_uri = uri


def _parse_headers(lines: list[str]) -> list[tuple[str, str]]:
    """Header lines -> [(canonical name, value)], joining folded lines (RFC 3261 §7.3.1)."""
    headers: list[tuple[str, str]] = []
    for line in lines:
        if len(line) > MAX_LINE_CHARS:
            raise DecodeError(LAYER, "line_too_long")
        if line[:1] in (" ", "\t"):
            if not headers:
                raise DecodeError(LAYER, "bad_folding")
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}" if value else line.strip())
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise DecodeError(LAYER, "bad_header")
        name = name.rstrip(" \t")  # HCOLON allows whitespace before ":"
        if TOKEN_RE.fullmatch(name) is None:
            raise DecodeError(LAYER, "bad_header_name")
        if len(headers) >= MAX_HEADERS:
            raise DecodeError(LAYER, "too_many_headers")
        headers.append((canonical_name(name), value.strip()))
    return headers


def _content_length(headers: list[tuple[str, str]]) -> int | None:
    """The declared body length; several equal Content-Length headers are tolerated."""
    found: int | None = None
    for name, value in headers:
        if name != "content-length":
            continue
        if not (value.isascii() and value.isdigit()) or len(value) > _MAX_CONTENT_LENGTH_DIGITS:
            raise DecodeError(LAYER, "bad_content_length")
        length = int(value)
        if found is not None and found != length:
            raise DecodeError(LAYER, "bad_content_length")
        found = length
    return found


def parse_sip(data: bytes) -> SipMessage:
    """Parse one complete SIP message (a UDP payload or one framed TCP message).

    With Content-Length, the body is cut to it; without it the body is the rest of the
    data. A datagram shorter than its Content-Length is kept with `body_short` set: a
    passive recorder follows what the endpoints accepted (a UA that miscounts its SDP, a
    capture cut by its snap length), and the caller counts the anomaly.
    Raises only `DecodeError("sip", reason)` with reason in `REASONS`.
    """
    if len(data) > MAX_MESSAGE_BYTES:
        raise DecodeError(LAYER, "too_large")
    head, rest = _split_head(data)
    lines = head.decode("utf-8", "replace").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last header line
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    if len(lines) > MAX_HEADERS * 4:
        raise DecodeError(LAYER, "too_many_headers")
    if len(lines[0]) > MAX_LINE_CHARS:
        raise DecodeError(LAYER, "line_too_long")
    msg = SipMessage(method=None, request_uri=None, status=None, reason=None)
    _parse_start_line(lines[0], msg)
    msg.headers = _parse_headers(lines[1:])
    length = _content_length(msg.headers)
    if length is None:
        msg.body = rest
    elif len(rest) < length:
        msg.body = rest
        msg.body_short = True
    else:
        msg.body = rest[:length]
    return msg
