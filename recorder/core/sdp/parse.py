"""Parse an SDP body (RFC 8866, formerly RFC 4566) into the facts a recorder needs.

Contract: `parse_sdp` returns an `SdpSession` or raises `DecodeError("sdp",
reason)` with a reason in `REASONS`, nothing else. It is tolerant the way
real endpoints need: LF-only line ends, unknown line types and malformed
attributes are skipped; only a missing `v=`, an unreadable `m=` or `c=`
line, or exceeding a cap is an error. Caps bound size, lines and m-lines.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from recorder.core.sdp.attributes import DIRECTIONS, apply_attribute
from recorder.core.sdp.codecs import RtpMap, codec_for, static_payload_types
from recorder.errors import DecodeError

__all__ = [
    "MAX_LINES",
    "MAX_MEDIA",
    "MAX_SDP_BYTES",
    "REASONS",
    "RtpMap",
    "SdpMedia",
    "SdpSession",
    "codec_for",
    "parse_sdp",
    "static_payload_types",
]

LAYER = "sdp"
MAX_SDP_BYTES = 64 * 1024
MAX_LINES = 2000
MAX_MEDIA = 32
_MAX_FORMATS = 256

REASONS = frozenset(
    {
        "empty",
        "too_large",
        "too_many_lines",
        "too_many_media",
        "no_version",
        "bad_media",
        "bad_port",
        "bad_connection",
    }
)


@dataclass(slots=True)
class SdpMedia:
    """One m= section.

    `connection` is already resolved: the media-level c= address, else the
    session-level one (packed bytes; `0.0.0.0` stays four zero bytes so
    callers can see RFC 2543 hold), else None (absent or a host name).
    `direction` is resolved the same way and defaults to sendrecv.
    """

    kind: str
    port: int
    proto: str
    formats: list[str] = field(default_factory=list)
    payload_types: list[int] = field(default_factory=list)
    port_count: int = 1
    connection: bytes | None = None
    rtpmap: dict[int, RtpMap] = field(default_factory=dict)
    fmtp: dict[int, str] = field(default_factory=dict)
    direction: str = "sendrecv"
    rtcp_mux: bool = False
    rtcp_port: int | None = None
    ptime: int | None = None
    crypto: bool = False
    # What this section said itself, before session-level defaults applied.
    own_connection: bool = False
    own_direction: str | None = None

    @property
    def is_rtp(self) -> bool:
        """True for RTP profiles (RTP/AVP, RTP/SAVP, RTP/AVPF, UDP/TLS/RTP/SAVPF, ...)."""
        return "RTP/" in self.proto.upper()

    @property
    def is_srtp(self) -> bool:
        """True when media is SRTP (SDES a=crypto or a SAVP profile): not recordable passively."""
        return self.crypto or "SAVP" in self.proto.upper()

    @property
    def effective_connection(self) -> bytes | None:
        """Alias of `connection` (already resolved against the session level)."""
        return self.connection


@dataclass(slots=True)
class SdpSession:
    """A parsed SDP body: session-level connection and direction, then the m= sections."""

    connection: bytes | None = None
    direction: str | None = None
    origin: str | None = None
    media: list[SdpMedia] = field(default_factory=list)


def _parse_connection(value: str) -> bytes | None:
    """c=<nettype> <addrtype> <address>[/ttl[/n]] -> packed address, None if not a literal."""
    parts = value.split()
    if len(parts) != 3:
        raise DecodeError(LAYER, "bad_connection")
    nettype, addrtype, address = parts
    if nettype.upper() != "IN":
        return None
    addrtype = addrtype.upper()
    if addrtype not in ("IP4", "IP6"):
        raise DecodeError(LAYER, "bad_connection")
    try:
        ip = ipaddress.ip_address(address.partition("/")[0])
    except ValueError:
        return None  # an FQDN (allowed by RFC 8866 §5.7); the core cannot resolve it
    if (ip.version == 4) != (addrtype == "IP4"):
        raise DecodeError(LAYER, "bad_connection")
    return ip.packed


def _small_int(text: str, limit: int) -> int | None:
    """A decimal integer 0..limit, or None (never raises)."""
    if not text or len(text) > 10 or not (text.isascii() and text.isdigit()):
        return None
    number = int(text)
    return number if number <= limit else None


def _parse_media(value: str) -> SdpMedia:
    """m=<media> <port>[/<count>] <proto> <fmt> ... (RFC 8866 §5.14)."""
    parts = value.split()
    if len(parts) < 3:
        raise DecodeError(LAYER, "bad_media")
    kind, port_text, proto = parts[0].lower(), parts[1], parts[2]
    port_str, slash, count_str = port_text.partition("/")
    port = _small_int(port_str, 65535)
    count = _small_int(count_str, 65535) if slash else 1
    if port is None or count is None:
        raise DecodeError(LAYER, "bad_port")
    formats = parts[3 : 3 + _MAX_FORMATS]
    media = SdpMedia(kind=kind, port=port, proto=proto, formats=formats, port_count=count)
    if media.is_rtp:
        for fmt in formats:
            pt = _small_int(fmt, 127)
            if pt is not None and pt not in media.payload_types:
                media.payload_types.append(pt)
    return media


def _lines(body: bytes) -> list[str]:
    """Body -> text lines without line ends; CRLF or LF (RFC 8866 §5 tolerance)."""
    if len(body) > MAX_SDP_BYTES:
        raise DecodeError(LAYER, "too_large")
    if body.count(b"\n") > MAX_LINES:
        raise DecodeError(LAYER, "too_many_lines")
    text = body.decode("utf-8", "replace")
    lines = [line.strip() for line in text.split("\n")]
    lines = [line for line in lines if line]
    if not lines:
        raise DecodeError(LAYER, "empty")
    if not lines[0].startswith("v="):
        raise DecodeError(LAYER, "no_version")
    return lines


def parse_sdp(body: bytes) -> SdpSession:
    """Parse an SDP body; raises only `DecodeError("sdp", reason)` with reason in `REASONS`."""
    session = SdpSession()
    current: SdpMedia | None = None
    for line in _lines(body):
        kind, eq, value = line[0], line[1:2], line[2:]
        if eq != "=":
            continue  # not an SDP line; tolerated like an unknown type
        if kind == "m":
            if len(session.media) >= MAX_MEDIA:
                raise DecodeError(LAYER, "too_many_media")
            current = _parse_media(value)
            session.media.append(current)
        elif kind == "c":
            address = _parse_connection(value)
            if current is None:
                session.connection = address
            else:
                current.connection = address
                current.own_connection = True
        elif kind == "o" and current is None:
            session.origin = value
        elif kind == "a":
            if current is None:
                if value in DIRECTIONS:
                    session.direction = value
            else:
                apply_attribute(current, value)
    for media in session.media:
        if not media.own_connection:
            media.connection = session.connection
        media.direction = media.own_direction or session.direction or "sendrecv"
    return session
