"""Fuzz parse_sip, looks_like_sip and header helpers: a message or DecodeError("sip")."""

from __future__ import annotations

import _common  # puts the repository on sys.path
import atheris  # type: ignore[import-untyped, import-not-found, unused-ignore]

with atheris.instrument_imports():
    from recorder.core.sip.headers import header_param, uri_user
    from recorder.core.sip.message import REASONS, looks_like_sip, parse_sip
    from recorder.errors import DecodeError
    from tests.sip.samples import STREAM_MESSAGES

SEEDS = list(STREAM_MESSAGES)


def check(data: bytes) -> None:
    """Parse `data`; any exception other than a documented DecodeError escapes as a crash."""
    looks_like_sip(data)
    try:
        msg = parse_sip(data)
    except DecodeError as exc:
        if exc.layer != "sip" or exc.reason not in REASONS:
            raise AssertionError(f"undocumented error {exc.layer}/{exc.reason}") from exc
        return
    if (msg.method is None) == (msg.status is None):
        raise AssertionError("a message is exactly one of request and response")
    _ = (msg.call_id, msg.from_tag, msg.to_tag, msg.cseq, msg.content_type)
    for value in msg.header_all("from") + msg.header_all("to") + msg.header_all("via"):
        uri_user(value)
        header_param(value, "tag")
        header_param(value, "branch")


def test_one_input(data: bytes) -> None:
    check(_common.seeded_input(atheris.FuzzedDataProvider(data), SEEDS))


def main() -> None:
    _common.fuzz(test_one_input)


if __name__ == "__main__":
    main()
