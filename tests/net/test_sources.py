"""CaptureFile: exact integer nanoseconds, per-interface link types, truncated files."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tempfile
import threading
from decimal import Decimal
from pathlib import Path

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import PcapNgWriter, PcapWriter

from recorder.core.model import LINKTYPE_ETHERNET, LINKTYPE_RAW, Frame
from recorder.runtime import sources
from recorder.runtime.sources import CaptureFile, CaptureFileError

from .capwrite import PCAP_MODIFIED, PCAP_NS, PCAP_US, epb, idb, obsolete_pb, pcap, shb, spb

A, B, C = b"frame-a", b"frame-bb", b"frame-ccc"
T = 1_700_000_000  # seconds


def write(tmp_path: Path, data: bytes, name: str = "capture.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def frames(path: Path) -> list[Frame]:
    return list(CaptureFile(path))


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcap_microseconds(tmp_path: Path, order: str) -> None:
    path = write(tmp_path, pcap([(T, 123_456, A), (T + 1, 999_999, B)], order=order))
    assert frames(path) == [
        Frame(T * 10**9 + 123_456_000, LINKTYPE_ETHERNET, A),
        Frame((T + 1) * 10**9 + 999_999_000, LINKTYPE_ETHERNET, B),
    ]


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcap_nanoseconds(tmp_path: Path, order: str) -> None:
    path = write(tmp_path, pcap([(T, 999_999_999, A)], linktype=101, magic=PCAP_NS, order=order))
    assert frames(path) == [Frame(T * 10**9 + 999_999_999, LINKTYPE_RAW, A)]


def test_pcap_modified_magic(tmp_path: Path) -> None:
    path = write(tmp_path, pcap([(T, 5, A), (T, 6, B)], magic=PCAP_MODIFIED))
    assert [f.data for f in frames(path)] == [A, B]


def test_pcap_linktype_fcs_bits_are_masked(tmp_path: Path) -> None:
    path = write(tmp_path, pcap([(T, 0, A)], linktype=(1 << 28) | (4 << 26) | 1))
    assert frames(path)[0].linktype == LINKTYPE_ETHERNET


def test_file_name_does_not_matter(tmp_path: Path) -> None:
    ng = shb() + idb("<", 1) + epb("<", 0, 7, A)
    assert frames(write(tmp_path, ng, "looks-like.pcap"))[0].ts_ns == 7_000
    capture = CaptureFile(write(tmp_path, pcap([(T, 0, A)]), "looks-like.pcapng"))
    assert capture.format == "pcap"


def test_dpkt_written_pcap(tmp_path: Path) -> None:
    path = tmp_path / "dpkt.pcap"
    with path.open("wb") as f:
        writer = dpkt.pcap.Writer(f, linktype=1)
        writer.writepkt(A, ts=1_600_000_000.25)
    with (tmp_path / "dpkt-ns.pcap").open("wb") as f:
        writer = dpkt.pcap.Writer(f, linktype=1, nano=True)
        writer.writepkt(B, ts=Decimal("1600000000.000000001"))
    assert frames(path) == [Frame(1_600_000_000_250_000_000, 1, A)]
    assert frames(tmp_path / "dpkt-ns.pcap") == [Frame(1_600_000_000_000_000_001, 1, B)]


def test_scapy_written_pcap_and_pcapng(tmp_path: Path) -> None:
    pkt = Ether() / IP() / UDP() / b"x"
    pkt.time = 1_600_000_000.5
    for writer in (PcapWriter(str(tmp_path / "s.pcap"), nano=True),
                   PcapNgWriter(str(tmp_path / "s.pcapng"))):  # fmt: skip
        writer.write(pkt)
        writer.close()
    for name in ("s.pcap", "s.pcapng"):
        assert frames(tmp_path / name) == [Frame(1_600_000_000_500_000_000, 1, bytes(pkt))]


def test_pcapng_interfaces_keep_their_linktype_and_resolution(tmp_path: Path) -> None:
    data = (
        shb()
        + idb("<", LINKTYPE_ETHERNET, tsresol=9)  # ns
        + idb("<", LINKTYPE_RAW)  # default: us
        + epb("<", 0, T * 10**9 + 1, A)
        + epb("<", 1, T * 10**6 + 2, B, comment=b"\xff\xfe not utf-8")
        + epb("<", 0, T * 10**9 + 3, C)
    )
    assert frames(write(tmp_path, data)) == [
        Frame(T * 10**9 + 1, LINKTYPE_ETHERNET, A),
        Frame(T * 10**9 + 2_000, LINKTYPE_RAW, B),
        Frame(T * 10**9 + 3, LINKTYPE_ETHERNET, C),
    ]


@pytest.mark.parametrize(
    ("tsresol", "units", "ts_ns"),
    [
        (3, 1_234, 1_234_000_000),  # ms
        (0x80 | 10, 5 * 1024 + 512, 5_500_000_000),  # 2^-10 s
        (12, 1_000_000_000_123_456, 1_000_000_000_123),  # ps, floored to ns
        (0x80 | 30, (1 << 30) + 1, 1_000_000_000),  # 2^-30 s: 0.93 ns floored
    ],
)
def test_pcapng_tsresol(tmp_path: Path, tsresol: int, units: int, ts_ns: int) -> None:
    data = shb() + idb("<", 1, tsresol=tsresol) + epb("<", 0, units, A)
    assert frames(write(tmp_path, data))[0].ts_ns == ts_ns


def test_pcapng_tsoffset(tmp_path: Path) -> None:
    data = shb() + idb("<", 1, tsresol=9, tsoffset=100) + epb("<", 0, 5, A)
    assert frames(write(tmp_path, data))[0].ts_ns == 100 * 10**9 + 5


def test_pcapng_sections_byte_orders_and_block_kinds(tmp_path: Path) -> None:
    data = (
        shb(">")
        + idb(">", 1)
        + epb(">", 0, 1, A)
        + obsolete_pb(">", 0, 2, B)
        + spb(">", C)  # no timestamp: skipped
        + b"".join([struct.pack(">II", 5, 16), b"\0" * 4, struct.pack(">I", 16)])  # ISB
        + shb("<")  # a new section forgets the old interfaces
        + epb("<", 0, 3, A)  # refers to no interface of this section: skipped
        + idb("<", 101, tsresol=9)
        + epb("<", 0, 4, C)
    )
    capture = CaptureFile(write(tmp_path, data))
    assert list(capture) == [Frame(1_000, 1, A), Frame(2_000, 1, B), Frame(4, 101, C)]
    assert capture.skipped_blocks == 2
    assert capture.frames == 3
    assert not capture.truncated


def cumulative(pieces: list[bytes]) -> list[int]:
    ends, at = [], 0
    for piece in pieces:
        at += len(piece)
        ends.append(at)
    return ends


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_truncated_at_every_length(tmp_path: Path, kind: str) -> None:
    if kind == "pcap":
        data = pcap([(T, 1, A), (T, 2, B), (T, 3, C)])
        pieces = [data[:24], data[24:47], data[47:71], data[71:]]
    else:
        pieces = [shb(), idb("<", 1), *(epb("<", 0, i, x) for i, x in enumerate((A, B, C)))]
        data = b"".join(pieces)
    boundaries = cumulative(pieces)  # cutting here loses no partial record
    frame_ends = boundaries[-3:]
    path = tmp_path / "cut"
    for cut in range(4, len(data) + 1):
        path.write_bytes(data[:cut])
        capture = CaptureFile(path)
        got = list(capture)
        whole = sum(end <= cut for end in frame_ends)
        assert [f.data for f in got] == [A, B, C][:whole], cut
        assert capture.frames == whole
        assert capture.truncated == (cut not in boundaries), cut
        assert (capture.stop_reason is None) == (cut in boundaries), cut


def test_impossible_lengths_stop_cleanly(tmp_path: Path) -> None:
    bad_pcap = pcap([(T, 1, A)]) + struct.pack("<IIII", T, 0, 0x7FFFFFFF, 10)
    capture = CaptureFile(write(tmp_path, bad_pcap, "a"))
    assert [f.data for f in capture] == [A]
    assert (capture.truncated, capture.stop_reason) == (True, "bad_record_length")

    bad_block = shb() + idb("<", 1) + epb("<", 0, 1, A) + struct.pack("<II", 6, 13) + b"\0" * 8
    capture = CaptureFile(write(tmp_path, bad_block, "b"))
    assert [f.data for f in capture] == [A]
    assert (capture.truncated, capture.stop_reason) == (True, "bad_block_length")

    lying_caplen = bytearray(epb("<", 0, 1, A))
    lying_caplen[20:24] = struct.pack("<I", 500)
    capture = CaptureFile(write(tmp_path, shb() + idb("<", 1) + bytes(lying_caplen), "c"))
    assert (list(capture), capture.stop_reason) == ([], "bad_block_length")


def test_iterating_again_starts_over(tmp_path: Path) -> None:
    capture = CaptureFile(write(tmp_path, pcap([(T, 1, A), (T, 2, B)]) + b"\0\0"))
    assert len(list(capture)) == 2
    assert capture.truncated
    assert len(list(capture)) == 2
    assert capture.frames == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"GET / HTTP/1.1\r\n", "not a pcap or pcapng capture (starts with 0x47455420)"),
        (b"\x1f\x8b\x08\x00gzip", "not a pcap or pcapng capture"),
    ],
)
def test_not_a_capture(tmp_path: Path, content: bytes, message: str) -> None:
    path = write(tmp_path, content, "x.pcap")
    with pytest.raises(CaptureFileError) as info:
        CaptureFile(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CaptureFileError, match="cannot read capture: No such file"):
        CaptureFile(tmp_path / "nope.pcap")


def test_replay_does_not_load_libpcap() -> None:
    code = (
        "import sys, recorder.runtime.replay, recorder.runtime.sources; "
        "print('recorder.runtime.libpcap' in sys.modules or 'pylibpcap' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def read_both(path: Path) -> tuple[tuple, tuple]:
    """(frames, truncated, stop_reason, count) read frame by frame, then block by block."""
    capture = CaptureFile(path)
    one = (list(capture), capture.truncated, capture.stop_reason, capture.frames)
    blocks = list(capture.blocks())
    assert all(len(b) for b in blocks)
    return one, (
        [f for b in blocks for f in b.frames()],
        capture.truncated,
        capture.stop_reason,
        capture.frames,
    )


@settings(max_examples=150, deadline=None)
@given(
    records=st.lists(
        st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 999_999), st.binary(max_size=90)),
        max_size=30,
    ),
    magic=st.sampled_from([PCAP_US, PCAP_NS, PCAP_MODIFIED]),
    order=st.sampled_from(["<", ">"]),
    cut=st.integers(0, 4000),
    garbage=st.sampled_from([b"", b"\0" * 3, struct.pack("<IIII", 1, 2, 0x7FFFFFFF, 0)]),
    read_size=st.sampled_from([16, 37, 100, 1 << 20]),
)
def test_blocks_read_what_frames_read(
    records: list, magic: int, order: str, cut: int, garbage: bytes, read_size: int
) -> None:
    """Whatever the records, the cut and the read size, blocks carry the same frames and
    stop the same way (each read's last record continues into the next read)."""
    data = pcap(records, magic=magic, order=order)
    data = (data + garbage)[: max(24, cut)] if cut < len(data) + len(garbage) else data + garbage
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.pcap"
        path.write_bytes(data)
        with pytest.MonkeyPatch.context() as m:
            m.setattr(sources, "BLOCK_BYTES", read_size)
            one, blocks = read_both(path)
    assert blocks == one


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.sampled_from([0, 3, 40, 41]), max_size=400),
    runs=st.lists(st.tuples(st.sampled_from([0, 40, 41]), st.integers(1, 300)), max_size=6),
    order=st.sampled_from(["<", ">"]),
    magic=st.sampled_from([PCAP_US, PCAP_MODIFIED]),
    tail=st.sampled_from([b"", b"\0" * 20, struct.pack("<IIII", 1, 2, 0x7FFFFFFF, 0)]),
    read_size=st.sampled_from([100, 5000, 1 << 20]),
    probe=st.sampled_from([(1, 2, 2, 4), (3, 8, 32, 64)]),
)
def test_runs_of_one_length_read_as_records(
    lengths: list, runs: list, order: str, magic: int, tail: bytes, read_size: int, probe: tuple
) -> None:
    """Runs of records of one length are taken at once (a strided numpy check); whatever
    the runs, their breaks, a read cutting one, a bad length after one and the probe's
    settings, the records and the stop are those of the record-by-record reader."""
    sizes = lengths + [n for size, count in runs for n in [size] * count]
    records = [(k, k % 1000, bytes([k % 251]) * n) for k, n in enumerate(sizes)]
    data = pcap(records, magic=magic, order=order) + tail
    wait, wait_max, worth, probe_min = probe
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.pcap"
        path.write_bytes(data)
        with pytest.MonkeyPatch.context() as m:
            m.setattr(sources, "BLOCK_BYTES", read_size)
            m.setattr(sources, "_RUN_WAIT", wait)
            m.setattr(sources, "_RUN_WAIT_MAX", wait_max)
            m.setattr(sources, "_RUN_WORTH", worth)
            m.setattr(sources, "_RUN_PROBE", probe_min)
            one, blocks = read_both(path)
    assert blocks == one
    assert [f.data for f in one[0][: len(records)]] == [r[2] for r in records]


