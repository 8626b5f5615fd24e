"""Real captures from ../shared/pcaps through looks_like_sip, TcpSipStreams, parse_sip and
parse_sdp, checked against the message counts tshark reports in the corpus MANIFEST.md.

Only plain Ethernet/IP files without IP fragments of SIP are used, so dpkt (test-side) is
enough to reach UDP/TCP; the project's own link/IP decoding is tested elsewhere.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import dpkt
import pytest

from recorder.core.sdp.parse import parse_sdp
from recorder.core.sip.message import SipMessage, looks_like_sip, parse_sip
from recorder.core.sip.tcp import TcpSipStreams

pytestmark = pytest.mark.shared

# file: (requests, responses), as tshark counted them (MANIFEST.md "SIP:" lines).
EXPECTED: dict[str, tuple[dict[str, int], dict[int, int]]] = {
    "sip_tcp6060_37dialogs_segmented_no_rtp.pcap": (
        {"INVITE": 37, "ACK": 37, "UPDATE": 63, "OPTIONS": 5, "BYE": 34, "PRACK": 5, "CANCEL": 2},
        {100: 36, 180: 33, 486: 1, 200: 142, 182: 2, 183: 6, 487: 2, 403: 1},
    ),
    "pcma_siptcp_cn_rtcp.pcap": (
        {"INVITE": 1, "ACK": 1, "BYE": 1},
        {100: 1, 180: 1, 200: 2},
    ),
    "pcmu_early_media_prack_183_siptcp.pcapng": (
        {"INVITE": 1, "PRACK": 1, "ACK": 1},
        {100: 1, 183: 1, 200: 2},
    ),
    "opus_siptcp_rfc2833.pcapng": (
        {"INVITE": 1, "ACK": 1, "UPDATE": 1, "BYE": 1},
        {100: 1, 180: 1, 200: 3},
    ),
    "pcmu_2leg_pbx_nat_rtcp.pcap": (
        {"REGISTER": 8, "OPTIONS": 2, "NOTIFY": 4, "INVITE": 3, "ACK": 3, "UPDATE": 1, "BYE": 2},
        {401: 5, 200: 15, 100: 2, 180: 3},
    ),
    "zrtp_pcmu_asterisk_xlite.pcap": (
        {"REGISTER": 2, "OPTIONS": 1, "SUBSCRIBE": 4, "INVITE": 3, "ACK": 3, "BYE": 1},
        {401: 4, 200: 5, 404: 2, 100: 1, 180: 1},
    ),
    "failed_calls_register_cancel.pcap": (
        {"REGISTER": 18, "INVITE": 11, "CANCEL": 11, "ACK": 7},
        {401: 14, 100: 7, 403: 3, 200: 3, 408: 2, 407: 3, 183: 1, 480: 1},
    ),
    "fax_t38_reinvite_codec_change_cn.pcap": (
        {"INVITE": 16, "ACK": 16, "OPTIONS": 8, "BYE": 4},
        {100: 16, 180: 4, 200: 24, 488: 4},
    ),
    "pcmu_hold_resume_4reinvites.pcapng": (
        {"INVITE": 5, "ACK": 5, "BYE": 1},
        {100: 5, 180: 1, 200: 6},
    ),
    "sip_info_dtmf_no_rtp.pcapng": (
        {"INVITE": 1, "ACK": 1, "INFO": 12, "BYE": 1},
        {100: 1, 180: 1, 200: 14},
    ),
    "long_call_22min_session_refresh_no_rtp.pcapng": (
        {"INVITE": 3, "ACK": 3, "BYE": 1},
        {422: 1, 100: 2, 180: 1, 200: 3},
    ),
}


def sip_messages(path: Path, tcp: TcpSipStreams) -> list[bytes]:
    """Every SIP message of an Ethernet capture: UDP payloads that look like SIP, framed TCP."""
    out: list[bytes] = []
    with path.open("rb") as f:
        reader = dpkt.pcap.UniversalReader(f)
        assert reader.datalink() == dpkt.pcap.DLT_EN10MB
        for ts, frame in reader:
            now = int(ts * 1_000_000_000)
            ip = dpkt.ethernet.Ethernet(frame).data
            if not isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6):
                continue
            assert not (isinstance(ip, dpkt.ip.IP) and (ip.mf or ip.offset))
            seg = ip.data
            if isinstance(seg, dpkt.udp.UDP) and looks_like_sip(bytes(seg.data)):
                out.append(bytes(seg.data))
            elif isinstance(seg, dpkt.tcp.TCP):
                key = (bytes(ip.src), seg.sport, bytes(ip.dst), seg.dport)
                out += tcp.feed(key, seg.seq, seg.flags, bytes(seg.data), now)
    out += [msg for _, msg in tcp.expire(now + 10**12)]
    return out


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_capture_matches_tshark(name: str, shared_pcaps: Path) -> None:
    tcp = TcpSipStreams()
    parsed: list[SipMessage] = [parse_sip(raw) for raw in sip_messages(shared_pcaps / name, tcp)]
    requests = Counter(m.method for m in parsed if m.method is not None)
    responses = Counter(m.status for m in parsed if m.status is not None)
    assert (dict(requests), dict(responses)) == EXPECTED[name]
    assert tcp.counters["gaps"] == 0
    for msg in parsed:
        assert msg.call_id
        assert msg.cseq is not None
        if msg.body and msg.content_type == "application/sdp":
            sdp = parse_sdp(msg.body)
            assert sdp.media
            assert all(m.connection is not None for m in sdp.media)
