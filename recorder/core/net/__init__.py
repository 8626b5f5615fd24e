"""Link, IP and transport decoding: a captured frame in, a UDP/TCP `Datagram` out."""

from recorder.core.net.decoder import NetDecoder, NetLimits
from recorder.core.net.defrag import FragmentLimits

__all__ = ["FragmentLimits", "NetDecoder", "NetLimits"]
