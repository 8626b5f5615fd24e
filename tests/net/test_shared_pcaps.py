"""Every capture of the shared corpus read and decoded: only DecodeError may escape."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from recorder.core.model import PROTO_TCP, PROTO_UDP, Datagram
from recorder.core.net import NetDecoder
from recorder.errors import DecodeError
from recorder.runtime.sources import CaptureFile

from .shared_pcaps import require_shared_corpus, shared_captures

pytestmark = pytest.mark.shared
CAPTURES = shared_captures()


def run(path: Path) -> tuple[CaptureFile, NetDecoder, collections.Counter[str], list[Datagram]]:
    capture = CaptureFile(path)
    dec = NetDecoder()
    outcomes: collections.Counter[str] = collections.Counter()
    datagrams: list[Datagram] = []
    for frame in capture:
        try:
            got = dec.decode(frame.linktype, frame.data, frame.ts_ns)
        except DecodeError as exc:
            outcomes[f"{exc.layer}:{exc.reason}"] += 1
            continue
        outcomes["held" if got is None else "datagram"] += 1
        if got is not None:
            datagrams.append(got)
    return capture, dec, outcomes, datagrams


@pytest.mark.parametrize("path", CAPTURES or [None], ids=[p.name for p in CAPTURES] or ["absent"])
def test_capture_decodes_with_only_decode_errors(path: Path | None) -> None:
    require_shared_corpus()
    assert path is not None
    capture, _, outcomes, _ = run(path)
    assert capture.frames > 0
    assert not capture.truncated, capture.stop_reason
    assert sum(outcomes.values()) == capture.frames


# Facts checked against tshark's reading of the files (MANIFEST.md).
ENCAPSULATED_SIP = {
    "erspan_gre_sip_hold_refer_no_rtp.pcapng": PROTO_UDP,
    "erf_in_pcapng_g729_spirent.pcapng": PROTO_UDP,
    "pppoe_sip_info_dtmf_reinvite_no_rtp.pcap": PROTO_UDP,
    "vlan_gre_ppp_sip_1pkt.pcapng": PROTO_UDP,
    "volte_gtp_sll_ipv6_siptcp_amr.pcap": PROTO_TCP,
    "ipip_siptcp_183_no_rtp.pcap": PROTO_TCP,
}
FRAGMENTED = {
    "sll_ipv6_fragmented_sip_no_rtp.pcap": 2,
    "pcmu_siprec_3dialogs_ipv4frag.pcapng": 2,
    "g722_h264_video_ipv4frag_sdp.pcapng": 1,
}


def corpus_file(name: str) -> Path:
    require_shared_corpus()
    matches = [p for p in CAPTURES if p.name == name]
    if not matches:
        pytest.fail(f"{name} missing from the shared corpus")
    return matches[0]


@pytest.mark.parametrize(("name", "proto"), sorted(ENCAPSULATED_SIP.items()))
def test_encapsulated_sip_is_reached(name: str, proto: int) -> None:
    _, _, _, datagrams = run(corpus_file(name))
    sip = [d for d in datagrams if d.proto == proto and b"SIP/2.0" in d.payload[:300]]
    assert sip


@pytest.mark.parametrize(("name", "count"), sorted(FRAGMENTED.items()))
def test_fragmented_sip_is_reassembled(name: str, count: int) -> None:
    _, dec, _, datagrams = run(corpus_file(name))
    assert dec.counters["fragments_reassembled"] == count
    assert dec.pending_fragment_datagrams == 0
    big = [d for d in datagrams if len(d.payload) > 1500]
    assert len(big) == count
    assert all(b"Content-Length" in d.payload for d in big)


def test_missing_corpus_skips_or_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from . import shared_pcaps

    monkeypatch.setattr(shared_pcaps, "SHARED_PCAPS", tmp_path / "absent")
    monkeypatch.delenv("RECORDER_REQUIRE_SHARED", raising=False)
    with pytest.raises(pytest.skip.Exception, match="RECORDER_REQUIRE_SHARED=1"):
        shared_pcaps.require_shared_corpus()
    monkeypatch.setenv("RECORDER_REQUIRE_SHARED", "1")
    with pytest.raises(pytest.fail.Exception, match="not found"):
        shared_pcaps.require_shared_corpus()
