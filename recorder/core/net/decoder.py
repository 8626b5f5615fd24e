"""NetDecoder: one captured frame in, one UDP datagram or TCP segment out.

The decoder walks link layer -> IP -> (tunnel -> link -> IP)* -> UDP/TCP with
offsets into the frame's bytes, copying only the payload it returns. IP fragments
are held by a `Reassembler` until complete. Drops raise
`DecodeError(layer, reason)` with layer in link, ip, udp, tcp, tunnel.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from recorder.core.model import (
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    PROTO_TCP,
    PROTO_UDP,
    Datagram,
)
from recorder.core.net import ip, link, tunnels
from recorder.core.net.defrag import FragmentLimits, Reassembler
from recorder.errors import ConfigError, DecodeError

PROTO_IPIP = 4
PROTO_IPV6 = 41
PROTO_GRE = 47

_IPV4_UDP = struct.Struct("!BxH2xHxB2x4s4sHHH").unpack_from
_SLL_NETLINK = link.ARPHRD_NETLINK.to_bytes(2, "big")
_UDP = struct.Struct("!HHH").unpack_from
_TCP = struct.Struct("!HHI4xBB").unpack_from


@dataclass(frozen=True, slots=True)
class NetLimits:
    """Decoder bounds: fragment reassembly, tunnel nesting, and the UDP ports
    whose payload is decapsulated when its header matches (VXLAN, GTP-U)."""

    fragments: FragmentLimits = field(default_factory=FragmentLimits)
    max_tunnel_depth: int = 4
    vxlan_ports: frozenset[int] = frozenset({4789})
    gtpu_ports: frozenset[int] = frozenset({2152})

    def __post_init__(self) -> None:
        if self.max_tunnel_depth < 0:
            raise ConfigError("max_tunnel_depth must not be negative")


class NetDecoder:
    """Sans-I/O frame decoder with IP reassembly.

    `decode()` returns a `Datagram`, or `None` when the frame was an IP fragment
    kept for reassembly, or raises `DecodeError`. `counters` holds plain ints
    (`fragments_reassembled`, `fragment_evictions`, `fragment_timeouts`).
    """

    def __init__(self, limits: NetLimits | None = None) -> None:
        self.limits = limits or NetLimits()
        self.counters: dict[str, int] = {}
        self._reassembler = Reassembler(self.limits.fragments, self.counters)
        self._max_depth = self.limits.max_tunnel_depth
        self._vxlan_ports = self.limits.vxlan_ports
        self._gtpu_ports = self.limits.gtpu_ports
        self._tunnel_ports = self._vxlan_ports | self._gtpu_ports

    @property
    def tunnel_ports(self) -> frozenset[int]:
        """UDP ports decoded as tunnels (VXLAN, GTP-U), never as media."""
        return frozenset(self._tunnel_ports)

    @property
    def pending_fragment_datagrams(self) -> int:
        """Datagrams waiting for more fragments (a gauge)."""
        return self._reassembler.pending_datagrams

    @property
    def pending_fragment_bytes(self) -> int:
        """Fragment bytes held for reassembly (a gauge)."""
        return self._reassembler.pending_bytes

    def expire(self, now_ns: int) -> None:
        """Drop fragment sets whose timeout has passed at capture time `now_ns`."""
        self._reassembler.expire(now_ns)

    def next_expiry_ns(self) -> int | None:
        """When `expire` next has work to do, or None."""
        return self._reassembler.next_expiry_ns()

    def decode(self, linktype: int, data: bytes, now_ns: int) -> Datagram | None:
        """Decode one frame; see the class docstring."""
        # Fast path for the common case: IPv4 without options or fragmentation carrying
        # UDP to a non-tunnel port, behind Ethernet (at most one 802.1Q tag) or SLL.
        # Anything else, or anything odd, takes the full path, which decides.
        size = len(data)
        off = 0
        if linktype == LINKTYPE_ETHERNET and size >= 42:
            if data[12] == 0x08 and data[13] == 0:
                off = 14
            elif data[12] == 0x81 and data[13] == 0 and data[16] == 0x08 and data[17] == 0:
                off = 18
        elif (
            linktype == LINKTYPE_LINUX_SLL
            and size >= 44
            and data[14] == 0x08
            and data[15] == 0
            and data[2:4] != _SLL_NETLINK
        ):
            off = 16
        if off and size >= off + 28:
            vihl, total, frag, proto, src, dst, sport, dport, ulen = _IPV4_UDP(data, off)
            if (
                vihl == 0x45
                and proto == PROTO_UDP
                and not frag & 0x3FFF
                and 28 <= total <= size - off
                and 8 <= ulen <= total - 20
                and dport not in self._tunnel_ports
            ):
                return Datagram(PROTO_UDP, src, dst, sport, dport, data[off + 28 : off + 20 + ulen])
        return self.decode_general(linktype, data, now_ns)

    def decode_general(self, linktype: int, data: bytes, now_ns: int) -> Datagram | None:
        """The full decoder (what `decode` falls back to; also used to test the fast path)."""
        kind, off, end = link.strip(linktype, data)
        return self._network(kind, data, off, end, now_ns, 0)

    def _network(
        self, kind: int, data: bytes, off: int, end: int, now_ns: int, depth: int
    ) -> Datagram | None:
        if kind == link.ETHER:  # the tunnel that led here has been counted already
            kind, off, end = link.ethernet(data, off, end)
            while kind == link.ETHER:  # an MPLS pseudowire inside that Ethernet frame
                depth = self._deeper(depth)
                kind, off, end = link.ethernet(data, off, end)
        if kind == link.IPV4:
            proto, src, dst, off, end, frag_offset, frag_more, frag_id = ip.ipv4(data, off, end)
            key_proto = proto
        else:
            proto, src, dst, off, end, frag_offset, frag_more, frag_id = ip.ipv6(data, off, end)
            key_proto = 0  # RFC 8200: the IPv6 key is (src, dst, id)
        if frag_offset >= 0:
            key = (kind, src, dst, key_proto, frag_id)
            done = self._reassembler.add(key, frag_offset, frag_more, data[off:end], proto, now_ns)
            if done is None:
                return None
            proto, data = done
            off, end = 0, len(data)
            if kind == link.IPV6:  # the fragmentable part may start with more extensions
                proto, off, frag = ip.walk_extensions(proto, data, 0, end)
                if frag is not None:
                    raise DecodeError("ip", "bad_fragment")
        return self._transport(proto, src, dst, data, off, end, now_ns, depth)

    def _transport(
        self,
        proto: int,
        src: bytes,
        dst: bytes,
        data: bytes,
        off: int,
        end: int,
        now_ns: int,
        depth: int,
    ) -> Datagram | None:
        if proto == PROTO_UDP:
            return self._udp(src, dst, data, off, end, now_ns, depth)
        if proto == PROTO_TCP:
            return _tcp(src, dst, data, off, end)
        if proto == PROTO_GRE:
            kind, off, end = tunnels.gre(data, off, end)
        elif proto == PROTO_IPIP:
            kind = link.IPV4
        elif proto == PROTO_IPV6:
            kind = link.IPV6
        else:
            raise DecodeError("ip", "not_udp_or_tcp")
        return self._network(kind, data, off, end, now_ns, self._deeper(depth))

    def _udp(
        self, src: bytes, dst: bytes, data: bytes, off: int, end: int, now_ns: int, depth: int
    ) -> Datagram | None:
        if end - off < 8:
            raise DecodeError("udp", "truncated")
        sport, dport, ulen = _UDP(data, off)
        if ulen < 8:
            raise DecodeError("udp", "bad_header")
        if off + ulen > end:
            raise DecodeError("udp", "truncated")
        if dport in self._tunnel_ports:
            if dport in self._vxlan_ports:
                inner = tunnels.vxlan(data, off + 8, off + ulen)
            else:
                inner = tunnels.gtpu(data, off + 8, off + ulen)
            if inner is not None:
                kind, off, end = inner
                return self._network(kind, data, off, end, now_ns, self._deeper(depth))
        return Datagram(PROTO_UDP, src, dst, sport, dport, data[off + 8 : off + ulen])

    def _deeper(self, depth: int) -> int:
        if depth >= self._max_depth:
            raise DecodeError("tunnel", "too_deep")
        return depth + 1


def _tcp(src: bytes, dst: bytes, data: bytes, off: int, end: int) -> Datagram:
    """TCP (RFC 9293): header length checked, options skipped; flags are byte 13."""
    if end - off < 20:
        raise DecodeError("tcp", "truncated")
    sport, dport, seq, offset_byte, flags = _TCP(data, off)
    hlen = (offset_byte >> 4) * 4
    if hlen < 20:
        raise DecodeError("tcp", "bad_header")
    if off + hlen > end:
        raise DecodeError("tcp", "truncated")
    return Datagram(PROTO_TCP, src, dst, sport, dport, data[off + hlen : end], seq, flags)