def test_blocks_from_a_pipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """From a pipe (no seeking back), records cut by a read are carried to the next one,
    and the blocks hold the frames the file gives."""
    records = [(k, k, bytes([k]) * (k % 7 * 13)) for k in range(60)]
    data = pcap(records) + b"\0" * 5
    expected = list(CaptureFile(write(tmp_path, data, "c.pcap")))
    monkeypatch.setattr(sources, "BLOCK_BYTES", 100)
    read_end, write_end = os.pipe()
    writer = threading.Thread(target=lambda: (os.write(write_end, data), os.close(write_end)))
    writer.start()
    with os.fdopen(read_end, "rb") as pipe:
        assert not pipe.seekable()
        blocks = []
        with pytest.raises(sources._Stop, match="truncated_record"):
            blocks.extend(sources._pcap_blocks(pipe))
    writer.join(10)
    assert [f for b in blocks for f in b.frames()] == expected


@pytest.mark.parametrize(
    ("tsresol", "tsoffset", "units"),
    [
        (0, None, 2**40),
        (0, 2**62, 5),
        (0, -(2**62), 5),
        (9, 2**34, 2**63),
        (9, None, 2**63 - 10**10),
        (0, None, 2**32),
        (0, -10, 5),
    ],
    ids=[
        "seconds past int64",
        "offset past int64",
        "offset before int64",
        "ns plus offset",
        "int64 but past 2106",
        "2106 exactly",
        "before 1970",
    ],
)
def test_pcapng_time_out_of_range_is_skipped(
    tmp_path: Path, tsresol: int, tsoffset: int | None, units: int
) -> None:
    """A packet whose time classic pcap could not carry either (before 1970, after 2106)
    is skipped and counted, by both readers alike; the packets around it are read. (Found
    by fuzz/fuzz_capture.py: past int64 the block reader raised OverflowError, and times
    near the int64 limit overflowed the index when the call's end was written.)"""
    data = shb() + idb("<", 1) + idb("<", 1, tsresol=tsresol, tsoffset=tsoffset)
    data += epb("<", 0, 1, A) + epb("<", 1, units, B) + epb("<", 0, 2, C)
    path = write(tmp_path, data)
    one, blocks = read_both(path)
    assert blocks == one
    assert [f.data for f in one[0]] == [A, C]
    assert CaptureFile(path).skipped_blocks == 0  # (counted while reading)
    capture = CaptureFile(path)
    list(capture.blocks())
    assert capture.skipped_blocks == 1


