"""Test-only builders: SIP messages with SDP, RTP packets, Ethernet frames and pcap files.

Frames are made with scapy (test-only dependency) so that the bytes come from an
implementation other than the recorder's own parsers."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from recorder.core.model import LINKTYPE_ETHERNET, Frame

NS = 1_000_000_000


def rtp(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool = False) -> bytes:
    return (
        struct.pack(
            "!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc
        )
        + payload
    )


ETH_IP_UDP = struct.Struct("!6s6sHBBHHHBBH4s4sHHHH")


def fast_udp(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    """An Ethernet/IPv4/UDP frame without scapy (hypothesis makes many)."""
    ip = lambda a: bytes(int(x) for x in a.split("."))  # noqa: E731
    return (
        ETH_IP_UDP.pack(
            b"\2" * 6,
            b"\4" * 6,
            0x0800,
            0x45,
            0,
            28 + len(payload),
            0,
            0,
            64,
            17,
            0,
            ip(src),
            ip(dst),
            sport,
            dport,
            8 + len(payload),
            0,
        )
        + payload
    )


def udp_frame(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    return bytes(
        Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        / IP(src=src, dst=dst)
        / UDP(sport=sport, dport=dport)
        / Raw(payload)
    )


def sdp(ip: str, port: int, pts: dict[int, str], direction: str = "sendrecv") -> str:
    fmt = " ".join(str(pt) for pt in pts)
    lines = [
        "v=0",
        f"o=- 1 1 IN IP4 {ip}",
        "s=-",
        f"c=IN IP4 {ip}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {fmt}",
    ]
    lines += [f"a=rtpmap:{pt} {enc}" for pt, enc in pts.items()]
    lines.append(f"a={direction}")
    return "\r\n".join(lines) + "\r\n"


def sip(start: str, headers: list[tuple[str, str]], body: str = "") -> bytes:
    lines = [start] + [f"{k}: {v}" for k, v in headers]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


@dataclass
class CallBuilder:
    """One call between two hosts; collects frames with capture times in ns."""

    call_id: str = "call-1@test"
    caller: str = "+4930111"
    callee: str = "+4930222"
    caller_ip: str = "10.0.0.1"
    callee_ip: str = "10.0.0.2"
    caller_rtp: int = 40000
    callee_rtp: int = 50000
    pts: dict[int, str] = field(
        default_factory=lambda: {0: "PCMU/8000", 101: "telephone-event/8000"}
    )
    frames: list[Frame] = field(default_factory=list)

    def _dialog(self, to_tag: bool) -> list[tuple[str, str]]:
        to = f"<sip:{self.callee}@example.com>" + (";tag=callee" if to_tag else "")
        return [
            ("Via", f"SIP/2.0/UDP {self.caller_ip}:5060;branch=z9hG4bK1"),
            ("From", f'"Alice" <sip:{self.caller}@example.com>;tag=caller'),
            ("To", to),
            ("Call-ID", self.call_id),
        ]

    def add(self, t_ns: int, data: bytes) -> None:
        self.frames.append(Frame(t_ns, LINKTYPE_ETHERNET, data))

    def sip_from_caller(self, t_ns: int, msg: bytes) -> None:
        self.add(t_ns, udp_frame(self.caller_ip, 5060, self.callee_ip, 5060, msg))

    def sip_from_callee(self, t_ns: int, msg: bytes) -> None:
        self.add(t_ns, udp_frame(self.callee_ip, 5060, self.caller_ip, 5060, msg))

    def invite(self, t_ns: int) -> None:
        body = sdp(self.caller_ip, self.caller_rtp, self.pts)
        msg = sip(
            f"INVITE sip:{self.callee}@example.com SIP/2.0",
            [*self._dialog(False), ("CSeq", "1 INVITE")],
            body,
        )
        self.sip_from_caller(t_ns, msg)

    def answer(self, t_ns: int) -> None:
        body = sdp(self.callee_ip, self.callee_rtp, self.pts)
        self.sip_from_callee(
            t_ns, sip("SIP/2.0 200 OK", [*self._dialog(True), ("CSeq", "1 INVITE")], body)
        )
        ack = sip(
            f"ACK sip:{self.callee}@example.com SIP/2.0", [*self._dialog(True), ("CSeq", "1 ACK")]
        )
        self.sip_from_caller(t_ns + 1_000_000, ack)

    def bye(self, t_ns: int) -> None:
        msg = sip(
            f"BYE sip:{self.callee}@example.com SIP/2.0", [*self._dialog(True), ("CSeq", "2 BYE")]
        )
        self.sip_from_caller(t_ns, msg)

    def rtp_from_caller(self, t_ns: int, packet: bytes) -> None:
        self.add(
            t_ns,
            udp_frame(self.caller_ip, self.caller_rtp, self.callee_ip, self.callee_rtp, packet),
        )

    def rtp_from_callee(self, t_ns: int, packet: bytes) -> None:
        self.add(
            t_ns,
            udp_frame(self.callee_ip, self.callee_rtp, self.caller_ip, self.caller_rtp, packet),
        )

    def sorted_frames(self) -> list[Frame]:
        return sorted(self.frames, key=lambda f: f.ts_ns)


def write_pcap(path: Path, frames: list[Frame], linktype: int = LINKTYPE_ETHERNET) -> Path:
    """A nanosecond-resolution pcap of the frames, in the order given (exact ns times)."""
    with path.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, linktype))
        for frame in frames:
            sec, ns = divmod(frame.ts_ns, NS)
            f.write(struct.pack("<IIII", sec, ns, len(frame.data), len(frame.data)))
            f.write(frame.data)
    return path
