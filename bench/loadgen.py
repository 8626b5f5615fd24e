"""Write a pcap of many concurrent calls straight from struct (scapy is far too slow for
millions of packets): each call is INVITE/200/ACK, 20 ms of PCMU (or G.722) both ways,
then BYE.

    python bench/loadgen.py --calls 1000 --seconds 10 -o /tmp/load.pcap
    python bench/loadgen.py --calls 300 --seconds 20 --codec G722 -o /tmp/g722.pcap
"""

from __future__ import annotations

import argparse
import os
import struct
from pathlib import Path

NS = 1_000_000_000
PTIME_NS = 20_000_000
# encoding -> RTP payload type (RFC 3551 static types; both have 160 bytes per 20 ms and an
# RTP clock of 8000/s, G.722's clock being 8000 by that RFC's famous error).
PAYLOAD_TYPES = {"PCMU": 0, "G722": 9}


def _ip(n: int) -> bytes:
    return bytes([10, (n >> 16) & 0xFF, (n >> 8) & 0xFF, n & 0xFF])


def _udp_frame(src: bytes, sport: int, dst: bytes, dport: int, payload: bytes) -> bytes:
    udp_len = 8 + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, 0x4000, 64, 17, 0, src, dst)
    udp = struct.pack("!HHHH", sport, dport, udp_len, 0)
    eth = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00"
    return eth + ip + udp + payload


def _sip(
    kind: str, n: int, a: bytes, b: bytes, a_port: int, b_port: int, codec: str = "PCMU"
) -> bytes:
    ip_a, ip_b = ".".join(map(str, a)), ".".join(map(str, b))
    call_id = f"load-{n}@bench"
    dialog = (
        f"From: <sip:1{n:06d}@bench>;tag=a{n}\r\nTo: <sip:2{n:06d}@bench>"
        + (f";tag=b{n}" if kind != "INVITE" else "")
        + f"\r\nCall-ID: {call_id}\r\n"
    )
    if kind in ("INVITE", "200"):
        ip, port = (ip_a, a_port) if kind == "INVITE" else (ip_b, b_port)
        body = (
            f"v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP {PAYLOAD_TYPES[codec]}\r\n"
            f"a=rtpmap:{PAYLOAD_TYPES[codec]} {codec}/8000\r\n"
        )
        head = "SIP/2.0 200 OK\r\n" if kind == "200" else f"INVITE sip:2{n:06d}@bench SIP/2.0\r\n"
        return (
            head
            + f"Via: SIP/2.0/UDP {ip_a}:5060\r\n"
            + dialog
            + "CSeq: 1 INVITE\r\n"
            + f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n"
            + body
        ).encode()
    method, cseq = ("ACK", "1 ACK") if kind == "ACK" else ("BYE", "2 BYE")
    return (
        f"{method} sip:2{n:06d}@bench SIP/2.0\r\nVia: SIP/2.0/UDP {ip_a}:5060\r\n"
        + dialog
        + f"CSeq: {cseq}\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def generate(
    path: Path,
    calls: int,
    seconds: float,
    start_ns: int = 1_700_000_000 * NS,
    codec: str = "PCMU",
    unsignalled_every: int = 0,
) -> int:
    """Write the capture; returns the number of frames. With `unsignalled_every` N, every
    Nth call's SIP is left out (as when the kernel dropped it, or the call began before
    the recorder): its RTP is on the same ports as every other call's, and unexplained."""
    pt = PAYLOAD_TYPES[codec]
    packets_per_side = int(seconds * NS // PTIME_NS)
    payloads = [os.urandom(160) for _ in range(16)]
    frames = 0
    with path.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, 1))

        def put(t: int, frame: bytes) -> None:
            nonlocal frames
            f.write(struct.pack("<IIII", t // NS, t % NS, len(frame), len(frame)))
            f.write(frame)
            frames += 1

        offsets = [(n * PTIME_NS) // max(calls, 1) for n in range(calls)]  # spread in a ptime
        hosts = [(_ip(2 * n + 1), _ip(2 * n + 2)) for n in range(calls)]
        signalled = [not (unsignalled_every and n % unsignalled_every == 0) for n in range(calls)]
        for n, (a, b) in enumerate(hosts):
            if not signalled[n]:
                continue
            t = start_ns + offsets[n]
            put(t, _udp_frame(a, 5060, b, 5060, _sip("INVITE", n, a, b, 20000, 30000, codec)))
            put(t, _udp_frame(b, 5060, a, 5060, _sip("200", n, a, b, 20000, 30000, codec)))
            put(t, _udp_frame(a, 5060, b, 5060, _sip("ACK", n, a, b, 20000, 30000)))
        prefixes = [
            (
                _udp_frame(a, 20000, b, 30000, b"\0" * 172)[:42],
                _udp_frame(b, 30000, a, 20000, b"\0" * 172)[:42],
            )
            for a, b in hosts
        ]
        for i in range(packets_per_side):
            base = start_ns + PTIME_NS + i * PTIME_NS
            for n, (to_b, to_a) in enumerate(prefixes):
                t = base + offsets[n]
                payload = payloads[(i + n) % 16]
                for side, prefix in ((0, to_b), (1, to_a)):
                    rtp = struct.pack(
                        "!BBHII", 0x80, pt, i & 0xFFFF, (160 * i) & 0xFFFFFFFF, (n << 1) | side
                    )
                    put(t + side * 1000, prefix + rtp + payload)
        end = start_ns + PTIME_NS * (packets_per_side + 2)
        for n, (a, b) in enumerate(hosts):
            if signalled[n]:
                put(end + offsets[n], _udp_frame(a, 5060, b, 5060, _sip("BYE", n, a, b, 0, 0)))
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--codec", choices=sorted(PAYLOAD_TYPES), default="PCMU")
    parser.add_argument(
        "--unsignalled-every",
        type=int,
        default=0,
        metavar="N",
        help="leave out the SIP of every Nth call",
    )
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    frames = generate(
        args.output,
        args.calls,
        args.seconds,
        codec=args.codec,
        unsignalled_every=args.unsignalled_every,
    )
    print(f"{args.output}: {frames} frames, {args.calls} {args.codec} calls of {args.seconds} s")


if __name__ == "__main__":
    main()
