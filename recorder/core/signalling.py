"""SIP messages drive the call table: dialogs begin with INVITE, learn media from SDP
offers and answers, and end with BYE, CANCEL, failure or time-outs."""

from __future__ import annotations

from recorder.core.call_table import CallTable
from recorder.core.calls import ANSWERED, CALLING, CANCELLED, EARLY, FAILED, Call
from recorder.core.limits import CoreLimits
from recorder.core.media.codecs import SILENT_ENCODINGS
from recorder.core.media.timeline import NS_PER_S
from recorder.core.policy import CallFacts, RecordingPolicy
from recorder.core.sdp.parse import SdpMedia, codec_for, parse_sdp
from recorder.core.sip.message import SipMessage, uri_user
from recorder.core.stats import CoreStats
from recorder.errors import DecodeError

_ZERO_ADDRESSES = (bytes(4), bytes(16))


class Signalling:
    def __init__(
        self, limits: CoreLimits, stats: CoreStats, table: CallTable, policy: RecordingPolicy
    ) -> None:
        self._stats = stats
        self._table = table
        self._policy = policy
        self._bye_ns = int(limits.bye_linger_s * NS_PER_S)
        self._failed_ns = int(limits.failed_linger_s * NS_PER_S)

    def receive(self, msg: SipMessage, now_ns: int, src_ip: bytes, dst_ip: bytes) -> None:
        self._stats.sip_messages += 1
        call_id = msg.call_id
        if not call_id:
            self._stats.drop("sip", "no_call_id")
            return
        call = self._table.get(call_id)
        if call is None:
            if msg.method != "INVITE" or msg.to_tag:
                return  # not a call we follow (REGISTER, OPTIONS, a dialog begun before capture)
            facts = CallFacts(
                call_id=call_id,
                caller=uri_user(msg.header("from") or ""),
                callee=uri_user(msg.header("to") or ""),
                caller_uri=msg.header("from") or "",
                callee_uri=msg.header("to") or "",
                src_ip=src_ip,
                dst_ip=dst_ip,
                headers={name: value for name, value in reversed(msg.headers)},
            )
            call = self._table.new_call(
                call_id, facts.caller, facts.callee, msg.from_tag or "", now_ns
            )
            call.decision = self._policy.decide(facts)
        self._table.touch(call, now_ns)
        if msg.method is not None:
            sender = call.sender_of_request(msg.from_tag)
            self._request(call, msg, now_ns)
        else:
            sender = call.sender_of_response(msg.from_tag)
            self._response(call, msg, now_ns)
        if len(call.sip_addrs[sender]) < 4:
            call.sip_addrs[sender].add(src_ip)
        if msg.body and "sdp" in (msg.content_type or "application/sdp").lower():
            self._learn_media(call, sender, msg.body)

    def _request(self, call: Call, msg: SipMessage, now_ns: int) -> None:
        method = msg.method
        if method == "INVITE" and call.state in (FAILED, CANCELLED):
            call.state = CALLING  # retried after 401/407/422
            call.cancel_end()
        elif method == "BYE":
            call.schedule_end(now_ns + self._bye_ns, "bye")
        elif method == "CANCEL" and call.state != ANSWERED:
            call.state = CANCELLED
            call.schedule_end(now_ns + self._failed_ns, "cancelled")

    def _response(self, call: Call, msg: SipMessage, now_ns: int) -> None:
        cseq = msg.cseq
        status = msg.status or 0
        if cseq is None or cseq[1] != "INVITE":
            return
        if 100 < status < 200 and call.state == CALLING:
            call.state = EARLY
        elif 200 <= status < 300:
            call.final_status = status
            if call.state != ANSWERED:
                call.state = ANSWERED
                if call.end_reason == "cancelled":  # 200 OK crossed the CANCEL
                    call.cancel_end()
        elif status >= 300 and call.state != ANSWERED:
            call.final_status = status
            call.state = FAILED
            call.schedule_end(now_ns + self._failed_ns, "failed")

    def _learn_media(self, call: Call, sender: int, body: bytes) -> None:
        try:
            sdp = parse_sdp(body)
        except DecodeError as exc:
            self._stats.drop(exc.layer, exc.reason)
            return
        for media in sdp.media:
            if media.port == 0:
                continue
            if media.kind != "audio":
                if media.connection is not None and len(call.other_endpoints) < 16:
                    self._table.add_other_media(call, media.connection, media.port)
                continue
            self._learn_payload_types(call, sender, media)
            address = media.connection
            if address is None or address in _ZERO_ADDRESSES:
                continue  # on hold (RFC 3264 §8.4): no address to receive at
            self._table.add_endpoint(call, sender, address, media.port)
            if not media.rtcp_mux:
                rtcp_port = media.rtcp_port or media.port + 1
                if rtcp_port < 65536:
                    self._table.add_endpoint(call, sender, address, rtcp_port)

    @staticmethod
    def _learn_payload_types(call: Call, side: int, media: SdpMedia) -> None:
        if media.is_srtp:
            call.srtp_sides.add(side)  # SRTP (RTP/SAVP or SDES a=crypto): undecodable passively
        else:
            call.srtp_sides.discard(side)
        pt_map = call.pt_maps[side]
        for pt in media.payload_types:
            rtpmap = codec_for(media, pt)
            if rtpmap is None:
                continue
            encoding = rtpmap.encoding.upper()
            pt_map[pt] = (encoding, rtpmap.clock_rate)
            if not call.first_codec and encoding not in SILENT_ENCODINGS:
                call.first_codec = encoding
