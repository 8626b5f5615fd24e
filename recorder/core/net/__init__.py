"""Link, IP and transport decoding: a captured frame in, a UDP/TCP `Datagram` out.

`DROP_REASONS` is the closed catalogue of `DecodeError(layer, reason)` this package
raises (metric label values):

- link: truncated, unsupported_linktype, not_ip (ARP, LLDP, non-IP PPP...),
  bad_header (tag/label stack too deep, PPPoE or ERF header wrong)
- ip: truncated (header cut, or total length beyond the capture), bad_header,
  not_udp_or_tcp (ICMP, SCTP, ESP...), ext_header_limit (over 16 IPv6 extension
  headers), bad_fragment, fragment_overlap, fragment_limit (see `defrag`)
- udp / tcp: truncated, bad_header (UDP length < 8, TCP data offset < 5)
- tunnel: truncated, bad_header, unsupported (GRE routing/version, ERSPAN frame
  type), not_ip, too_deep (more than `NetLimits.max_tunnel_depth` nested)
"""

from recorder.core.net.decoder import NetDecoder, NetLimits
from recorder.core.net.defrag import FragmentLimits

DROP_REASONS: dict[str, frozenset[str]] = {
    "link": frozenset({"truncated", "unsupported_linktype", "not_ip", "bad_header"}),
    "ip": frozenset(
        {
            "truncated",
            "bad_header",
            "not_udp_or_tcp",
            "ext_header_limit",
            "bad_fragment",
            "fragment_overlap",
            "fragment_limit",
        }
    ),
    "udp": frozenset({"truncated", "bad_header"}),
    "tcp": frozenset({"truncated", "bad_header"}),
    "tunnel": frozenset({"truncated", "bad_header", "unsupported", "not_ip", "too_deep"}),
}

__all__ = ["DROP_REASONS", "FragmentLimits", "NetDecoder", "NetLimits"]
