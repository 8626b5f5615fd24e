"""A phone call between two UDP peers on 127.0.0.1, sent through the real network stack so
that a live capture on `lo` sees it: SIP INVITE/200/ACK, PCMU RTP both ways, BYE."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

from tests.builders import rtp, sdp, sip
from tests.service.harness import free_udp_ports

LOCAL = "127.0.0.1"


def tone(i: int, side: int) -> bytes:
    """The µ-law payload of packet `i` from `side` (0 caller, 1 callee): varied bytes."""
    return bytes((i * 11 + k * (5 + 2 * side) + 17 * side) % 256 for k in range(160))


@dataclass
class LoopbackCall:
    """A call on ports free at creation (see `ports` for the capture filter)."""

    call_id: str
    numbers: tuple[str, str] = ("+4930111", "+4930222")
    sent: list[list[bytes]] = field(default_factory=lambda: [[], []])
    sent_ns: list[list[int]] = field(default_factory=lambda: [[], []])  # wall clock of each
    _socks: list[socket.socket] = field(default_factory=list)

    def __post_init__(self) -> None:
        a, b, c, d = free_udp_ports(4)
        self.sip_ports = (a, b)
        self.rtp_ports = (c, d)
        for port in (*self.sip_ports, *self.rtp_ports):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((LOCAL, port))  # a bound receiver: no ICMP port unreachable
            self._socks.append(s)

    def _dialog(self, to_tag: bool) -> list[tuple[str, str]]:
        caller, callee = self.numbers
        to = f"<sip:{callee}@example.com>" + (";tag=callee" if to_tag else "")
        return [
            ("Via", f"SIP/2.0/UDP {LOCAL}:{self.sip_ports[0]};branch=z9hG4bK{self.call_id}"),
            ("From", f"<sip:{caller}@example.com>;tag=caller"),
            ("To", to),
            ("Call-ID", self.call_id),
        ]

    def _send_sip(self, side: int, msg: bytes) -> None:
        self._socks[side].sendto(msg, (LOCAL, self.sip_ports[1 - side]))

    def setup(self) -> None:
        pts = {0: "PCMU/8000"}
        callee = self.numbers[1]
        invite = sip(
            f"INVITE sip:{callee}@example.com SIP/2.0",
            [*self._dialog(False), ("CSeq", "1 INVITE")],
            sdp(LOCAL, self.rtp_ports[0], pts),
        )
        self._send_sip(0, invite)
        time.sleep(0.05)
        ok = sip(
            "SIP/2.0 200 OK",
            [*self._dialog(True), ("CSeq", "1 INVITE")],
            sdp(LOCAL, self.rtp_ports[1], pts),
        )
        self._send_sip(1, ok)
        time.sleep(0.01)
        ack = sip(f"ACK sip:{callee}@example.com SIP/2.0", [*self._dialog(True), ("CSeq", "1 ACK")])
        self._send_sip(0, ack)
        time.sleep(0.05)

    def talk(self, packets: int, sides: tuple[int, ...] = (0, 1)) -> None:
        """`packets` 20 ms PCMU packets from each side, paced in real time."""
        start = time.monotonic()
        for i in range(packets):
            for side in sides:
                n = len(self.sent[side])
                payload = tone(n, side)
                packet = rtp(0, 1000 * side + n, 160 * n, 0x1000 + side, payload)
                sock = self._socks[2 + side]
                self.sent_ns[side].append(time.time_ns())
                sock.sendto(packet, (LOCAL, self.rtp_ports[1 - side]))
                self.sent[side].append(payload)
            delay = start + (i + 1) * 0.02 - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def bye(self) -> None:
        callee = self.numbers[1]
        bye = sip(f"BYE sip:{callee}@example.com SIP/2.0", [*self._dialog(True), ("CSeq", "2 BYE")])
        self._send_sip(0, bye)
        time.sleep(0.01)
        self._send_sip(1, sip("SIP/2.0 200 OK", [*self._dialog(True), ("CSeq", "2 BYE")]))

    @property
    def ports(self) -> list[int]:
        return [*self.sip_ports, *self.rtp_ports]

    def close(self) -> None:
        for s in self._socks:
            s.close()
