"""Every call being followed, and the media endpoints that lead RTP to them."""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator

from recorder.core.calls import ANSWERED, CANCELLED, FAILED, Call
from recorder.core.events import CallNotRecorded, Event, RecordingAudio, RecordingEnded
from recorder.core.limits import CoreLimits
from recorder.core.media.batch import place_calls
from recorder.core.media.timeline import NS_PER_S
from recorder.core.media_path import MediaPath
from recorder.core.model import Datagram
from recorder.core.stats import CoreStats

MAX_ENDPOINTS_PER_CALL = 64  # media addresses one call may hold (re-INVITEs add some)
MAX_SIP_ADDRS = 4  # addresses a side's SIP may come from, remembered for NAT latching
# Calls probed on one port before a NAT'd packet is given up as ambiguous: many phones share
# a port number, and an unmatched packet must not cost a walk over every call.
MAX_PORT_PROBES = 64
# How long the media endpoints of an ended call are remembered, and how many at most: a far
# end may go on sending after the BYE, and those packets must not be latched into another
# call that offered the same two ports (its conversation would be mixed into a recording).
ENDED_ENDPOINTS_NS = 30 * NS_PER_S
MAX_ENDED_ENDPOINTS = 65_536
# A stream already flowing this long before a call's INVITE is not that call's by its two
# ports alone (a call's media cannot start before its INVITE; the margin allows for
# capture points whose clocks or paths differ). It is most likely a call whose SIP was not
# seen (before a restart, say) on ports that a new call offers again.
PREDATING_NS = NS_PER_S


def endpoint_key(ip: bytes, port: int) -> bytes:
    """The lookup key of a media endpoint: packed address then big-endian port, which is
    also how the fast path slices it straight out of a frame."""
    return ip + port.to_bytes(2, "big")


