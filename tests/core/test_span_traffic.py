"""What a real SPAN port carries, made with scapy, through the core: every encapsulation
and transport gives exactly the recording the plain call gives, and each call feature
(early media, re-INVITE, hold, NAT, CANCEL, no BYE, RTP options) ends as it should."""

from __future__ import annotations

import numpy as np
import pytest
from scapy.layers.inet import GRE, IP, TCP, UDP, fragment
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import CookedLinux, Dot1AD, Dot1Q, Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw

from recorder.core.events import CallNotRecorded, RecordingEnded
from recorder.core.limits import CoreLimits
from recorder.core.model import Frame
from recorder.core.pipeline import RecorderCore
from tests.builders import CallBuilder, rtp, sdp, sip
from tests.core.test_timeline_rules import (
    CALLEE_START,
    CALLER_START,
    MS,
    T0,
    base_call,
    expected,
    full,
    payload,
    run,
)

PLAIN = expected(full(0), full(1), 8800)
MAC = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}  # never let scapy resolve one


def rewrap(frames: list[Frame], wrap) -> list[Frame]:  # type: ignore[no-untyped-def]
    out = []
    for f in frames:
        for data, linktype in wrap(Ether(f.data)):
            out.append(Frame(f.ts_ns, linktype, bytes(data)))
    return out


ENCAPSULATIONS = {
    "qinq": lambda p: [(Ether(**MAC) / Dot1AD(vlan=100) / Dot1Q(vlan=200) / p[IP], 1)],
    "gre_teb": lambda p: [
        (Ether(**MAC) / IP(src="1.1.1.1", dst="2.2.2.2") / GRE(proto=0x6558) / p, 1)
    ],
    "erspan2": lambda p: [
        (
            Ether(**MAC)
            / IP(src="1.1.1.1", dst="2.2.2.2")
            / GRE(proto=0x88BE, seqnum_present=1, seqence_number=1)
            / Raw(bytes.fromhex("1001000000000000"))
            / p,
            1,
        )
    ],
    "vxlan": lambda p: [
        (
            Ether(**MAC)
            / IP(src="1.1.1.1", dst="2.2.2.2")
            / UDP(sport=5555, dport=4789)
            / VXLAN(vni=7)
            / p,
            1,
        )
    ],
    "ipip": lambda p: [(Ether(**MAC) / IP(src="1.1.1.1", dst="2.2.2.2", proto=4) / p[IP], 1)],
    "sll": lambda p: [
        (CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6, proto=0x0800) / p[IP], 113)
    ],
    "fragments": lambda p: [(Ether(**MAC) / f, 1) for f in fragment(p[IP], fragsize=64)],
}


@pytest.mark.parametrize("name", sorted(ENCAPSULATIONS))
def test_encapsulated_call_records_the_same_audio(name: str) -> None:
    result = run(rewrap(base_call().sorted_frames(), ENCAPSULATIONS[name]))
    np.testing.assert_array_equal(result.pcm, PLAIN)


def test_fragments_in_reverse_order() -> None:
    def reverse(p):  # type: ignore[no-untyped-def]
        return [(Ether(**MAC) / f, 1) for f in reversed(fragment(p[IP], fragsize=48))]

    np.testing.assert_array_equal(run(rewrap(base_call().sorted_frames(), reverse)).pcm, PLAIN)


def test_sip_over_tcp_in_tiny_segments() -> None:
    """Signalling over TCP, cut into 7-byte segments sent out of order; media over UDP."""
    call = base_call()
    out: list[Frame] = []
    seqs = {}
    for f in call.sorted_frames():
        p = Ether(f.data)
        if p[UDP].dport != 5060:
            out.append(f)
            continue
        key = (p[IP].src, p[IP].dst)
        if key not in seqs:  # the connection opens with a SYN (its sequence number is 999)
            syn = (
                Ether(**MAC)
                / IP(src=p[IP].src, dst=p[IP].dst)
                / TCP(sport=5060, dport=5060, seq=999, flags="S")
            )
            out.append(Frame(f.ts_ns - 1000, 1, bytes(syn)))
        seq = seqs.setdefault(key, 1000)
        data = bytes(p[UDP].payload)
        pieces = [data[i : i + 7] for i in range(0, len(data), 7)]
        order = list(range(len(pieces)))
        order[0:2] = order[1::-1] if len(order) > 1 else order[0:1]  # first two swapped
        for n, k in enumerate(order):
            seg = (
                Ether(**MAC)
                / IP(src=p[IP].src, dst=p[IP].dst)
                / TCP(sport=5060, dport=5060, seq=seq + 7 * k, flags="PA")
                / Raw(pieces[k])
            )
            out.append(Frame(f.ts_ns + n, 1, bytes(seg)))
        seqs[key] = seq + len(data)
    np.testing.assert_array_equal(run(out).pcm, PLAIN)


