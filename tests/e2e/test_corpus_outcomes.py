"""Every capture in ../shared/pcaps through the whole recorder: no exception escapes,
and each one's outcome is what a user should see: the calls recorded (with their length),
the raw-RTP recordings kept for codecs we cannot decode, and an explained index entry for
everything else (unanswered, signalling only, SIP over TLS, unsignalled RTP).

The table is a regression record read off the recorder and checked by hand against
MANIFEST.md (tshark's view of the same files); see the module's notes below it."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from recorder.container.masterkey import MasterKey
from recorder.runtime.index import Index
from recorder.runtime.replay import replay
from tests.conftest import require_shared

# capture: (PCM recordings' durations in s (0.1 s), raw-RTP recordings' codecs,
#           calls not recorded by outcome)
OUTCOMES: dict[str, tuple[list[float], list[str], dict[str, int]]] = {
    "dvi4_2calls_oneway.pcap": ([], ["DVI4", "DVI4"], {"undecodable": 2}),
    "erf_in_pcapng_g729_spirent.pcapng": ([], ["G729"], {"undecodable": 1}),
    "erspan_gre_sip_hold_refer_no_rtp.pcapng": ([], [], {"no_audio": 3}),
    "failed_calls_register_cancel.pcap": ([0.2], [], {"unsignalled_rtp": 3, "not_answered": 5}),
    "fax_t38_reinvite_codec_change_cn.pcap": ([77.0], [], {"no_audio": 1}),
    "fax_t38_trimmed_heavy_loss.pcap": ([37.5], [], {"no_audio": 1}),
    "g722_h264_video_ipv4frag_sdp.pcapng": ([7.8], [], {}),
    "g722_oneway.pcap": ([8.5], [], {}),
    "g722_siptls13_sll_rtcp_88s.pcap": ([], [], {"unsignalled_rtp": 1}),
    "g726_8variants_oneway.pcap": (
        [],
        [
            "AAL2-G726-16",
            "AAL2-G726-24",
            "AAL2-G726-32",
            "AAL2-G726-40",
            "G726-16",
            "G726-24",
            "G726-32",
            "G726-40",
        ],
        {"undecodable": 8},
    ),
    "g729a_oneway.pcap": ([], ["G729"], {"undecodable": 1}),
    "gsm_oneway.pcap": ([], ["GSM"], {"undecodable": 1}),
    "ilbc_oneway.pcap": ([], ["ILBC"], {"undecodable": 1}),
    "ipip_siptcp_183_no_rtp.pcap": ([], [], {"no_audio": 1}),
    "ipv6_sip_bogus_timestamps_no_rtp.pcap": ([], [], {"not_answered": 1}),
    "isac_422retry.pcapng": ([], ["ISAC"], {"undecodable": 1}),
    "l16_4variants_oneway.pcap": ([], ["L16", "L16", "L16", "L16"], {"undecodable": 4}),
    "long_call_22min_session_refresh_no_rtp.pcapng": ([], [], {"no_audio": 1}),
    "long_srtp_rtp_only_237s_synthetic.pcap": ([], [], {"unsignalled_rtp": 1}),
    "lpc_oneway.pcap": ([], ["LPC"], {"undecodable": 1}),
    "opus_hybrid_5pkts.pcap": ([], ["OPUS"], {"undecodable": 1}),
    "opus_oneway.pcap": ([], ["OPUS"], {"undecodable": 1}),
    "opus_siptcp_rfc2833.pcapng": ([], ["OPUS"], {"undecodable": 1}),
    "pcma_ptime30ms_422retry.pcapng": ([8.2], [], {}),
    "pcma_relay_rtcp_bgtraffic.pcap": ([26.4], [], {"unsignalled_rtp": 2, "not_answered": 1}),
    "pcma_rfc2833_dtmf_late_offer.pcap": ([20.0], [], {"not_answered": 1}),
    "pcma_short_call_401.pcapng": ([1.6], [], {}),
    "pcma_siptcp_cn_rtcp.pcap": ([2.1], [], {}),
    "pcmu_2leg_pbx_nat_rtcp.pcap": ([26.9, 26.9], [], {}),
    "pcmu_early_media_183_magicjack.pcap": ([12.8], [], {}),
    "pcmu_early_media_prack_183_siptcp.pcapng": ([11.1], ["G729"], {}),
    "pcmu_hold_resume_4reinvites.pcapng": ([19.6], [], {}),
    "pcmu_inband_dtmf.pcapng": ([4.9], [], {}),
    "pcmu_moh_multicast_hold_200s.pcapng": ([186.8], [], {"unsignalled_rtp": 1}),
    "pcmu_pcma_oneway_2calls.pcap": ([8.3, 8.5], [], {}),
    "pcmu_ptime10ms_422retry.pcapng": ([6.6], [], {}),
    "pcmu_rfc2833_b2bua_ssrc_changes_rtcp.pcapng": ([11.4, 11.5], [], {}),
    "pcmu_rfc2833_nte_only.pcapng": ([], [], {"no_audio": 1}),
    "pcmu_siprec_3dialogs_ipv4frag.pcapng": ([31.7, 31.7, 31.7], [], {}),
    "pppoe_sip_info_dtmf_reinvite_no_rtp.pcap": ([], [], {"no_audio": 1}),
    "sctp_sip_sll_no_rtp.pcap": ([], [], {}),
    "sip_info_dtmf_no_rtp.pcapng": ([], [], {"no_audio": 1}),
    "sip_tcp6060_37dialogs_segmented_no_rtp.pcap": ([], [], {"no_audio": 32, "not_answered": 5}),
    "siptls_rtp_pcmu_2leg_pbx.pcap": ([], [], {"unsignalled_rtp": 4}),
    "siptls_srtp_pcmu_2leg_pbx.pcap": ([], [], {"unsignalled_rtp": 4}),
    "sll_ipv6_fragmented_sip_no_rtp.pcap": ([], [], {"no_audio": 1}),
    "speex_3calls_oneway.pcap": ([], ["SPEEX", "SPEEX", "SPEEX"], {"undecodable": 3}),
    "srtp_sdes_pcmu_2leg_pbx.pcap": ([], ["SRTP", "SRTP"], {"undecodable": 2}),
    "vlan_gre_ppp_sip_1pkt.pcapng": ([], [], {}),
    "vlan_rtp_mixed_no_sip.pcapng": ([], [], {"unsignalled_rtp": 4}),
    "volte_gtp_sll_ipv6_siptcp_amr.pcap": ([], ["AMR"], {"undecodable": 1}),
    "websocket_sip_webrtc_no_rtp.pcap": ([], [], {"no_audio": 2}),
    "zrtp_pcmu_asterisk_xlite.pcap": ([16.0], [], {}),
}
# Notes (see MANIFEST.md):
# - g722_h264_video_ipv4frag_sdp: both sides behind NAT (SDP 10.10.217.x, RTP 172.x), latched
#   by their SDP ports; the H.264 video is known non-audio media, counted, not recorded.
# - siptls_*, g722_siptls13_*: SIP over TLS, so the RTP has no call: unsignalled_rtp entries.
# - srtp_sdes_* and the non-G.711/G.722 codecs: raw RTP kept encrypted, plus an entry.
# - failed_calls_register_cancel: 0.2 s of early media sent after a 183, then 480.
# - sctp_sip_sll_no_rtp: SIP over SCTP is not followed; its packets are counted drops.


@pytest.mark.shared
@pytest.mark.parametrize("name", sorted(OUTCOMES))
def test_capture_outcome(name: str, tmp_path: Path) -> None:
    capture = require_shared() / name
    summary = replay(
        [capture], tmp_path / "a", MasterKey.from_secret(bytes(32)), "test", guard=False
    )
    assert summary.internal_errors == 0
    with Index(tmp_path / "a" / "index.sqlite") as index:
        recordings, calls = index.list_recordings(), index.list_calls()
    pcm = sorted(round((r.end_ns - r.start_ns) / 1e9, 1) for r in recordings if r.content != "rtp")  # type: ignore[operator]
    raw = sorted(",".join(r.codecs) for r in recordings if r.content == "rtp")
    not_recorded = dict(collections.Counter(c.outcome for c in calls))
    assert (pcm, raw, not_recorded) == OUTCOMES[name]
    assert all(c.reason for c in calls)  # every entry says why


def test_table_covers_the_corpus() -> None:
    folder = require_shared()
    assert {p.name for p in folder.glob("*.pcap*")} == set(OUTCOMES)
