"""The recorder core: frames and capture time in, events out (aioquic's sans-I/O shape).

    core = RecorderCore()
    core.receive_frame(frame)          # for every captured frame, in capture order
    core.receive_block(block)          # or many frames at once (capture files)
    core.handle_timer(now_ns)          # when idle (live capture), at least every second
    core.close(now_ns)                 # at the end: every open call is closed
    for event in core.events(): ...    # drain after each call

Known RTP flows take a fast path: for plain Ethernet/IPv4/UDP frames the endpoint keys
are sliced straight out of fixed offsets and looked up before any general parsing; for a
block of frames, that is done for the whole block with numpy (`blocks.py`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from recorder.core.blocks import WINDOW_MAX, receive_block
from recorder.core.call_table import CallTable, endpoint_key
from recorder.core.calls import Call
from recorder.core.events import Event, RecordingMarker
from recorder.core.limits import CoreLimits
from recorder.core.media.timeline import NS_PER_S
from recorder.core.media_path import MAX_PENDING, MediaPath
from recorder.core.model import (
    LINKTYPE_ETHERNET,
    PROTO_TCP,
    PROTO_UDP,
    Datagram,
    Frame,
    FrameBlock,
)
from recorder.core.net.decoder import NetDecoder
from recorder.core.orphans import OrphanStreams
from recorder.core.policy import DtmfListener, RecordEverything, RecordingPolicy
from recorder.core.signalling import Signalling
from recorder.core.sip.message import looks_like_sip, parse_sip
from recorder.core.sip.tcp import TcpSipStreams
from recorder.core.stats import CoreStats
from recorder.errors import DecodeError

_IPV4_ETHERTYPE = b"\x08\x00"
_SIP_TCP_PORTS = frozenset({5060, 5080})


class RecorderCore:
    def __init__(
        self,
        limits: CoreLimits | None = None,
        policy: RecordingPolicy | None = None,
        dtmf_listener: DtmfListener | None = None,
    ) -> None:
        self.limits = limits or CoreLimits()
        self.stats = CoreStats()
        self._events: deque[Event] = deque()
        self._net = NetDecoder()
        self._tcp = TcpSipStreams()
        self.media = MediaPath(self.limits, self.stats, self._events.append)
        self.calls = CallTable(self.limits, self.stats, self.media, self._events.append)
        self.orphans = OrphanStreams()
        self._signalling = Signalling(
            self.limits, self.stats, self.calls, policy or RecordEverything()
        )
        self.media.dtmf_listener = dtmf_listener
        self._sweep_ns = int(self.limits.sweep_interval_s * NS_PER_S)
        self._next_sweep_ns = 0  # the first frame runs the timers once
        self.now_ns = 0  # newest capture time seen: timers never run backwards
        self.block_position = 0  # the frame of a block being fed one by one
        self.block_window = WINDOW_MAX  # frames of a block looked up at once (blocks.py)
        self.tunnel_ports = self._net.tunnel_ports

    def receive_block(self, block: FrameBlock, start: int = 0) -> None:
        """Frames `start:` of `block`, with exactly the effect of `receive_frame` on each in
        turn. If it raises, `block_position` is the frame that did (or the frames from
        `block_position + 1` on were not handled yet)."""
        receive_block(self, block, start)

    # -- input -------------------------------------------------------------------------

    def receive_frame(self, frame: Frame) -> None:
        now, linktype, data = frame
        self.stats.frames += 1
        if now > self.now_ns:
            self.now_ns = now
            if now >= self._next_sweep_ns:
                self.handle_timer(now)
        # The fast path, inline because it runs for nearly every packet: Ethernet, IPv4
        # without options, unfragmented UDP, to or from a known media endpoint.
        if (
            linktype == LINKTYPE_ETHERNET
            and len(data) >= 42  # first: every index below must exist
            and data[12:14] == _IPV4_ETHERTYPE
            and data[14] == 0x45
            and data[23] == PROTO_UDP
            and not (data[20] & 0x3F or data[21])
        ):
            endpoints = self.calls.endpoints
            hit = endpoints.get(data[30:34] + data[36:38])  # destination: the receiving side
            if hit is not None:
                sender = 1 - hit[1]
            else:
                hit = endpoints.get(data[26:30] + data[34:36])  # source: the sender (NAT)
                sender = hit[1] if hit is not None else 0
            end = 34 + (data[38] << 8 | data[39])
            if hit is not None and 42 <= end <= len(data):
                call = hit[0]
                times = call.pending_times[sender]
                times.append(now)
                call.pending_datas[sender].append(data[42:end])
                if len(times) >= MAX_PENDING:  # a flood between sweeps: place it now
                    self.media.flush(call, now)
                return
        try:
            datagram = self._net.decode(linktype, data, now)
        except DecodeError as exc:
            self.stats.drop(exc.layer, exc.reason)
            return
        if datagram is not None:
            self._datagram(datagram, now)

    def _datagram(self, dg: Datagram, now: int) -> None:
        if dg.proto == PROTO_UDP:
            endpoints = self.calls.endpoints
            hit = endpoints.get(endpoint_key(dg.dst_ip, dg.dport))
            if hit is not None:
                self.media.enqueue(hit[0], 1 - hit[1], now, dg.payload)
                return
            hit = endpoints.get(endpoint_key(dg.src_ip, dg.sport))
            if hit is not None:
                self.media.enqueue(hit[0], hit[1], now, dg.payload)
                return
            if looks_like_sip(dg.payload):
                self._sip(dg.payload, now, dg.src_ip, dg.dst_ip)
                return
            latched = self.calls.latch(dg, self.orphans.first_seen)
            if latched is not None:
                self.media.enqueue(latched[0], latched[1], now, dg.payload)
            elif self.calls.other_media(dg):
                self.stats.drop("rtp", "not_audio")  # video or fax of a call we follow
            elif (flow := self.orphans.note(dg, now)) is not None:
                self.stats.drop("rtp", "unsignalled")  # reported when the stream ends
                if flow.packets == 1:
                    flow.after_call = self.calls.ended_endpoint(dg)
                gen = self.calls.port_gen
                flow.judged = (gen.get(dg.sport, 0), gen.get(dg.dport, 0))
            else:
                self.stats.drop("udp", "unmatched")
        elif dg.proto == PROTO_TCP:
            if 5061 in (dg.sport, dg.dport) and dg.payload:
                self.orphans.tls_seen = True  # SIP over TLS: what it carries is not ours
            key = (dg.src_ip, dg.sport, dg.dst_ip, dg.dport)
            # Only SIP streams are reassembled: a known stream, the SIP ports, or a first
            # payload that starts like SIP (TLS, HTTP and the rest cost one check).
            if (
                key in self._tcp
                or dg.sport in _SIP_TCP_PORTS
                or dg.dport in _SIP_TCP_PORTS
                or looks_like_sip(dg.payload)
            ):
                for message in self._tcp.feed(key, dg.tcp_seq, dg.tcp_flags, dg.payload, now):
                    self._sip(message, now, dg.src_ip, dg.dst_ip)
            else:
                self.stats.drop("tcp", "not_sip")

    def _sip(self, data: bytes, now: int, src_ip: bytes, dst_ip: bytes) -> None:
        try:
            msg = parse_sip(data)
        except DecodeError as exc:
            self.stats.drop(exc.layer, exc.reason)
            return
        if msg.body_short:
            self.stats.anomalies["sip_body_shorter_than_content_length"] += 1
        self._signalling.receive(msg, now, src_ip, dst_ip)

    # -- time --------------------------------------------------------------------------

    def get_timer(self) -> int:
        """Capture time at which `handle_timer` should next run."""
        return self._next_sweep_ns

    def handle_timer(self, now_ns: int) -> None:
        if now_ns > self.now_ns:
            self.now_ns = now_ns
        now = self.now_ns
        self._next_sweep_ns = now + self._sweep_ns
        self._net.expire(now)
        for (src_ip, _sport, dst_ip, _dport), message in self._tcp.expire(now):
            self._sip(message, now, src_ip, dst_ip)  # released from behind a hole
        self.calls.sweep(now)
        self._events.extend(self.orphans.expire(now))

    def close(self, now_ns: int | None = None, reason: str = "end_of_capture") -> None:
        """End every call still open (end of the captures, or shutdown)."""
        now = max(self.now_ns, now_ns or 0)
        self.calls.place_queued()  # in one batch, before each call's end places its own
        for call in self.calls:  # a call already ending (BYE seen) ends for that reason
            self.calls.end(call, now, call.end_reason or reason)
        self._events.extend(self.orphans.expire(now, everything=True))

    # -- control (PCI DSS pause/resume, opt-out) -----------------------------------------

    def find_calls(self, *, call_id: str | None = None, number: str | None = None) -> list[int]:
        """Serials of open calls by Call-ID or by caller/callee number."""
        return [
            c.serial
            for c in self.calls
            if (call_id is not None and c.call_id == call_id)
            or (number is not None and number in (c.caller, c.callee))
        ]

    def pause(self, serial: int, now_ns: int, reason: str) -> bool:
        """Stop placing audio: from `now_ns` the recording holds silence until `resume`."""
        call = self.calls.by_serial(serial)
        if call is None or call.paused_since_ns is not None:
            return False
        self.media.process(call)  # what arrived before the pause is placed as it was
        call.paused_since_ns = now_ns
        self._mark(call, RecordingMarker(serial, "paused", now_ns, reason, call.call_id))
        return True

    def resume(self, serial: int, now_ns: int, reason: str) -> bool:
        call = self.calls.by_serial(serial)
        if call is None or call.paused_since_ns is None:
            return False
        self.media.process(call)  # what arrived during the pause is dropped now
        call.pause_windows.append((call.paused_since_ns, now_ns))
        call.paused_since_ns = None
        self._mark(call, RecordingMarker(serial, "resumed", now_ns, reason, call.call_id))
        return True

    def stop_recording(self, serial: int, now_ns: int, reason: str) -> bool:
        """Stop the call's recording at capture time `now_ns` (an opt-out): what came
        before is kept, nothing after it is placed, and the recording is closed at the
        next sweep. Safe to call from a DTMF listener while the call's media is placed."""
        call = self.calls.by_serial(serial)
        if call is None or call.stop_requested:
            return False
        if call.paused_since_ns is None:
            self.media.process(call)  # (a no-op when called from within placement)
            call.paused_since_ns = now_ns  # from here on, nothing is placed
        call.stop_requested = True
        self._mark(call, RecordingMarker(serial, "stopped", now_ns, reason, call.call_id))
        return True

    def _mark(self, call: Call, marker: RecordingMarker) -> None:
        """Emit a marker after any RecordingStarted that the placement under way emits."""
        if call.placing:
            call.deferred.append(marker)
        else:
            self._events.append(marker)

    # -- output ------------------------------------------------------------------------

    @property
    def pending_events(self) -> deque[Event]:
        """The queue of events not yet taken; shells pop from its left."""
        return self._events

    def events(self) -> Iterator[Event]:
        queue = self._events
        while queue:
            yield queue.popleft()