def test_compact_headers_and_ipv6() -> None:
    call = CallBuilder(caller_ip="2001:db8::1", callee_ip="2001:db8::2")
    frames = []

    def v6(src: str, sport: int, dst: str, dport: int, data: bytes) -> bytes:
        return bytes(
            Ether(**MAC) / IPv6(src=src, dst=dst) / UDP(sport=sport, dport=dport) / Raw(data)
        )

    body = sdp("x", 40000, call.pts).replace("IN IP4 x", "IN IP6 2001:db8::1")
    compact = sip(
        "INVITE sip:b@x SIP/2.0",
        [
            ("v", "SIP/2.0/UDP [2001:db8::1]"),
            ("f", "<sip:+4930111@x>;tag=caller"),
            ("t", "<sip:+4930222@x>"),
            ("i", "v6-call"),
            ("CSeq", "1 INVITE"),
        ],
        body,
    )
    compact = compact.replace(b"Content-Type:", b"c:").replace(b"Content-Length:", b"l:")
    frames.append(Frame(T0, 1, v6("2001:db8::1", 5060, "2001:db8::2", 5060, compact)))
    answer = sdp("x", 50000, call.pts).replace("IN IP4 x", "IN IP6 2001:db8::2")
    ok = sip(
        "SIP/2.0 200 OK",
        [
            ("f", "<sip:+4930111@x>;tag=caller"),
            ("t", "<sip:+4930222@x>;tag=b"),
            ("i", "v6-call"),
            ("CSeq", "1 INVITE"),
        ],
        answer,
    )
    frames.append(Frame(T0 + 500 * MS, 1, v6("2001:db8::2", 5060, "2001:db8::1", 5060, ok)))
    for i in range(50):
        frames.append(
            Frame(
                CALLER_START + i * 20 * MS,
                1,
                v6(
                    "2001:db8::1",
                    40000,
                    "2001:db8::2",
                    50000,
                    rtp(0, 100 + i, 1000 + 160 * i, 0xAAAA, payload(i, 0)),
                ),
            )
        )
        frames.append(
            Frame(
                CALLEE_START + i * 20 * MS,
                1,
                v6(
                    "2001:db8::2",
                    50000,
                    "2001:db8::1",
                    40000,
                    rtp(0, 7 + i, 5000 + 160 * i, 0xBBBB, payload(i, 1)),
                ),
            )
        )
    result = run(sorted(frames, key=lambda f: f.ts_ns))
    assert result.started.caller == "+4930111"
    np.testing.assert_array_equal(result.pcm, PLAIN)


def test_rtp_padding_extension_csrc_comfort_noise_and_rtcp() -> None:
    call = base_call(caller_packets=[i for i in range(50) if i not in (3, 4, 5, 6)])
    p3 = bytes([0xA0]) + rtp(0, 103, 1480, 0xAAAA, payload(3, 0))[1:] + b"\0\0\3"  # padding
    head = rtp(0, 104, 1640, 0xAAAA, b"")
    p4 = bytes([0x90]) + head[1:] + b"\xbe\xde\x00\x01" + b"\x10\xaa\x00\x00" + payload(4, 0)
    p5 = bytes([0x82]) + rtp(0, 105, 1800, 0xAAAA, b"")[1:] + b"\0\0\0\1\0\0\0\2" + payload(5, 0)
    cn = rtp(13, 106, 1960, 0xAAAA, b"\x40")  # comfort noise: silence
    rtcp = bytes.fromhex("80c80006") + bytes(24)  # a sender report on the RTP port (mux)
    for i, pkt in ((3, p3), (4, p4), (5, p5), (6, cn), (6, rtcp)):
        call.rtp_from_caller(CALLER_START + i * 20 * MS, pkt)
    result = run(call.sorted_frames())
    np.testing.assert_array_equal(result.pcm, expected(full(0, skip=(6,)), full(1), 8800))


