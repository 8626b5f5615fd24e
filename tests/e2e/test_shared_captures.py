"""Real captures from ../shared/pcaps, recorded and exported, checked sample for sample
against an independent decode: tshark dissects SIP/SDP and RTP, the reference G.711 is
`audioop` (the C implementation Python shipped until 3.12) and G.722 a fresh libg722
decoder; the timeline rule is applied to tshark's fields in this file."""

from __future__ import annotations

import subprocess
import warnings
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from recorder.container.masterkey import MasterKey
from recorder.runtime.archive import Archive
from recorder.runtime.export import export_wav
from recorder.runtime.index import Index
from recorder.runtime.replay import replay
from tests.conftest import require_shared, require_tool
from tests.e2e.test_cli_roundtrip import read_wav

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

CLOCK = {0: ("PCMU", 8000), 8: ("PCMA", 8000), 9: ("G722", 16000)}

# capture -> number of recordings expected in it
CAPTURES = {
    "g722_h264_video_ipv4frag_sdp.pcapng": 1,  # late offer, both sides behind NAT, video
    "pcmu_2leg_pbx_nat_rtcp.pcap": 2,  # NAT'd PBX legs, RTCP
    "pcmu_siprec_3dialogs_ipv4frag.pcapng": 3,  # fragmented INVITEs, SIPREC session
    "pcmu_rfc2833_b2bua_ssrc_changes_rtcp.pcapng": 2,  # SSRC changes, DTMF events
    "pcmu_early_media_183_magicjack.pcap": 1,  # early media after 183
    "pcma_siptcp_cn_rtcp.pcap": 1,  # SIP over TCP, comfort noise
    "pcma_short_call_401.pcapng": 1,
    "pcmu_pcma_oneway_2calls.pcap": 2,
    "g722_oneway.pcap": 1,
    "pcmu_ptime10ms_422retry.pcapng": 1,
    "pcma_ptime30ms_422retry.pcapng": 1,
    "pcmu_hold_resume_4reinvites.pcapng": 1,
}


def tshark_fields(path: Path, display_filter: str, fields: list[str]) -> list[list[str]]:
    tshark = require_tool("tshark")
    cmd = [
        tshark,
        "-r",
        str(path),
        "-o",
        "rtp.heuristic_rtp:TRUE",
        "-Y",
        display_filter,
        "-T",
        "fields",
        "-E",
        "separator=|",
    ]
    for name in fields:
        cmd += ["-e", name]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [line.split("|") for line in out.splitlines()]


def epoch_ns(text: str) -> int:
    return int(Decimal(text) * 1_000_000_000)


Offer = tuple[str, tuple[int, ...], tuple[str, int] | None]  # caller address, ports, callee


def caller_media(path: Path) -> dict[str, tuple[Offer, int, int]]:
    """Call-ID -> (the caller's SDP address and audio ports (the first request with SDP:
    the INVITE, or the ACK of a late offer), the callee's first SDP endpoint) and the
    call's window: from its first SIP message to one second after its BYE (or the next
    call offering the same endpoint, or the end of the capture)."""
    first: dict[str, int] = {}
    offer: dict[str, tuple[str, tuple[int, ...]]] = {}
    answer: dict[str, tuple[str, int]] = {}
    bye: dict[str, int] = {}
    fields = [
        "frame.time_epoch",
        "sip.Call-ID",
        "sip.Method",
        "sdp.connection_info.address",
        "sdp.media.port",
    ]
    for t, call_id, method, address, ports in tshark_fields(path, "sip", fields):
        first.setdefault(call_id, epoch_ns(t))
        if address and method and call_id not in offer:
            offer[call_id] = (address.split(",")[0], tuple(int(p) for p in ports.split(",")))
        elif address and not method and call_id in offer and call_id not in answer:
            answer[call_id] = (address.split(",")[0], int(ports.split(",")[0]))
        if method == "BYE":
            bye.setdefault(call_id, epoch_ns(t) + 1_000_000_000)
    found = {}
    for call_id, (address, ports) in offer.items():
        start = first[call_id]
        later = [  # a later call offering the same endpoint takes it over
            first[c] for c, other in offer.items() if first[c] > start and other == (address, ports)
        ]
        end = min([bye.get(call_id, 2**63), *later])
        found[call_id] = ((address, ports, answer.get(call_id)), start, end)
    return found