class CallTable:
    def __init__(
        self,
        limits: CoreLimits,
        stats: CoreStats,
        media: MediaPath,
        emit: Callable[[Event], None],
    ) -> None:
        self._limits = limits
        self._stats = stats
        self._media = media
        self._emit = emit
        self.calls: OrderedDict[str, Call] = OrderedDict()  # oldest SIP activity first
        # Endpoint key -> (call, side that receives there).
        self.endpoints: dict[bytes, tuple[Call, int]] = {}
        # The same IPv4 endpoints as integers (address << 16 | port) -> serial * 2 + side,
        # for the block fast path's lookups; `version` changes whenever either changes.
        self.fast: dict[int, int] = {}
        self.version = 0
        self._serial = 0
        self._by_serial: dict[int, Call] = {}
        # SDP media port -> {(serial, side): (call, side)}: many phones share a port number.
        self._by_port: dict[int, dict[tuple[int, int], tuple[Call, int]]] = {}
        # (SDP media port, address the side's SIP came from) -> the same: NAT latching
        # looks a packet up here in one step, however many calls share the port.
        self._by_port_addr: dict[tuple[int, bytes], dict[tuple[int, int], tuple[Call, int]]] = {}
        # Port -> a count bumped whenever what NAT latching or `other_media` sees of that
        # port changes (`version` too): an RTP flow found unexplained stays so while its
        # two ports' counts hold, which lets a block count its packets without a lookup.
        self.port_gen: dict[int, int] = {}
        self._ended: OrderedDict[bytes, int] = OrderedDict()  # endpoint -> its call's end
        self._other: dict[bytes, Call] = {}  # endpoints of the calls' non-audio media
        self._other_ports: dict[int, list[Call]] = {}  # their ports, for NAT'd streams

    def __len__(self) -> int:
        return len(self.calls)

    def __iter__(self) -> Iterator[Call]:
        return iter(list(self.calls.values()))

    def get(self, call_id: str) -> Call | None:
        return self.calls.get(call_id)

    def by_serial(self, serial: int) -> Call | None:
        return self._by_serial.get(serial)

    def new_call(self, call_id: str, caller: str, callee: str, tag: str, now_ns: int) -> Call:
        if len(self.calls) >= self._limits.max_calls:
            self._evict(now_ns)
        self._serial += 1
        call = Call(self._serial, call_id, caller, callee, tag, now_ns, now_ns)
        self.calls[call_id] = call
        self._by_serial[call.serial] = call
        self._stats.calls_seen += 1
        return call

    def touch(self, call: Call, now_ns: int) -> None:
        call.last_activity_ns = now_ns
        self.calls.move_to_end(call.call_id)

    def add_endpoint(self, call: Call, side: int, ip: bytes, port: int) -> None:
        # The newest offer wins an endpoint: a port reused by a later call moves to it.
        key = endpoint_key(ip, port)
        if key not in call.endpoints and len(call.endpoints) >= MAX_ENDPOINTS_PER_CALL:
            self._stats.drop("sdp", "too_many_endpoints")  # endless re-INVITEs: bounded
            return
        self.endpoints[key] = (call, side)
        if len(key) == 6:  # IPv4 only: the block fast path reads Ethernet/IPv4 frames
            self.fast[int.from_bytes(key, "big")] = call.serial * 2 + side
        self._touch((port,))
        call.endpoints.add(key)
        self._by_port.setdefault(port, {})[(call.serial, side)] = (call, side)
        if port not in call.media_ports[side]:
            call.media_ports[side].add(port)
            for addr in call.sip_addrs[side]:
                self._by_port_addr.setdefault((port, addr), {})[(call.serial, side)] = (call, side)

    def add_sip_addr(self, call: Call, side: int, addr: bytes) -> None:
        """Remember where a side's SIP came from (a few addresses at most)."""
        addrs = call.sip_addrs[side]
        if addr in addrs or len(addrs) >= MAX_SIP_ADDRS:
            return
        addrs.add(addr)
        for port in call.media_ports[side]:
            self._by_port_addr.setdefault((port, addr), {})[(call.serial, side)] = (call, side)
        self._touch(call.media_ports[side])

    def _touch(self, ports: Iterable[int]) -> None:
        """What latching sees of these ports changed: new generations, and a new `version`
        (the block fast path's lookups are stale)."""
        gen = self.port_gen
        touched = False
        for port in ports:
            gen[port] = gen.get(port, 0) + 1
            touched = True
        if touched:  # no ports (a side with no media yet): nothing to look up again
            self.version += 1

    def add_other_media(self, call: Call, ip: bytes, port: int) -> None:
        """A non-audio stream of the call (video, T.38 fax): known, deliberately not recorded."""
        key = endpoint_key(ip, port)
        self._other[key] = call
        call.other_endpoints.add(key)
        self._touch((port,))
        holders = self._other_ports.setdefault(port, [])
        if call not in holders:
            holders.append(call)

    def other_media(self, dg: Datagram) -> bool:
        """Is this a known non-audio stream: by address, or (NAT) by its two SDP ports?"""
        other = self._other
        if endpoint_key(dg.dst_ip, dg.dport) in other or endpoint_key(dg.src_ip, dg.sport) in other:
            return True
        # NAT: one call holds both ports (among the first MAX_PORT_PROBES holding one).
        holders = self._other_ports.get(dg.sport, ())
        dport = dg.dport.to_bytes(2, "big")
        return any(
            key[-2:] == dport
            for c in itertools.islice(holders, MAX_PORT_PROBES)
            for key in c.other_endpoints
        )

    def latch(
        self, dg: Datagram, flowing_since: Callable[[Datagram], int | None] = lambda dg: None
    ) -> tuple[Call, int] | None:
        """Match RTP that NAT moved off its SDP addresses (symmetric RTP, RFC 4961): the
        ports are kept, the addresses are not. A packet is taken for a call when its two
        ports are that call's two SDP ports (one call only), or when one port is a side's
        SDP port and its address is where that side's SIP came from. The addresses seen
        are then learnt as the call's, so the rest of the stream takes the fast path.
        `flowing_since(dg)` is when this stream was first seen unexplained, if it was.
        Returns (call, sending side) or None; another call's endpoint is never taken."""
        payload = dg.payload
        if len(payload) < 12 or payload[0] >> 6 != 2:
            return None  # not RTP
        found = self._by_two_ports(dg.sport, dg.dport)
        if found is not None and self.ended_endpoint(dg):
            found = None  # an ended call's media: the ports alone do not make it this call's
        if found is not None:
            since = flowing_since(dg)
            if since is not None and since < found[0].first_ns - PREDATING_NS:
                found = None  # older than the call: another conversation on its ports
        if found is None:
            found = self._by_port_and_sip_addr(dg)
        if found is None:
            return None  # nothing, or ambiguous: better unmatched than another call's
        call, sender = found
        for ip, port in ((dg.src_ip, dg.sport), (dg.dst_ip, dg.dport)):
            holder = self.endpoints.get(endpoint_key(ip, port))
            if holder is not None and holder[0] is not call:
                return None
        self.add_endpoint(call, sender, dg.src_ip, dg.sport)
        self.add_endpoint(call, 1 - sender, dg.dst_ip, dg.dport)
        self._stats.latched += 1
        return call, sender

    def ended_endpoint(self, dg: Datagram) -> bool:
        """Is either end of this datagram a media endpoint of a call that ended lately?"""
        ended = self._ended
        return (
            endpoint_key(dg.src_ip, dg.sport) in ended or endpoint_key(dg.dst_ip, dg.dport) in ended
        )

    def _by_two_ports(self, sport: int, dport: int) -> tuple[Call, int] | None:
        """The one call whose sides' SDP ports are these two (sending side: `sport`'s).
        The smaller holder list is walked, probing the other; two matches are ambiguous."""
        src = self._by_port.get(sport, {})
        dst = self._by_port.get(dport, {})
        flip = len(dst) < len(src)
        walk, probe = (dst, src) if flip else (src, dst)
        found = None
        for (serial, side), (call, _) in itertools.islice(walk.items(), MAX_PORT_PROBES):
            if (serial, 1 - side) in probe:
                if found is not None:
                    return None
                found = (call, 1 - side if flip else side)
        if found is not None and len(walk) > MAX_PORT_PROBES:
            return None  # a second match may lie past the probes: not sure, so not taken
        return found

    def _by_port_and_sip_addr(self, dg: Datagram) -> tuple[Call, int] | None:
        """The one side whose SDP port is one end of the packet and whose SIP came from
        that end's address (the sender, or the receiver)."""
        sent = self._by_port_addr.get((dg.sport, dg.src_ip), {})
        received = self._by_port_addr.get((dg.dport, dg.dst_ip), {})
        if len(sent) > 1 or len(received) > 1:
            return None  # ambiguous already
        pairs = {(serial, side): call for (serial, side), (call, _) in sent.items()}
        pairs.update({(serial, 1 - side): call for (serial, side), (call, _) in received.items()})
        if len(pairs) != 1:
            return None
        ((_serial, sender), call), *_ = pairs.items()
        return call, sender

    def _evict(self, now_ns: int) -> None:
        """Past the cap, end the least recently active call, preferring one not recording.
        (A flood of INVITEs costs a scan of the flood's own calls, which come first.)"""
        calls = self.calls.values()
        victim = (  # an unanswered call first, then one without audio yet, then the oldest
            next((c for c in calls if c.state != ANSWERED and c.timeline is None), None)
            or next((c for c in calls if c.timeline is None), None)
            or next(iter(calls))
        )
        self._stats.calls_evicted += 1
        self.end(victim, now_ns, "evicted")

    def _forget_ended(self, key: bytes) -> None:
        self._touch((int.from_bytes(key[-2:], "big"),))  # latching there may differ now

    def sweep(self, now_ns: int) -> None:
        """End calls whose time is up and hand settled audio of the others to the writer."""
        ended = self._ended
        while ended and now_ns - next(iter(ended.values())) >= ENDED_ENDPOINTS_NS:
            self._forget_ended(ended.popitem(last=False)[0])
        idle_ns = int(self._limits.idle_timeout_s * NS_PER_S)
        setup_ns = int(self._limits.setup_timeout_s * NS_PER_S)
        self.place_queued()
        for call in self:
            if call.stop_requested and not call.stopped:
                call.stopped = True
                self.end_recording(call, now_ns, "opt_out")
            last = max(call.last_activity_ns, call.last_rtp_ns)
            if call.end_at_ns is not None and now_ns >= call.end_at_ns:
                self.end(call, now_ns, call.end_reason)
            elif call.state == ANSWERED or call.timeline is not None:
                if now_ns - last >= idle_ns:
                    self.end(call, now_ns, "timeout")
                else:
                    self._media.emit_due(call, now_ns)
            elif now_ns - last >= setup_ns:
                self.end(call, now_ns, "timeout")

    def place_queued(self) -> None:
        """Place every call's queued RTP in one batch across calls (`end` would place each
        call's queue on its own, at numpy's per-call overhead)."""
        place_calls(self._media, self.calls.values())

    def end(self, call: Call, now_ns: int, reason: str) -> None:
        """Close a call: its recording, or an entry saying why it has none."""
        self._media.process(call)  # what is still queued belongs to the recording
        del self.calls[call.call_id]
        del self._by_serial[call.serial]
        for key in call.other_endpoints:
            if self._other.get(key) is call:
                del self._other[key]
            port = int.from_bytes(key[-2:], "big")
            others = [c for c in self._other_ports.get(port, ()) if c is not call]
            if others:
                self._other_ports[port] = others
            else:
                self._other_ports.pop(port, None)
        for key in call.endpoints:
            if self.endpoints.get(key, (None, 0))[0] is call:
                del self.endpoints[key]
                self.fast.pop(int.from_bytes(key, "big"), None)
                self._ended[key] = now_ns
                self._ended.move_to_end(key)
                if len(self._ended) > MAX_ENDED_ENDPOINTS:
                    self._forget_ended(self._ended.popitem(last=False)[0])
            port = int.from_bytes(key[-2:], "big")
            holders = self._by_port.get(port)
            if holders is not None:
                holders.pop((call.serial, 0), None)
                holders.pop((call.serial, 1), None)
                if not holders:
                    del self._by_port[port]
        for side in (0, 1):
            for port in call.media_ports[side]:
                for addr in call.sip_addrs[side]:
                    holders = self._by_port_addr.get((port, addr))
                    if holders is not None:
                        holders.pop((call.serial, side), None)
                        if not holders:
                            del self._by_port_addr[(port, addr)]
        self._touch(
            {int.from_bytes(key[-2:], "big") for key in call.endpoints | call.other_endpoints}
        )
        self._end_raw(call, reason)
        if call.recording_open:
            self.end_recording(call, now_ns, reason)
            return
        outcome, why = _why_not_recorded(call, reason)
        self._stats.not_recorded[outcome] += 1
        self._emit(
            CallNotRecorded(
                call.call_id, call.caller, call.callee, call.first_ns, now_ns, outcome, why
            )
        )

    def _end_raw(self, call: Call, reason: str) -> None:
        """Close the recording of raw RTP the call's undecodable media was kept in."""
        raw = call.raw
        if raw.started:
            self._media.emit_raw(call)
            self._stats.recordings_ended += 1
            stats = {"packets": raw.packets}
            self._emit(RecordingEnded(-call.serial, raw.last_ns, reason, tuple(raw.codecs), stats))

    def end_recording(self, call: Call, now_ns: int, reason: str) -> None:
        """Close the call's recording (the call itself may go on, unrecorded)."""
        timeline = call.timeline
        if timeline is not None and call.recording_open:
            self._media.process(call)
            call.timeline = None
            tail = timeline.finish()
            if tail:
                self._emit(RecordingAudio(call.serial, tail))
            stats = {"packets": 0, "duplicates": 0, "late": 0, "ssrc_changes": 0, "reanchors": 0}
            for side in timeline.sides:
                for name in stats:
                    stats[name] += getattr(side.stats, name)
            self._stats.rtp_duplicates += stats["duplicates"]
            self._stats.rtp_late += stats["late"]
            end_ns = timeline.origin_ns + timeline.cursor * NS_PER_S // timeline.sample_rate
            self._stats.recordings_ended += 1
            self._emit(RecordingEnded(call.serial, end_ns, reason, tuple(call.codecs), stats))


def _why_not_recorded(call: Call, reason: str) -> tuple[str, str]:
    if not call.decision.record:
        return "not_selected", call.decision.reason or "no recording rule matched"
    if call.undecodable:
        kept = " (raw RTP kept encrypted)" if call.raw.started else ""
        return "undecodable", ",".join(sorted(call.undecodable)) + kept
    if call.state in (FAILED, CANCELLED):
        return (
            "not_answered",
            f"{call.state} ({call.final_status})" if call.final_status else call.state,
        )
    if call.state != ANSWERED:
        return "not_answered", f"no answer ({reason})"
    if call.first_rtp_ns is None:
        return "no_audio", "no RTP seen for the call"
    if call.timeline is not None:
        return "no_audio", "only DTMF events or comfort noise, no audio"
    return "no_audio", "RTP seen but none could be placed"
