"""A small ctypes binding of the system libpcap, for live capture.

Why not python-libpcap's `Sniff`: with libpcap 1.10 on Linux (TPACKET_V3, and TPACKET_V2
in immediate mode) its blocking `pcap_next` never returns on a quiet interface, so the
read timeout gives no idle tick: timers and SIGTERM would wait for the next packet. It
also exposes neither `pcap_datalink` nor `pcap_set_buffer_size`. This binding uses the
documented libpcap API instead: a non-blocking handle polled on its selectable descriptor
(our own idle tick), `pcap_next_ex` (no callbacks, so no executable trampolines under
MemoryDenyWriteExecute=yes), nanosecond timestamps, the real link type and the ring size.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass
from functools import cache

from recorder.errors import RecorderError

PCAP_ERRBUF_SIZE = 256
PCAP_TSTAMP_PRECISION_NANO = 1
PCAP_NETMASK_UNKNOWN = 0xFFFFFFFF


class CaptureError(RecorderError):
    """The capture could not be opened or failed; the message is one line."""


class _Timeval(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long))


class PktHdr(ctypes.Structure):
    _fields_ = (("ts", _Timeval), ("caplen", ctypes.c_uint32), ("len", ctypes.c_uint32))


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
    "pcap_next_ex": (
        ctypes.c_int,
        [_P, ctypes.POINTER(ctypes.POINTER(PktHdr)), ctypes.POINTER(ctypes.c_void_p)],
    ),
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
            self._set_filter(handle, interface, bpf)
            if pcap.pcap_setnonblock(handle, 1, errbuf) < 0:
                raise CaptureError(f"cannot capture on {interface!r}: {_text(errbuf.value)}")
            self.fd = int(pcap.pcap_get_selectable_fd(handle))
            if self.fd < 0:
                raise CaptureError(f"cannot capture on {interface!r}: no selectable descriptor")
        except BaseException:
            self.close()
            raise
        self._hdr = ctypes.POINTER(PktHdr)()
        self._data = ctypes.c_void_p()
        self._next_args = (handle, ctypes.byref(self._hdr), ctypes.byref(self._data))
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

    def next(self) -> tuple[int, bytes] | None:
        """(capture time in ns, frame bytes), or None when nothing is waiting."""
        rc = self._lib.pcap_next_ex(*self._next_args)
        if rc == 1:
            hdr = self._hdr.contents
            ts = hdr.ts
            # With nanosecond precision tv_usec holds nanoseconds (pcap_set_tstamp_precision).
            return ts.tv_sec * 1_000_000_000 + ts.tv_usec, ctypes.string_at(
                self._data.value or 0, hdr.caplen
            )
        if rc == 0:
            return None
        raise CaptureError(f"capture failed: {_text(self._lib.pcap_geterr(self._p))}")

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
