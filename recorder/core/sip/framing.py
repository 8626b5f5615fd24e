"""SIP message boundaries in a byte stream (RFC 3261 §18.3, §7.5).

Pure helpers over a `bytearray` holding the in-order bytes of one TCP
direction. They never raise: each returns a value the caller turns into
a counted drop and a resynchronisation.
"""

from __future__ import annotations

import re

__all__ = ["BAD", "MAX_START_LINE", "content_length", "find_head_end", "is_start_line"]

# A start line longer than this is not one we wait for when resynchronising.
MAX_START_LINE = 16 * 1024

# Returned by content_length() for a malformed or contradictory Content-Length.
BAD = -1

# Request-Line = Method SP Request-URI SP SIP-Version;
# Status-Line = SIP-Version SP 3DIGIT SP Reason-Phrase (RFC 3261 §7.1, §7.2).
# The classes are disjoint from the separators, so matching is linear (no backtracking blow-up).
_START_RE = re.compile(
    rb"[!%'*+\-.0-9A-Z_`a-z~]+ [^ \t\r\n]+ [Ss][Ii][Pp]/2\.0"
    rb"|[Ss][Ii][Pp]/2\.0 [1-6][0-9][0-9](?: [^\r\n]*)?"
)
_LENGTH_NAMES = (b"content-length", b"l")
_MAX_LENGTH_DIGITS = 9


def is_start_line(line: bytes | bytearray) -> bool:
    """True if `line` (without its line end) is a SIP request or status line."""
    if line.endswith(b"\r"):
        line = line[:-1]
    if len(line) > MAX_START_LINE:
        return False
    return _START_RE.fullmatch(line) is not None


def find_head_end(buf: bytearray, start: int) -> tuple[int, int] | None:
    """Find the blank line ending the header block, searching from `start`.

    Returns (end of the header block, start of the body), or None when the
    blank line has not arrived yet. LF-only line ends are tolerated.
    """
    crlf = buf.find(b"\n\r\n", start)
    lf = buf.find(b"\n\n", start)
    if crlf < 0 and lf < 0:
        return None
    if lf < 0 or 0 <= crlf < lf:
        return crlf + 1, crlf + 3
    return lf + 1, lf + 2


def content_length(head: bytes | bytearray) -> int | None:
    """The Content-Length (or compact `l`) of a header block; None if absent, BAD if invalid."""
    found: int | None = None
    for line in head.split(b"\n")[1:]:
        name, colon, value = line.partition(b":")
        if not colon or name.strip().lower() not in _LENGTH_NAMES or name[:1] in b" \t":
            continue
        value = value.strip()
        if not value.isdigit() or len(value) > _MAX_LENGTH_DIGITS:
            return BAD
        length = int(value)
        if found is not None and found != length:
            return BAD
        found = length
    return found
