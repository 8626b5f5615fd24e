"""RTP that no signalling explains: SIP over TLS (encrypted), SIP outside the capture, or
a mirror port that only sees media. Such streams are not recorded (which call, which
side, which codec is unknown), but they are never dropped silently: each becomes an index
entry saying what was seen and why it was not recorded."""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass

from recorder.core.events import CallNotRecorded
from recorder.core.model import Datagram

FlowKey = tuple[bytes, int, bytes, int]


@dataclass(slots=True)
class OrphanFlow:
    first_ns: int
    last_ns: int
    payload_type: int
    packets: int = 0
    # The call table's port generations when this flow was last found unexplained: while
    # they hold, its packets are unexplained still and a block counts them in place.
    judged: tuple[int, int] = (-1, -1)
    fast_key: int = -1  # its key in `OrphanStreams.fast` (IPv4), or -1
    after_call: bool = False  # it began on the endpoints of a call that had just ended


def fast_flow_key(src_ip: bytes, sport: int, dst_ip: bytes, dport: int) -> int:
    """An IPv4 flow as one integer: (source address << 16 | port) << 48 | (destination
    address << 16 | port), as the block fast path builds it from a frame's headers."""
    src = int.from_bytes(src_ip, "big") << 16 | sport
    return src << 48 | int.from_bytes(dst_ip, "big") << 16 | dport


class OrphanStreams:
    """Bounded table of unexplained RTP-looking flows; idle ones are reported."""

    def __init__(
        self, *, max_flows: int = 10_000, idle_ns: int = 60 * 10**9, min_packets: int = 10
    ) -> None:
        self._flows: OrderedDict[FlowKey, OrphanFlow] = OrderedDict()
        self.fast: dict[int, OrphanFlow] = {}  # the IPv4 flows by `fast_flow_key`
        self._max_flows = max_flows
        self._idle_ns = idle_ns
        self._min_packets = min_packets  # fewer is noise, not a stream
        self.evicted = 0
        self.tls_seen = False  # SIP over TLS on the wire: the likely reason

    def note(self, dg: Datagram, now_ns: int) -> OrphanFlow | None:
        """Count a UDP datagram no call claimed; None if it does not look like RTP."""
        payload = dg.payload
        if len(payload) < 12 or payload[0] >> 6 != 2 or 72 <= payload[1] & 0x7F <= 76:
            return None
        key = (dg.src_ip, dg.sport, dg.dst_ip, dg.dport)
        flow = self._flows.get(key)
        if flow is None:
            if len(self._flows) >= self._max_flows:
                self._forget(self._flows.popitem(last=False)[1])
                self.evicted += 1
            flow = self._flows[key] = OrphanFlow(now_ns, now_ns, payload[1] & 0x7F)
            if len(dg.src_ip) == 4:
                flow.fast_key = fast_flow_key(dg.src_ip, dg.sport, dg.dst_ip, dg.dport)
                self.fast[flow.fast_key] = flow
        flow.packets += 1
        flow.last_ns = now_ns
        return flow

    def first_seen(self, dg: Datagram) -> int | None:
        """When this flow was first counted here, if it is in the table."""
        flow = self._flows.get((dg.src_ip, dg.sport, dg.dst_ip, dg.dport))
        return None if flow is None else flow.first_ns

    def _forget(self, flow: OrphanFlow) -> None:
        if flow.fast_key >= 0:
            del self.fast[flow.fast_key]

    def expire(self, now_ns: int, *, everything: bool = False) -> list[CallNotRecorded]:
        """Reports for the flows idle for `idle_ns` (or all of them, at the end)."""
        done = [
            key
            for key, flow in self._flows.items()
            if everything or now_ns - flow.last_ns >= self._idle_ns
        ]
        reports = []
        for key in done:
            flow = self._flows.pop(key)
            self._forget(flow)
            if flow.packets >= self._min_packets:
                reports.append(self._report(key, flow))
        return reports

    def _report(self, key: FlowKey, flow: OrphanFlow) -> CallNotRecorded:
        src, sport, dst, dport = key
        where = f"{_ip(src)}:{sport} -> {_ip(dst)}:{dport}"
        if flow.after_call:
            why = "sent to or from the media address of a call that had ended (after its BYE)"
        elif self.tls_seen:
            why = "SIP over TLS seen: signalling encrypted"
        else:
            why = "no SIP seen"
        return CallNotRecorded(
            call_id=f"rtp:{where}",
            caller="",
            callee="",
            first_ns=flow.first_ns,
            last_ns=flow.last_ns,
            outcome="unsignalled_rtp",
            reason=f"{flow.packets} RTP packets, payload type {flow.payload_type}; {why}",
        )


def _ip(packed: bytes) -> str:
    return str(ipaddress.ip_address(packed))
