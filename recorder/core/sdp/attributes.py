"""Media-level a= attributes (RFC 8866 §6, RFC 3605 rtcp, RFC 5761 rtcp-mux, RFC 4568 crypto).

Every function is total: a malformed attribute is ignored, never raised,
because one odd attribute must not cost the recording of a whole call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from recorder.core.sdp.codecs import RtpMap

if TYPE_CHECKING:
    from recorder.core.sdp.parse import SdpMedia

__all__ = ["DIRECTIONS", "apply_attribute"]

DIRECTIONS = frozenset({"sendrecv", "sendonly", "recvonly", "inactive"})
_MAX_FMTP_CHARS = 4096
_MAX_CLOCK = 10_000_000
_MAX_CHANNELS = 255


def _int(text: str, limit: int) -> int | None:
    """A decimal integer 0..limit, or None."""
    text = text.strip()
    if not text or len(text) > 10 or not (text.isascii() and text.isdigit()):
        return None
    number = int(text)
    return number if number <= limit else None


def _rtpmap(value: str) -> tuple[int, RtpMap] | None:
    """`<pt> <encoding>/<clock>[/<channels>]` -> (pt, RtpMap)."""
    pt_text, _, spec = value.partition(" ")
    pt = _int(pt_text, 127)
    parts = spec.strip().split("/")
    if pt is None or len(parts) < 2 or not parts[0]:
        return None
    clock = _int(parts[1], _MAX_CLOCK)
    channels = _int(parts[2], _MAX_CHANNELS) if len(parts) > 2 else 1
    if not clock or not channels:
        return None
    return pt, RtpMap(parts[0].upper(), clock, channels)


def _ptime(value: str) -> int | None:
    """a=ptime in whole milliseconds; some endpoints send `20.0`."""
    return _int(value.partition(".")[0], 10_000)


def apply_attribute(media: SdpMedia, value: str) -> None:
    """Apply one media-level `a=` line (the text after `a=`) to `media`."""
    name, _, arg = value.partition(":")
    if name in DIRECTIONS and not arg:
        media.own_direction = name
    elif name == "rtpmap":
        entry = _rtpmap(arg)
        if entry is not None:
            media.rtpmap[entry[0]] = entry[1]
    elif name == "fmtp":
        pt_text, _, params = arg.partition(" ")
        pt = _int(pt_text, 127)
        if pt is not None:
            media.fmtp[pt] = params.strip()[:_MAX_FMTP_CHARS]
    elif name == "rtcp-mux":
        media.rtcp_mux = True
    elif name == "rtcp":
        media.rtcp_port = _int(arg.split(" ", 1)[0], 65535)
    elif name == "ptime":
        media.ptime = _ptime(arg)
    elif name == "crypto":
        media.crypto = True
