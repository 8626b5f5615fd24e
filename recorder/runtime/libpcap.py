"""A small ctypes binding of the system libpcap, for live capture.

Why not python-libpcap's `Sniff`: with libpcap 1.10 on Linux (TPACKET_V3, and TPACKET_V2
in immediate mode) its blocking `pcap_next` never returns on a quiet interface, so the
read timeout gives no idle tick: timers and SIGTERM would wait for the next packet. It
also exposes neither `pcap_datalink` nor `pcap_set_buffer_size`. This binding uses the
documented libpcap API instead: a non-blocking handle polled on its selectable descriptor
(our own idle tick), frames read a ring-full at a time as pcap records (`RecordBuffer`:
libpcap's own `pcap_dump` as the callback, so no executable trampolines under
MemoryDenyWriteExecute=yes), nanosecond timestamps, the real link type and the ring size.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import socket
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from recorder.errors import RecorderError

PCAP_ERRBUF_SIZE = 256
PCAP_TSTAMP_PRECISION_NANO = 1
PCAP_NETMASK_UNKNOWN = 0xFFFFFFFF
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23  # Linux 4.20
IFF_LOOPBACK = 0x8


class CaptureError(RecorderError):
    """The capture could not be opened or failed; the message is one line."""


class _Stat(ctypes.Structure):
    _fields_ = (
        ("ps_recv", ctypes.c_uint),
        ("ps_drop", ctypes.c_uint),
        ("ps_ifdrop", ctypes.c_uint),
    )


class _BpfProgram(ctypes.Structure):
    _fields_ = (("bf_len", ctypes.c_uint), ("bf_insns", ctypes.c_void_p))


_P = ctypes.c_void_p
_SIGNATURES: dict[str, tuple[object, list[object]]] = {
    "pcap_create": (_P, [ctypes.c_char_p, ctypes.c_char_p]),
    "pcap_open_dead": (_P, [ctypes.c_int, ctypes.c_int]),
    "pcap_set_snaplen": (ctypes.c_int, [_P, ctypes.c_int]),
    "pcap_set_promisc": (ctypes.c_int, [_P, ctypes.c_int]),
    "pcap_set_timeout": (ctypes.c_int, [_P, ctypes.c_int]),
    "pcap_set_buffer_size": (ctypes.c_int, [_P, ctypes.c_int]),
    "pcap_set_tstamp_precision": (ctypes.c_int, [_P, ctypes.c_int]),
    "pcap_activate": (ctypes.c_int, [_P]),
    "pcap_statustostr": (ctypes.c_char_p, [ctypes.c_int]),
    "pcap_geterr": (ctypes.c_char_p, [_P]),
    "pcap_datalink": (ctypes.c_int, [_P]),
    "pcap_compile": (
        ctypes.c_int,
        [_P, ctypes.POINTER(_BpfProgram), ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32],
    ),
    "pcap_setfilter": (ctypes.c_int, [_P, ctypes.POINTER(_BpfProgram)]),
    "pcap_freecode": (None, [ctypes.POINTER(_BpfProgram)]),
    "pcap_setnonblock": (ctypes.c_int, [_P, ctypes.c_int, ctypes.c_char_p]),
    "pcap_get_selectable_fd": (ctypes.c_int, [_P]),
    "pcap_dispatch": (ctypes.c_int, [_P, ctypes.c_int, _P, _P]),
    "pcap_dump_fopen": (_P, [_P, _P]),
    "pcap_dump_flush": (ctypes.c_int, [_P]),
    "pcap_dump_ftell": (ctypes.c_long, [_P]),
    "pcap_dump_file": (_P, [_P]),
    "pcap_dump_close": (None, [_P]),
    "pcap_stats": (ctypes.c_int, [_P, ctypes.POINTER(_Stat)]),
    "pcap_close": (None, [_P]),
    "pcap_lib_version": (ctypes.c_char_p, []),
}


@cache
def lib() -> ctypes.CDLL:
    """libpcap, loaded once; CaptureError when it is not installed."""
    name = ctypes.util.find_library("pcap")
    if name is None:
        raise CaptureError("libpcap is not installed (Debian: apt install libpcap0.8)")
    try:
        handle = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise CaptureError(f"cannot load libpcap ({name}): {exc}") from None
    for fname, (restype, argtypes) in _SIGNATURES.items():
        fn = getattr(handle, fname)
        fn.restype = restype
        fn.argtypes = argtypes
    return handle


@cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.fmemopen.restype = _P
    libc.fmemopen.argtypes = [_P, ctypes.c_size_t, ctypes.c_char_p]
    libc.fseek.restype = ctypes.c_int
    libc.fseek.argtypes = [_P, ctypes.c_long, ctypes.c_int]
    libc.fclose.restype = ctypes.c_int
    libc.fclose.argtypes = [_P]
    return libc


def version() -> str:
    return (lib().pcap_lib_version() or b"").decode("ascii", "replace")


def _text(raw: bytes | None) -> str:
    return (raw or b"").decode("utf-8", "replace").strip()


@dataclass(frozen=True)
class PcapStats:
    received: int  # ps_recv: packets that passed the filter
    dropped: int  # ps_drop: dropped because the ring was full (we were too slow)
    if_dropped: int  # ps_ifdrop: dropped by the interface or its driver


def check_filter(expression: str, linktype: int, snaplen: int) -> str | None:
    """libpcap's message when `expression` does not compile for `linktype`, else None.
    Needs no privilege (a dead handle), so `check-config` can run it."""
    pcap = lib()
    dead = pcap.pcap_open_dead(linktype, snaplen)
    if not dead:
        return "libpcap cannot open a dead handle"
    try:
        prog = _BpfProgram()
        if pcap.pcap_compile(
            dead, ctypes.byref(prog), expression.encode(), 1, PCAP_NETMASK_UNKNOWN
        ):
            return _text(pcap.pcap_geterr(dead)) or "does not compile"
        pcap.pcap_freecode(ctypes.byref(prog))
        return None
    finally:
        pcap.pcap_close(dead)


def is_loopback(interface: str) -> bool:
    """Whether `interface` is a loopback device (Linux's sysfs flags; False if unknown)."""
    if not interface or "/" in interface or interface.startswith("."):
        return False
    try:
        flags = int(Path("/sys/class/net", interface, "flags").read_text(), 16)
    except (OSError, ValueError):
        return False
    return bool(flags & IFF_LOOPBACK)


def _ignore_outgoing(fd: int) -> bool:
    """Ask the kernel not to deliver the packets this host sends to the capture socket.

    Only for loopback: there the kernel hands the capture every packet twice, as it leaves
    and as it arrives, and libpcap throws the leaving copy away itself, but only after it
    took a ring slot and the sender's time (measured: 20,000 received for 10,000 sent).
    With the option, what is recorded is unchanged, the ring holds twice as many packets
    and the kernel's counters count each packet once. A socket option, not an `inbound`
    filter: libpcap re-filters the ring's current block in user space when a filter is
    set, where `inbound` rejects every packet. False when the kernel lacks it (< 4.20)."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return False
    try:
        sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    except OSError:
        return False
    finally:
        sock.detach()  # the descriptor stays libpcap's
    return True


class PcapHandle:
    """An activated, non-blocking live capture handle."""

    def __init__(
        self,
        interface: str,
        *,
        snaplen: int,
        promiscuous: bool,
        timeout_ms: int,
        buffer_bytes: int,
        bpf: str,
    ) -> None:
        self._lib = pcap = lib()
        errbuf = ctypes.create_string_buffer(PCAP_ERRBUF_SIZE)
        handle = pcap.pcap_create(interface.encode(), errbuf)
        if not handle:
            raise CaptureError(f"cannot capture on {interface!r}: {_text(errbuf.value)}")
        self._p: int | None = handle
        self.warning = ""
        try:
            pcap.pcap_set_snaplen(handle, snaplen)
            pcap.pcap_set_promisc(handle, int(promiscuous))
            pcap.pcap_set_timeout(handle, timeout_ms)
            pcap.pcap_set_buffer_size(handle, buffer_bytes)
            pcap.pcap_set_tstamp_precision(handle, PCAP_TSTAMP_PRECISION_NANO)
            status = pcap.pcap_activate(handle)
            if status < 0:
                detail = _text(pcap.pcap_geterr(handle)) or _text(pcap.pcap_statustostr(status))
                raise CaptureError(f"cannot capture on {interface!r}: {detail}")
            if status > 0:  # e.g. promiscuous mode not supported on "any": go on, say so
                self.warning = _text(pcap.pcap_statustostr(status))
            self.linktype = int(pcap.pcap_datalink(handle))
            self.fd = int(pcap.pcap_get_selectable_fd(handle))
            if self.fd < 0:
                raise CaptureError(f"cannot capture on {interface!r}: no selectable descriptor")
            self.ignores_outgoing = is_loopback(interface) and _ignore_outgoing(self.fd)
            self._set_filter(handle, interface, bpf)
            if pcap.pcap_setnonblock(handle, 1, errbuf) < 0:
                raise CaptureError(f"cannot capture on {interface!r}: {_text(errbuf.value)}")
        except BaseException:
            self.close()
            raise
        self._last = (0, 0, 0)
        self._totals = [0, 0, 0]

    def _set_filter(self, handle: int, interface: str, bpf: str) -> None:
        if not bpf:
            return
        prog = _BpfProgram()
        pcap = self._lib
        if pcap.pcap_compile(handle, ctypes.byref(prog), bpf.encode(), 1, PCAP_NETMASK_UNKNOWN):
            raise CaptureError(f"capture.filter: {_text(pcap.pcap_geterr(handle))}")
        try:
            if pcap.pcap_setfilter(handle, ctypes.byref(prog)):
                raise CaptureError(f"capture.filter: {_text(pcap.pcap_geterr(handle))}")
        finally:
            pcap.pcap_freecode(ctypes.byref(prog))

    def stats(self) -> PcapStats:
        """Totals since opening; libpcap's 32-bit counters are unwrapped here."""
        st = _Stat()
        if self._p is None or self._lib.pcap_stats(self._p, ctypes.byref(st)):
            return PcapStats(*self._totals)
        now = (st.ps_recv, st.ps_drop, st.ps_ifdrop)
        for i, value in enumerate(now):
            self._totals[i] += (value - self._last[i]) & 0xFFFFFFFF
        self._last = now
        return PcapStats(*self._totals)

    def close(self) -> None:
        if self._p is not None:
            self._lib.pcap_close(self._p)
            self._p = None


class RecordBuffer:
    """What waits in the ring, as pcap records in a buffer of ours, written by libpcap
    itself: `pcap_dispatch` with libpcap's own `pcap_dump` as the callback, into a memory
    stream (`fmemopen`) over an anonymous mapping. No Python runs per frame (through ctypes,
    `pcap_next_ex` and the copy out cost about 2 us a frame), and the records are read like a
    capture file's, a block at a time (`sources.records_block`). The callback is a C
    function of libpcap, so ctypes builds no trampoline: MemoryDenyWriteExecute=yes holds.

    `fill` appends what the ring holds, `take` hands over the records written so far (a
    copy) and starts again at the front. A dispatch asks for no more frames than the room
    left holds at `snaplen` each, so a record is never cut."""

    def __init__(self, handle: PcapHandle, snaplen: int, size: int = 64 << 20) -> None:
        if handle._p is None:
            raise CaptureError("the capture is closed")
        self._handle = handle._p
        self._pcap = pcap = lib()
        self._size = size
        self._frame_room = 16 + snaplen  # record header + caplen, which is at most snaplen
        self._memory = mmap.mmap(-1, size)  # pages are only taken as they are written
        self._view = ctypes.c_char.from_buffer(self._memory)
        stream = _libc().fmemopen(ctypes.addressof(self._view), size, b"w")
        if not stream:
            self._release()
            raise CaptureError(f"cannot open a memory stream: {ctypes.get_errno()}")
        self._dumper = pcap.pcap_dump_fopen(self._handle, stream)
        if not self._dumper:
            _libc().fclose(stream)
            self._release()
            raise CaptureError(f"cannot write records: {_text(pcap.pcap_geterr(self._handle))}")
        self._stream = pcap.pcap_dump_file(self._dumper)
        self._callback = ctypes.cast(pcap.pcap_dump, _P)
        self.header = self._flushed_bytes()  # pcap's file header: byte order, precision
        self._rewind()

    def _flushed_bytes(self) -> bytes:
        if self._pcap.pcap_dump_flush(self._dumper):
            raise CaptureError("cannot write records: the buffer is full")
        return self._memory[: self._pcap.pcap_dump_ftell(self._dumper)]

    def _rewind(self) -> None:
        _libc().fseek(self._stream, 0, 0)  # SEEK_SET
        self.frames = 0
        self._used = 0

    def fill(self, limit: int) -> int:
        """Append up to `limit` waiting frames; how many came (0: the ring is empty, or no
        room is left: take first)."""
        room = (self._size - self._used) // self._frame_room
        count = min(limit, room)
        if count <= 0:
            return 0
        got = int(self._pcap.pcap_dispatch(self._handle, count, self._callback, self._dumper))
        if got < 0:
            raise CaptureError(f"capture failed: {_text(self._pcap.pcap_geterr(self._handle))}")
        if got:
            self.frames += got
            self._used = self._pcap.pcap_dump_ftell(self._dumper)
        return got

    @property
    def full(self) -> bool:
        return self._size - self._used < self._frame_room

    def take(self) -> bytes:
        """The records written since the last take, then start again at the front."""
        data = self._flushed_bytes()
        self._rewind()
        return data

    def _release(self) -> None:
        del self._view
        self._memory.close()

    def close(self) -> None:
        if self._dumper:
            self._pcap.pcap_dump_close(self._dumper)  # closes the memory stream too
            self._dumper = None
            self._release()
