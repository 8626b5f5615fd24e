"""Value types shared by the core stages and the shells that feed them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

# Link-layer types (the pcap LINKTYPE_* numbers) the core understands.
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

PROTO_TCP = 6
PROTO_UDP = 17


class Frame(NamedTuple):
    """One captured frame: the capture time in integer nanoseconds, its link type and bytes.
    (A NamedTuple: one is made per packet, and it is twice as cheap as a frozen dataclass.)"""

    ts_ns: int
    linktype: int
    data: bytes


@dataclass(slots=True)
class FrameBlock:
    """Many frames of one link type, in capture order, without a bytes object each: frame
    k is `data[starts[k]:ends[k]]`, captured at `times[k]` ns. A capture file's chunk is
    used as read (record headers stay between the frames), so nothing is copied."""

    linktype: int
    data: bytes
    starts: NDArray[np.int64]
    ends: NDArray[np.int64]
    times: NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.starts)

    def frame(self, k: int) -> Frame:
        return Frame(int(self.times[k]), self.linktype, self.data[self.starts[k] : self.ends[k]])

    def frames(self) -> list[Frame]:
        return [self.frame(k) for k in range(len(self))]

    @classmethod
    def of(cls, linktype: int, frames: Iterable[tuple[int, bytes]]) -> FrameBlock:
        """A block of (ts_ns, data) frames, joined into one buffer."""
        times, datas = [], []
        for ts_ns, data in frames:
            times.append(ts_ns)
            datas.append(data)
        lengths = np.fromiter(map(len, datas), dtype=np.int64, count=len(datas))
        ends = np.cumsum(lengths, dtype=np.int64)
        starts = ends - lengths
        return cls(linktype, b"".join(datas), starts, ends, np.array(times, dtype=np.int64))


@dataclass(slots=True)
class Datagram:
    """A UDP datagram or TCP segment lifted out of every encapsulation and reassembled from
    IP fragments. Addresses are packed (4 bytes for IPv4, 16 for IPv6)."""

    proto: int
    src_ip: bytes
    dst_ip: bytes
    sport: int
    dport: int
    payload: bytes
    tcp_seq: int = 0
    tcp_flags: int = 0


# An RTP/SIP endpoint: packed IP address and port.
Endpoint = tuple[bytes, int]