def test_pcapng_blocks_split_by_link_type(tmp_path: Path) -> None:
    data = shb() + idb("<", 1) + idb("<", 101) + epb("<", 0, 1, A) + epb("<", 1, 2, B)
    data += epb("<", 1, 3, C) + epb("<", 0, 4, A) + b"\0\0\0"
    path = write(tmp_path, data)
    one, blocks = read_both(path)
    assert blocks == one
    assert [b.linktype for b in CaptureFile(path).blocks()] == [1, 101, 1]
    assert one[1:3] == (True, "truncated_record")


@pytest.mark.parametrize("order", ["<", ">"])
def test_records_block_reads_records_from_any_start(order: str) -> None:
    """The live ring's records (after a message header, say) read as a capture file's: the
    frames, their nanosecond times, where a cut record starts, and an impossible length."""
    records = [(1_700_000_000 + i, 999_999_000 + i, bytes([i]) * (i % 5 * 40)) for i in range(50)]
    body = sources.pcap_file_header(pcap([], magic=PCAP_NS, order=order))
    assert body == (order, 1, 16, 1)
    data = pcap(records, magic=PCAP_NS, order=order)[24:]
    prefix = b"HEAD" * 7
    block, pos, bad = sources.records_block(1, prefix + data, len(prefix), order, 1)
    assert (pos, bad) == (len(prefix + data), False)
    assert [f.data for f in block.frames()] == [r[2] for r in records]
    assert block.times.tolist() == [s * 10**9 + ns for s, ns, _ in records]
    cut = prefix + data[:-3]  # the last record cut: the ones before are whole
    block, pos, bad = sources.records_block(1, cut, len(prefix), order, 1)
    assert len(block) == 49 and pos == len(prefix + data) - 16 - len(records[-1][2]) and not bad
    huge = prefix + struct.pack(order + "IIII", 1, 2, sources.MAX_RECORD_BYTES + 1, 0)
    block, pos, bad = sources.records_block(1, huge, len(prefix), order, 1)
    assert (len(block), pos, bad) == (0, len(prefix), True)
