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
from recorder.core.sip.message import SipMessage, header_param, uri_user
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
        self._table.add_sip_addr(call, sender, src_ip)
        body = sdp_body(msg)
        if body:
            self._learn_media(call, sender, body)

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
        audio = [m for m in sdp.media if m.kind == "audio" and m.port]
        for media in sdp.media:
            wanted = media.port and media.kind != "audio" and media.connection is not None
            if wanted and media.connection is not None and len(call.other_endpoints) < 16:
                self._table.add_other_media(call, media.connection, media.port)
        for index, media in enumerate(audio):
            self._learn_payload_types(call, sender, media)
            address = media.connection
            if address is None or address in _ZERO_ADDRESSES:
                continue  # on hold (RFC 3264 §8.4): no address to receive at
            side = _side_of(media, index, len(audio), sender)
            self._table.add_endpoint(call, side, address, media.port)
            if not media.rtcp_mux:
                rtcp_port = media.rtcp_port or media.port + 1
                if rtcp_port < 65536:
                    self._table.add_endpoint(call, side, address, rtcp_port)

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


def _side_of(media: SdpMedia, index: int, count: int, sender: int) -> int:
    """The side an endpoint is filed under (the side that receives there; RTP sent from it
    counts for that side). Normally the side whose SDP it is. With exactly two one-way
    audio m-lines, as a SIPREC recording session has (RFC 7866 §8: one stream per
    recorded participant), each m-line is a channel of its own: m-line 0 left, 1 right."""
    if count != 2 or media.direction not in ("sendonly", "recvonly"):
        return sender
    # A sendonly address is a source (its RTP counts for the side filed under), a recvonly
    # one a destination (its RTP counts for the other side): choose so that it lands on
    # channel `index` either way.
    return index if media.direction == "sendonly" else 1 - index


def sdp_body(msg: SipMessage) -> bytes:
    """The SDP a message carries: its body, or the application/sdp part of a multipart
    body (SIPREC and SIP-I carry SDP beside XML or ISUP, RFC 5621)."""
    kind = (msg.content_type or ("application/sdp" if msg.body else "")).lower()
    if "sdp" in kind:
        return msg.body
    if not kind.startswith("multipart/"):
        return b""
    boundary = header_param(msg.header("content-type") or "", "boundary")
    if not boundary:
        return b""
    delimiter = b"--" + boundary.strip('"').encode("utf-8", "replace")
    for part in msg.body.split(delimiter)[1:]:
        head, sep, content = part.partition(b"\r\n\r\n")
        if not sep:
            head, sep, content = part.partition(b"\n\n")
        if b"application/sdp" in head.lower():
            return content.rstrip(b"\r\n")
    return b""