def _events(frames: list[Frame], limits: CoreLimits | None = None) -> list:
    core = RecorderCore(limits)
    for f in frames:
        core.receive_frame(f)
    core.close()
    return list(core.events())


def test_early_media_is_recorded_before_the_answer() -> None:
    call = CallBuilder()
    call.invite(T0)
    body = sdp(call.callee_ip, call.callee_rtp, call.pts)
    ringing = sip("SIP/2.0 183 Session Progress", [*call._dialog(True), ("CSeq", "1 INVITE")], body)
    call.sip_from_callee(T0 + 100 * MS, ringing)
    for i in range(50):  # ringback from the callee before any 200 OK
        call.rtp_from_callee(
            CALLEE_START + i * 20 * MS, rtp(0, 7 + i, 5000 + 160 * i, 0xBBBB, payload(i, 1))
        )
    call.answer(CALLEE_START + 1100 * MS)
    call.bye(T0 + 3000 * MS)
    result = run(call.sorted_frames())
    assert result.started.start_ns == CALLEE_START
    np.testing.assert_array_equal(result.pcm[:, 1], expected({}, full(1), 8800)[800:, 1])


def test_reinvite_moves_media_and_hold_resume() -> None:
    """Mid-call the callee moves its media to a new port; then the caller holds
    (sendonly, no RTP) and resumes. Audio keeps its place on the timeline."""
    call = base_call(caller_packets=range(20), callee_packets=range(10))
    moved = sdp(call.callee_ip, 52000, call.pts)
    reinv = sip("INVITE sip:a@x SIP/2.0", [*call._dialog(True), ("CSeq", "5 INVITE")], moved)
    reinv = reinv.replace(
        b'From: "Alice" <sip:+4930111@example.com>;tag=caller',
        b"From: <sip:+4930222@example.com>;tag=callee",
    ).replace(
        b"To: <sip:+4930222@example.com>;tag=callee", b"To: <sip:+4930111@example.com>;tag=caller"
    )
    call.sip_from_callee(CALLEE_START + 190 * MS, reinv)
    for i in range(10, 50):
        call.add(
            CALLEE_START + i * 20 * MS,
            bytes(
                Ether(**MAC)
                / IP(src=call.callee_ip, dst=call.caller_ip)
                / UDP(sport=52000, dport=call.caller_rtp)
                / Raw(rtp(0, 7 + i, 5000 + 160 * i, 0xBBBB, payload(i, 1)))
            ),
        )
    hold = sdp("0.0.0.0", call.caller_rtp, call.pts, "sendonly")
    call.sip_from_caller(
        CALLER_START + 395 * MS,
        sip("INVITE sip:b@x SIP/2.0", [*call._dialog(True), ("CSeq", "6 INVITE")], hold),
    )
    for i in range(35, 50):  # resumed: no new SDP needed for the old address to work again
        call.rtp_from_caller(
            CALLER_START + i * 20 * MS, rtp(0, 100 + i, 1000 + 160 * i, 0xAAAA, payload(i, 0))
        )
    result = run(call.sorted_frames())
    caller = {i: payload(i, 0) for i in [*range(20), *range(35, 50)]}
    np.testing.assert_array_equal(result.pcm, expected(caller, full(1), 8800))


def test_nat_latching_matches_rtp_from_other_addresses() -> None:
    """Both ends behind NAT: SDP says 10.0.0.x, the wire says 198.51.100.x, ports kept."""
    call = base_call(caller_packets=range(0), callee_packets=range(0))
    for i in range(50):
        call.add(
            CALLER_START + i * 20 * MS,
            bytes(
                Ether(**MAC)
                / IP(src="198.51.100.1", dst="198.51.100.2")
                / UDP(sport=call.caller_rtp, dport=call.callee_rtp)
                / Raw(rtp(0, 100 + i, 1000 + 160 * i, 0xAAAA, payload(i, 0)))
            ),
        )
        call.add(
            CALLEE_START + i * 20 * MS,
            bytes(
                Ether(**MAC)
                / IP(src="198.51.100.2", dst="198.51.100.1")
                / UDP(sport=call.callee_rtp, dport=call.caller_rtp)
                / Raw(rtp(0, 7 + i, 5000 + 160 * i, 0xBBBB, payload(i, 1)))
            ),
        )
    np.testing.assert_array_equal(run(call.sorted_frames()).pcm, PLAIN)


