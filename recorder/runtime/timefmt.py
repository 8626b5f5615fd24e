"""RFC 3339 UTC timestamps from integer nanoseconds since the Unix epoch.

Times are integers everywhere else in the recorder; strings exist only at the edges (the JSON
contract of the index, the audit trail). Formatting is exact integer arithmetic: no float ever
touches a timestamp, so a nanosecond value round-trips through `parse_rfc3339_ns`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NS_PER_S = 1_000_000_000
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?Z\Z", re.ASCII
)


def rfc3339_ns(ns: int, *, digits: int = 6) -> str:
    """Format `ns` as e.g. "2024-01-02T03:04:05.123456Z" with `digits` fraction digits (0-9).

    Extra precision is truncated, never rounded, so a formatted time is never later than the
    instant it names.
    """
    if not 0 <= digits <= 9:
        raise ValueError(f"digits must be 0..9, not {digits}")
    seconds, frac = divmod(ns, _NS_PER_S)  # floor division: right for times before 1970 too
    stamp = (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        stamp += "." + f"{frac:09d}"[:digits]
    return stamp + "Z"


def parse_rfc3339_ns(text: str) -> int:
    """Parse the UTC form `rfc3339_ns` writes back to integer nanoseconds; ValueError otherwise."""
    match = _RFC3339.match(text)
    if match is None:
        raise ValueError(f"not an RFC 3339 UTC time: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    when = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    frac = (match.group(7) or "").ljust(9, "0")
    whole = (when - _EPOCH) // timedelta(seconds=1)
    return whole * _NS_PER_S + int(frac)