def reference_audio(path: Path, offer: Offer, start_ns: int, end_ns: int) -> tuple[int, np.ndarray]:
    """The recording the timeline rules give for the call whose caller offered `offer`.
    Two one-way m-lines (a SIPREC session) are the two channels, in m-line order."""
    caller, callee = (offer[0], offer[1][0]), offer[2]
    rows = tshark_fields(
        path,
        "rtp.version == 2 && !rtcp",
        [
            "frame.time_epoch",
            "ip.src",
            "udp.srcport",
            "ip.dst",
            "udp.dstport",
            "rtp.ssrc",
            "rtp.seq",
            "rtp.timestamp",
            "rtp.p_type",
            "rtp.payload",
        ],
    )
    sdp_hosts = {
        address
        for (addresses,) in tshark_fields(path, "sdp", ["sdp.connection_info.address"])
        for address in addresses.split(",")
    }
    packets = []
    for t, src, sport, dst, dport, ssrc, seq, ts, pt, payload in rows:
        # By the SDP addresses; by port where NAT moved an end off its SDP address (then
        # the other end must be the call's other SDP endpoint, or moved by NAT too).
        src_ep, dst_ep = (src, int(sport)), (dst, int(dport))
        if len(offer[1]) == 2 and src == offer[0] and int(sport) in offer[1]:
            side = offer[1].index(int(sport))  # SIPREC: one m-line per channel
        elif src_ep == caller or (
            int(sport) == caller[1]
            and src not in sdp_hosts
            and (dst_ep == callee or dst not in sdp_hosts)
        ):
            side = 0
        elif dst_ep == caller or (
            int(dport) == caller[1]
            and dst not in sdp_hosts
            and (src_ep == callee or src not in sdp_hosts)
        ):
            side = 1
        else:
            continue
        ns = epoch_ns(t)
        if not start_ns <= ns < end_ns:
            continue
        packets.append(
            (
                ns,
                side,
                int(ssrc, 16),
                int(seq),
                int(ts),
                int(pt),
                bytes.fromhex(payload.replace(":", "")),
            )
        )
    origin = packets[0][0]
    rate = 16000 if any(p[5] == 9 for p in packets) else 8000
    channels: list[dict[int, np.ndarray]] = [{}, {}]
    anchors: dict[int, tuple[int, int, int]] = {}
    seen = set()
    g722 = defaultdict(lambda: __import__("G722").G722(16000, 64000))
    for ns, side, ssrc, seq, ts, pt, payload in packets:
        if side not in anchors or anchors[side][2] != ssrc:
            anchor = ((ns - origin) * rate + 500_000_000) // 1_000_000_000
            anchors[side] = (anchor, ts, ssrc)
        if (side, seq, ts) in seen or pt not in CLOCK:
            continue
        seen.add((side, seq, ts))
        anchor, first_ts, _ = anchors[side]
        pos = anchor + (ts - first_ts) * rate // 8000
        codec = CLOCK[pt][0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            if codec == "PCMU":
                pcm = np.frombuffer(audioop.ulaw2lin(payload, 2), "<i2")
            elif codec == "PCMA":
                pcm = np.frombuffer(audioop.alaw2lin(payload, 2), "<i2")
            else:
                pcm = np.frombuffer(g722[side].decode(payload), "<i2")
        channels[side][pos] = pcm
    length = max(pos + len(pcm) for ch in channels for pos, pcm in ch.items())
    out = np.zeros((length, 2), dtype="<i2")
    for side, ch in enumerate(channels):
        for pos, pcm in ch.items():
            out[pos : pos + len(pcm), side] = pcm
    return rate, out


@pytest.mark.shared
@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_recording_matches_independent_decode(name: str, tmp_path: Path) -> None:
    capture = require_shared() / name
    master = MasterKey.from_secret(bytes(range(32)))
    summary = replay([capture], tmp_path / "archive", master, "test", guard=False)
    assert summary.internal_errors == 0
    assert summary.recorded == CAPTURES[name]
    index = Index(tmp_path / "archive" / "index.sqlite")
    rows = index.list_recordings()
    index.close()
    callers = caller_media(capture)
    for row in rows:
        wav = tmp_path / f"{row.id}.wav"
        export_wav(Archive(tmp_path / "archive"), {master.kid: master}, row.id, wav, "test")
        rate, got = read_wav(wav)
        want_rate, want = reference_audio(capture, *callers[row.call_id])
        assert rate == want_rate == row.sample_rate
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)
