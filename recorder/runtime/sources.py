"""Capture files (pcap, pcapng) as a stream of `Frame`s with exact integer nanoseconds.

dpkt's readers are not used for the records, on purpose (checked in dpkt 1.9.8):
`dpkt.pcap.Reader` yields float (us) or Decimal (ns) seconds and hides `caplen`,
so a record cut mid-body comes out short without notice; `dpkt.pcapng.Reader`
reads only the first interface block (one link type and one `if_tsresol` for the
whole file, `iface_id` ignored) and yields floats. So the records are read here
with `struct`, following the formats (pcap: draft-ietf-opsawg-pcap; pcapng:
draft-ietf-opsawg-pcapng), with dpkt's magic and block-type constants:
- pcap: microsecond, nanosecond and "modified" (Kuznetzov) magics, either byte order.
- pcapng: every section and byte order, one link type and resolution per interface
  (`if_tsresol`, `if_tsoffset`), enhanced and obsolete packet blocks. Simple packet
  blocks carry no timestamp and are skipped (counted in `skipped_blocks`), and so are
  packets whose time classic pcap could not carry either (before 1970, after 2106).
- Timestamps are integers throughout. A resolution finer than 1 ns (10^-n with
  n > 9, or 2^-n) is floored to whole nanoseconds; nothing else is rounded.
- A file cut mid-record (or a record whose length is impossible) yields every
  whole frame before it, then stops: `truncated` is set and `stop_reason` says why.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from typing import BinaryIO, TypeVar

import numpy as np
from dpkt import pcap, pcapng
from numpy.typing import NDArray

from recorder.core.model import Frame, FrameBlock
from recorder.errors import RecorderError

NS_PER_S = 1_000_000_000
MAX_RECORD_BYTES = 16 * 1024 * 1024  # far above any real snaplen; bounds a corrupt length
_READ_BUFFER = 1 << 20
BLOCK_BYTES = 16 << 20  # a pcap file is read (and fed to the core) this much at a time:
# big blocks keep many packets per call side in one numpy pass (at 10,000 calls, 16 MiB
# gave 1.25x the throughput of 8 MiB; the block and its temporaries cost about 50 MiB)
BLOCK_FRAMES = 1 << 15  # frames per block made from pcapng
_RUN_WAIT = 3  # records of the previous one's length in a row before a run is probed
_RUN_WAIT_MAX = 256  # after probes that found no run
_RUN_WORTH = 32  # records a probe must find to pay for its numpy calls (about 5 us)
_RUN_PROBE, _RUN_PROBE_MAX = 64, 1 << 16  # records a probe looks at, growing while runs last

_PCAPNG_MAGIC = struct.pack(">I", pcapng.PCAPNG_BT_SHB)
# magic bytes as stored -> (byte order, fraction-to-ns factor, record header size)
_PCAP_MAGICS = {
    struct.pack(">I", pcap.TCPDUMP_MAGIC): (">", 1000, 16),
    struct.pack(">I", pcap.TCPDUMP_MAGIC_NANO): (">", 1, 16),
    struct.pack(">I", pcap.MODPCAP_MAGIC): (">", 1000, 24),
    struct.pack("<I", pcap.TCPDUMP_MAGIC): ("<", 1000, 16),
    struct.pack("<I", pcap.TCPDUMP_MAGIC_NANO): ("<", 1, 16),
    struct.pack("<I", pcap.MODPCAP_MAGIC): ("<", 1000, 24),
}
_OPT_TSRESOL = pcapng.PCAPNG_OPT_IF_TSRESOL
_OPT_TSOFFSET = pcapng.PCAPNG_OPT_IF_TSOFFSET
_BT_SPB = pcapng.PCAPNG_BT_SPB
# A pcapng time (64-bit units, any resolution, a 64-bit offset) can say anything; downstream
# times are int64 nanoseconds, with timeouts and durations added to them (numpy blocks, the
# index). Accepted: what classic pcap can say too, 1970 to 2106 (half the int64 range).
_TS_MIN, _TS_MAX = 0, 2**32 * NS_PER_S - 1


_Item = TypeVar("_Item", Frame, FrameBlock)
Offsets = NDArray[np.int64]


class CaptureFileError(RecorderError):
    """The file cannot be read, or is not a pcap/pcapng capture at all."""


class _Stop(Exception):
    """Internal: the rest of the file is unusable (the reason is the argument)."""


# Per-interface clock: (linktype, multiplier, right shift, divisor, offset_ns);
# ts_ns = ((units * multiplier) >> shift) // divisor + offset_ns.
_Interface = tuple[int, int, int, int, int]


class CaptureFile:
    """A pcap or pcapng file, iterated as `Frame`s in file order.

    The format is chosen by the magic number, not the file name. Opening a file
    that is neither raises `CaptureFileError`. After (or during) iteration:
    `frames` whole frames yielded; `truncated` true if the file ended mid-record
    or held an impossible length (`stop_reason` names it); `skipped_blocks`
    counts packet blocks that could not be given a time or interface.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.frames = 0
        self.truncated = False
        self.stop_reason: str | None = None
        self.skipped_blocks = 0
        with self._open() as f:
            magic = f.read(4)
        if magic == _PCAPNG_MAGIC:
            self.format = "pcapng"
        elif magic in _PCAP_MAGICS:
            self.format = "pcap"
        elif not magic:
            raise CaptureFileError(f"{self.path}: empty file, not a pcap or pcapng capture")
        else:
            raise CaptureFileError(
                f"{self.path}: not a pcap or pcapng capture (starts with 0x{magic.hex()})"
            )

    def _open(self) -> BinaryIO:
        try:
            return open(self.path, "rb", buffering=_READ_BUFFER)
        except OSError as exc:
            raise CaptureFileError(f"{self.path}: cannot read capture: {exc.strerror}") from None

    def blocks(self) -> Iterator[FrameBlock]:
        """The same frames as iteration, as `FrameBlock`s (classic pcap: each block is one
        read of the file, used in place; pcapng: frames gathered per link type)."""
        return self._read_all(
            lambda f: _pcap_blocks(f) if self.format == "pcap" else _gather(_pcapng(f, self)),
            len,
        )

    def __iter__(self) -> Iterator[Frame]:
        return self._read_all(
            lambda f: _pcap(f) if self.format == "pcap" else _pcapng(f, self), lambda _: 1
        )

    def _read_all(
        self, reader: Callable[[BinaryIO], Iterator[_Item]], count: Callable[[_Item], int]
    ) -> Iterator[_Item]:
        """Items from a fresh read of the file, `frames` counted, a damaged end noted."""
        self.frames = 0
        self.truncated = False
        self.stop_reason = None
        self.skipped_blocks = 0
        with self._open() as f:
            try:
                for item in reader(f):
                    self.frames += count(item)
                    yield item
            except _Stop as stop:
                self.truncated = True
                self.stop_reason = str(stop)
            except OSError as exc:
                raise CaptureFileError(f"{self.path}: read failed: {exc.strerror}") from None


