"""A hypothesis strategy mutating valid messages (for the SIP and SDP robustness tests)."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st

_INTERESTING = [
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b"\t",
    b":",
    b";",
    b"<",
    b">",
    b'"',
    b"=",
    b"/",
    b"\x00",
    b"\xff",
    b"\xc3",
    b"Content-Length: 99999\r\n",
    b"l: -1\r\n",
    b"\r\n\r\n",
    b"m=audio x RTP/AVP\r\n",
    b"c=IN IP6 ::1\r\n",
    b"a=rtpmap:96 X/0/0\r\n",
]


@st.composite
def mutated(draw: st.DrawFn, seeds: Sequence[bytes]) -> bytes:
    """A seed message with a few random edits: insert, delete, overwrite, truncate, repeat."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "overwrite", "truncate", "repeat"]))
        if op == "insert":
            data[pos:pos] = draw(st.one_of(st.sampled_from(_INTERESTING), st.binary(max_size=8)))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 40))]
        elif op == "overwrite" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[pos:]
        elif op == "repeat":
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 200))]
    return bytes(data)
