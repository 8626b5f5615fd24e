"""RTP payload type -> codec: the RFC 3551 static table and the a=rtpmap lookup."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

    from recorder.core.sdp.parse import SdpMedia

__all__ = ["RtpMap", "codec_for", "static_payload_types"]


@dataclass(frozen=True, slots=True)
class RtpMap:
    """An a=rtpmap entry: upper-case encoding name, RTP clock rate, channel count.

    The clock rate is the RTP timestamp rate, not the sample rate: G722 is
    8000 here although it carries 16 kHz audio (RFC 3551 §4.5.2).
    """

    encoding: str
    clock_rate: int
    channels: int = 1


# RFC 3551 Tables 4 and 5 (static assignments; 1, 2, 19 are reserved or withdrawn).
_STATIC = MappingProxyType(
    {
        0: RtpMap("PCMU", 8000),
        3: RtpMap("GSM", 8000),
        4: RtpMap("G723", 8000),
        5: RtpMap("DVI4", 8000),
        6: RtpMap("DVI4", 16000),
        7: RtpMap("LPC", 8000),
        8: RtpMap("PCMA", 8000),
        9: RtpMap("G722", 8000),
        10: RtpMap("L16", 44100, 2),
        11: RtpMap("L16", 44100),
        12: RtpMap("QCELP", 8000),
        13: RtpMap("CN", 8000),
        14: RtpMap("MPA", 90000),
        15: RtpMap("G728", 8000),
        16: RtpMap("DVI4", 11025),
        17: RtpMap("DVI4", 22050),
        18: RtpMap("G729", 8000),
        25: RtpMap("CELB", 90000),
        26: RtpMap("JPEG", 90000),
        28: RtpMap("NV", 90000),
        31: RtpMap("H261", 90000),
        32: RtpMap("MPV", 90000),
        33: RtpMap("MP2T", 90000),
        34: RtpMap("H263", 90000),
    }
)


def static_payload_types() -> Mapping[int, RtpMap]:
    """The read-only RFC 3551 static payload type table."""
    return _STATIC


def codec_for(media: SdpMedia, pt: int) -> RtpMap | None:
    """The codec of payload type `pt` in `media`: its a=rtpmap first, then the static table."""
    mapped = media.rtpmap.get(pt)
    if mapped is not None:
        return mapped
    return _STATIC.get(pt)