def _read(f: BinaryIO, size: int) -> bytes:
    data = f.read(size)
    if len(data) < size:
        raise _Stop("truncated_record")
    return data


# Frame(...) goes through a Python-level __new__; the tuple constructor does the same in C,
# at half the cost, once per packet.
_frame = tuple.__new__


def _pcap_header(f: BinaryIO) -> tuple[str, int, int, int]:
    """Byte order, fraction-to-ns factor, record header size and link type of a pcap."""
    header = f.read(24)
    if len(header) < 24:
        raise _Stop("truncated_header")
    return pcap_file_header(header)


def pcap_file_header(header: bytes) -> tuple[str, int, int, int]:
    """Byte order, fraction-to-ns factor, record header size and link type of the 24-byte
    pcap file header `header`; KeyError for a magic that is not pcap's."""
    order, frac_ns, record_size = _PCAP_MAGICS[header[:4]]
    # The link-type field's upper bits carry FCS information; the type is the low 16.
    linktype = struct.unpack_from(order + "I", header, 20)[0] & 0xFFFF
    return order, frac_ns, record_size, linktype


def _pcap(f: BinaryIO) -> Iterator[Frame]:
    order, frac_ns, record_size, linktype = _pcap_header(f)
    record = struct.Struct(order + "IIII").unpack_from
    read = f.read
    while True:
        head = read(record_size)
        if not head:
            return
        if len(head) < record_size:
            raise _Stop("truncated_record")
        sec, frac, caplen, _wire_len = record(head)
        if caplen > MAX_RECORD_BYTES:
            raise _Stop("bad_record_length")
        data = read(caplen)
        if len(data) < caplen:
            raise _Stop("truncated_record")
        yield _frame(Frame, (sec * NS_PER_S + frac * frac_ns, linktype, data))


def _pcap_blocks(f: BinaryIO) -> Iterator[FrameBlock]:
    """Classic pcap, a read at a time: the records wholly inside each read become a block
    (their headers are read with numpy); a record cut by the read's end starts the next:
    read again after a seek back (no copy of the block to put it in front), or, from a pipe
    or when not even one record was whole, carried in front of the next read."""
    order, frac_ns, record_size, linktype = _pcap_header(f)
    seekable = f.seekable()
    carry = b""
    while True:
        chunk = f.read(BLOCK_BYTES)
        data = carry + chunk if carry else chunk
        if not data:
            return
        block, pos, bad = records_block(linktype, data, 0, order, frac_ns, record_size)
        if len(block):
            yield block
        if bad:
            raise _Stop("bad_record_length")
        if seekable and chunk and pos:
            f.seek(pos - len(data), os.SEEK_CUR)
            carry = b""
            continue
        carry = data[pos:]
        if not chunk:
            if carry:
                raise _Stop("truncated_record")
            return