def test_nat_latching_does_not_steal_another_calls_media() -> None:
    """Two calls offer the same ports; NAT'd RTP on those ports matches neither."""
    a = base_call(caller_packets=range(0), callee_packets=range(0))
    b = CallBuilder(call_id="other@test", caller_ip="10.0.9.1", callee_ip="10.0.9.2")
    b.invite(T0 + 10 * MS)
    b.answer(T0 + 510 * MS)
    for i in range(50):
        a.add(
            CALLER_START + i * 20 * MS,
            bytes(
                Ether(**MAC)
                / IP(src="198.51.100.1", dst="198.51.100.2")
                / UDP(sport=a.caller_rtp, dport=a.callee_rtp)
                / Raw(rtp(0, i, 160 * i, 1, payload(i, 0)))
            ),
        )
    events = _events(sorted(a.frames + b.frames, key=lambda f: f.ts_ns))
    assert not [e for e in events if isinstance(e, RecordingEnded)]


def test_cancelled_and_unanswered_calls_leave_an_explained_entry() -> None:
    call = CallBuilder()
    call.invite(T0)
    cancel = sip("CANCEL sip:b@x SIP/2.0", [*call._dialog(False), ("CSeq", "1 CANCEL")])
    call.sip_from_caller(T0 + 2000 * MS, cancel)
    terminated = sip("SIP/2.0 487 Request Terminated", [*call._dialog(True), ("CSeq", "1 INVITE")])
    call.sip_from_callee(T0 + 2010 * MS, terminated)
    (entry,) = [e for e in _events(call.sorted_frames()) if isinstance(e, CallNotRecorded)]
    assert (entry.outcome, entry.caller, entry.callee) == ("not_answered", "+4930111", "+4930222")
    assert "cancelled" in entry.reason or "487" in entry.reason


def test_call_without_bye_ends_after_the_inactivity_timeout() -> None:
    call = base_call()
    call.frames = [f for f in call.frames if b"BYE" not in f.data]
    later = CallBuilder(call_id="later@test", caller_ip="10.0.7.1", callee_ip="10.0.7.2")
    later.invite(T0 + 100_000 * MS)  # capture time moves on: 100 s later
    limits = CoreLimits(idle_timeout_s=30.0)
    events = _events(sorted(call.frames + later.frames, key=lambda f: f.ts_ns), limits)
    (ended,) = [e for e in events if isinstance(e, RecordingEnded)]
    assert ended.reason == "timeout"


def test_forked_invite_records_the_answering_fork() -> None:
    """A proxy forks the INVITE: two 183s with their own to-tags and SDP (early media from
    both), then one fork answers. One call, one recording; the callee channel holds the
    early media of both forks at their times and then the answering fork's audio."""
    call = CallBuilder()
    call.invite(T0)
    for n, (tag, port) in enumerate((("fork-a", 51000), ("fork-b", 52000))):
        body = sdp(call.callee_ip, port, call.pts)
        headers = [
            *call._dialog(False)[:2],
            ("To", f"<sip:+4930222@example.com>;tag={tag}"),
            ("Call-ID", call.call_id),
            ("CSeq", "1 INVITE"),
        ]
        call.sip_from_callee(
            T0 + (100 + n) * MS, sip("SIP/2.0 183 Session Progress", headers, body)
        )
    for i in range(50):
        port = 51000 if i < 20 else 52000  # fork A rings first, then fork B answers
        call.add(
            CALLEE_START + i * 20 * MS,
            bytes(
                Ether(**MAC)
                / IP(src=call.callee_ip, dst=call.caller_ip)
                / UDP(sport=port, dport=call.caller_rtp)
                / Raw(rtp(0, 7 + i, 5000 + 160 * i, 0xBBBB, payload(i, 1)))
            ),
        )
    ok = [
        *call._dialog(False)[:2],
        ("To", "<sip:+4930222@example.com>;tag=fork-b"),
        ("Call-ID", call.call_id),
        ("CSeq", "1 INVITE"),
    ]
    call.sip_from_callee(
        CALLEE_START + 400 * MS, sip("SIP/2.0 200 OK", ok, sdp(call.callee_ip, 52000, call.pts))
    )
    call.bye(T0 + 3000 * MS)
    events = _events(call.sorted_frames())
    assert sum(isinstance(e, RecordingEnded) for e in events) == 1
    result = run(call.sorted_frames())
    np.testing.assert_array_equal(result.pcm[:, 1], expected({}, full(1), 8800)[800:, 1])
