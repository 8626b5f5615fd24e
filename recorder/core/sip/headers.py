"""SIP header names and the small grammars read out of header values.

Rules of this module (h11 `_abnf` style): every function is total over any
`str` -- it returns a value for garbage and never raises. Header values come
from the wire and are treated as data only.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

# RFC 3261 §7.3.3 and the IANA registry: single-letter compact header names.
COMPACT_FORMS: dict[str, str] = {
    "i": "call-id",
    "f": "from",
    "t": "to",
    "v": "via",
    "l": "content-length",
    "c": "content-type",
    "m": "contact",
    "k": "supported",
    "s": "subject",
    "e": "content-encoding",
    "o": "event",
    "r": "refer-to",
    "b": "referred-by",
    "x": "session-expires",
    "u": "allow-events",
}

# RFC 3261 §25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")

# URI schemes whose user part we report (RFC 3261 §19.1, RFC 3966).
_SIP_SCHEMES = ("sip:", "sips:")
_TEL_SCHEME = "tel:"


def canonical_name(name: str) -> str:
    """The lower-case full header name: `I` -> `call-id`, `Call-ID` -> `call-id`."""
    lower = name.strip().lower()
    return COMPACT_FORMS.get(lower, lower)


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    """Split on `sep` except inside RFC 3261 quoted strings (which may hold \\ escapes)."""
    parts: list[str] = []
    start = 0
    quoted = False
    escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _find_outside_quotes(text: str, ch: str) -> int:
    """Index of the first `ch` outside a quoted string, or -1."""
    quoted = False
    escaped = False
    for i, c in enumerate(text):
        if escaped:
            escaped = False
        elif quoted and c == "\\":
            escaped = True
        elif c == '"':
            quoted = not quoted
        elif c == ch and not quoted:
            return i
    return -1


def split_addr(value: str) -> tuple[str, str]:
    """Split a name-addr / addr-spec header value into (URI, header-params text).

    RFC 3261 §20.10: with angle brackets the URI is inside `<...>` and the
    parameters follow `>`; without them, everything after the first `;`
    is a header parameter (the URI cannot carry parameters there).
    """
    lt = _find_outside_quotes(value, "<")
    if lt >= 0:
        gt = value.find(">", lt + 1)
        if gt < 0:
            return value[lt + 1 :].strip(), ""
        return value[lt + 1 : gt].strip(), value[gt + 1 :]
    uri, _, params = value.partition(";")
    return uri.strip(), ";" + params if params else ""


def header_param(value: str | None, name: str) -> str | None:
    """A header parameter of a From/To/Contact/Via value (`tag`, `branch`, `expires`, ...).

    Returns the unquoted value, `""` for a parameter without `=`, or None when
    absent. Parameters inside the `<URI>` (e.g. `;user=phone`) are not header
    parameters and are not returned.
    """
    if not value:
        return None
    _, params = split_addr(value)
    if not params:
        return None
    wanted = name.lower()
    for item in _split_outside_quotes(params, ";")[1:]:
        key, eq, val = item.partition("=")
        if key.strip().lower() != wanted:
            continue
        val = val.strip()
        if len(val) >= 2 and val[0] == '"' and val[-1] == '"':
            val = val[1:-1]
        return val if eq else ""
    return None


def header_uri(value: str | None) -> str:
    """The URI of a From/To/Contact value, without display name or header parameters."""
    if not value:
        return ""
    uri, _ = split_addr(value)
    return uri


def uri_user(value: str | None) -> str:
    """The user part (usually a number) of a From/To value or URI; `""` if there is none.

    `"Alice" <sip:+4930123@example.com;user=phone>;tag=x` -> `+4930123`,
    `<tel:+1-555-0100>` -> `+1-555-0100`, `sip:example.com` -> `""`.
    Percent-escapes are decoded (RFC 3261 §19.1.2); user parameters after
    `;` (e.g. `;npdi`, RFC 4694) and a password after `:` are dropped.
    """
    uri = header_uri(value)
    lower = uri[:5].lower()
    if lower.startswith(_TEL_SCHEME):
        number = uri[len(_TEL_SCHEME) :]
    elif lower.startswith(_SIP_SCHEMES):
        rest = uri[uri.find(":") + 1 :]
        at = rest.find("@")
        if at < 0:
            return ""
        number = rest[:at].partition(":")[0]  # drop "user:password"
    else:
        return ""
    number = number.partition(";")[0].partition("?")[0]
    return unquote(number, errors="replace").strip()