def records_block(
    linktype: int, data: bytes, start: int, order: str, frac_ns: int, record_size: int = 16
) -> tuple[FrameBlock, int, bool]:
    """The whole pcap records in `data` from `start` on, as a block (no copy: the frames
    stay between their headers), where the first one not whole starts, and whether a
    record's length is impossible. Capture files and the live ring both come this way."""
    at, pos, bad = _record_offsets(data, order, record_size, start)
    sec, frac, caplen = _header_words(data, at, order)
    starts = at + record_size
    return (
        FrameBlock(linktype, data, starts, starts + caplen, sec * NS_PER_S + frac * frac_ns),
        pos,
        bad,
    )


def _header_words(data: bytes, at: Offsets, order: str) -> NDArray[np.int64]:
    """The first three 32-bit words (seconds, fraction, caplen) of the record headers at
    `at`: each record is read from the word view of the file aligned as it is (a gather of
    12 bytes a record built an index of 96 bytes a record, and cost 2.5x as much)."""
    field = np.dtype(order + "u4")
    out = np.empty((3, len(at)), dtype=np.int64)
    align = at & 3
    for shift in range(4):
        rows = np.flatnonzero(align == shift)
        if len(rows):
            words = np.frombuffer(data, field, (len(data) - shift) // 4, shift)
            first = at[rows] >> 2
            for k in range(3):
                out[k, rows] = words[first + k]
    return out


def _record_offsets(
    data: bytes, order: str, record_size: int, start: int = 0
) -> tuple[Offsets, int, bool]:
    """Offsets of the whole records in `data` from `start`, where the first one not whole
    starts, and whether a record's length is impossible (the records before it are whole).

    Lengths chain, so records are walked one at a time, except along a run of records of
    one length (RTP of one codec and framing: most of a call capture), whose length fields
    are checked all at once with a strided numpy view. A probe that finds no run makes the
    next one wait longer, so mixed lengths cost the plain walk plus a little."""
    caplen_at = struct.Struct(order + "I").unpack_from
    field = np.dtype(order + "u4")
    pieces: list[Offsets] = []
    offsets: list[int] = []
    add = offsets.append
    pos, size, bad = start, len(data), False
    previous, same, wait, probe = -1, 0, _RUN_WAIT, _RUN_PROBE
    while pos + record_size <= size:  # the per-record Python loop
        caplen = caplen_at(data, pos + 8)[0]
        if caplen > MAX_RECORD_BYTES:
            bad = True
            break
        stride = record_size + caplen
        if pos + stride > size:
            break
        if caplen != previous:
            previous = caplen
            same = 0
        elif same < wait:
            same += 1
        else:  # a run: the records of this length that follow, checked at once
            count = min(probe, (size - pos) // stride)
            lengths = np.ndarray((count,), field, data, pos + 8, (stride,))
            differ = np.flatnonzero(lengths != caplen)
            run = int(differ[0]) if len(differ) else count
            if offsets:
                pieces.append(np.array(offsets, dtype=np.int64))
                offsets.clear()
            pieces.append(pos + stride * np.arange(run, dtype=np.int64))
            pos += stride * run
            previous, same = -1, 0
            if run < _RUN_WORTH:  # too short to pay for the probe: wait longer next time
                wait, probe = min(wait * 2, _RUN_WAIT_MAX), _RUN_PROBE
            elif run == count:  # the run went on past the probe: look further next time
                wait, probe = _RUN_WAIT, min(probe * 4, _RUN_PROBE_MAX)
            else:
                wait, probe = _RUN_WAIT, max(_RUN_PROBE, 2 * run)
            continue
        add(pos)
        pos += stride
    if offsets:
        pieces.append(np.array(offsets, dtype=np.int64))
    at = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    return at, pos, bad


def _gather(frames: Iterator[Frame]) -> Iterator[FrameBlock]:
    """Frames into blocks of one link type each."""
    batch: list[tuple[int, bytes]] = []
    linktype = -1
    try:
        for ts_ns, frame_linktype, data in frames:
            if frame_linktype != linktype or len(batch) >= BLOCK_FRAMES:
                if batch:
                    yield FrameBlock.of(linktype, batch)
                batch, linktype = [], frame_linktype
            batch.append((ts_ns, data))
    except _Stop:  # the frames read before a damaged record are fed too
        if batch:
            yield FrameBlock.of(linktype, batch)
        raise
    if batch:
        yield FrameBlock.of(linktype, batch)


def _pcapng(f: BinaryIO, owner: CaptureFile) -> Iterator[Frame]:
    order = ">"
    interfaces: list[_Interface] = []
    while True:
        head = f.read(8)
        if not head:
            return
        if len(head) < 8:
            raise _Stop("truncated_record")
        if head[:4] == _PCAPNG_MAGIC:  # section header: the byte-order magic decides
            order = _byte_order(_read(f, 4))
            interfaces = []
            body = _block_body(f, head, order, prefix=4)
            if struct.unpack_from(order + "H", body, 0)[0] != 1:
                raise _Stop("unsupported_version")
            continue
        body = _block_body(f, head, order, prefix=0)
        btype = struct.unpack_from(order + "I", head)[0]
        if btype == pcapng.PCAPNG_BT_IDB:
            interfaces.append(_interface(body, order))
        elif btype in (pcapng.PCAPNG_BT_EPB, pcapng.PCAPNG_BT_PB):
            frame = _packet(body, order, btype, interfaces)
            if frame is None:
                owner.skipped_blocks += 1
            else:
                yield frame
        elif btype == _BT_SPB:
            owner.skipped_blocks += 1


def _byte_order(bom: bytes) -> str:
    if bom == b"\x1a\x2b\x3c\x4d":
        return ">"
    if bom == b"\x4d\x3c\x2b\x1a":
        return "<"
    raise _Stop("bad_byte_order_magic")


def _block_body(f: BinaryIO, head: bytes, order: str, prefix: int) -> bytes:
    """Read the rest of a block; return its body (after type, length and `prefix`
    bytes already read, without the trailing length)."""
    length = struct.unpack_from(order + "I", head, 4)[0]
    if length < 12 + prefix or length % 4 or length > MAX_RECORD_BYTES:
        raise _Stop("bad_block_length")
    rest = _read(f, length - 8 - prefix)
    if struct.unpack_from(order + "I", rest, len(rest) - 4)[0] != length:
        raise _Stop("bad_block_length")
    return rest[:-4]


def _interface(body: bytes, order: str) -> _Interface:
    """Interface description block: link type, then if_tsresol / if_tsoffset options."""
    if len(body) < 8:
        raise _Stop("bad_block_length")
    linktype = struct.unpack_from(order + "H", body, 0)[0]
    multiplier, shift, divisor, offset_ns = 1000, 0, 1, 0  # default resolution: 10^-6 s
    for code, value in _options(body, 8, order):
        if code == _OPT_TSRESOL and len(value) >= 1:
            exponent = value[0] & 0x7F
            if value[0] & 0x80:  # 2^-exponent seconds
                multiplier, shift, divisor = NS_PER_S, exponent, 1
            elif exponent <= 9:
                multiplier, shift, divisor = 10 ** (9 - exponent), 0, 1
            else:
                multiplier, shift, divisor = 1, 0, 10 ** (exponent - 9)
        elif code == _OPT_TSOFFSET and len(value) >= 8:
            offset_ns = struct.unpack_from(order + "q", value)[0] * NS_PER_S
    return linktype, multiplier, shift, divisor, offset_ns


def _options(body: bytes, off: int, order: str) -> Iterator[tuple[int, bytes]]:
    """pcapng options: (code, value) pairs, each value padded to 4 bytes, code 0 ends."""
    header = struct.Struct(order + "HH").unpack_from
    while off + 4 <= len(body):
        code, length = header(body, off)
        if code == 0:
            return
        yield code, body[off + 4 : off + 4 + length]
        off += 4 + ((length + 3) & ~3)


def _packet(body: bytes, order: str, btype: int, interfaces: list[_Interface]) -> Frame | None:
    """Enhanced (or obsolete) packet block -> Frame; None if its interface is unknown or
    its time is out of range (before 1970 or after 2106)."""
    if len(body) < 20:
        raise _Stop("bad_block_length")
    if btype == pcapng.PCAPNG_BT_EPB:
        iface, ts_high, ts_low, caplen = struct.unpack_from(order + "IIII", body)
    else:
        iface, _drops, ts_high, ts_low, caplen = struct.unpack_from(order + "HHIII", body)
    if caplen > len(body) - 20:
        raise _Stop("bad_block_length")
    if iface >= len(interfaces):
        return None
    linktype, multiplier, shift, divisor, offset_ns = interfaces[iface]
    units = (ts_high << 32) | ts_low
    ts_ns = ((units * multiplier) >> shift) // divisor + offset_ns
    if not _TS_MIN <= ts_ns <= _TS_MAX:  # before 1970 or after 2106: no usable time
        return None
    return Frame(ts_ns, linktype, body[20 : 20 + caplen])
