"""Invariant (h11's): parse_sip either returns a message or raises DecodeError("sip", ...)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from recorder.core.sip.headers import uri_user
from recorder.core.sip.message import REASONS, SipMessage, looks_like_sip, parse_sip
from recorder.errors import DecodeError

from .mutations import mutated
from .samples import STREAM_MESSAGES


def check(data: bytes) -> SipMessage | None:
    looks_like_sip(data)
    try:
        msg = parse_sip(data)
    except DecodeError as exc:
        error = (exc.layer, exc.reason)
        assert error[0] == "sip"
        assert error[1] in REASONS
        return None
    # Every accessor is total too.
    _ = (msg.call_id, msg.from_tag, msg.to_tag, msg.cseq, msg.content_type, msg.is_request)
    uri_user(msg.header("from"))
    uri_user(msg.header("to"))
    assert (msg.method is None) != (msg.status is None)
    return msg


@settings(max_examples=500)
@given(st.binary(max_size=2000))
def test_random_bytes(data: bytes) -> None:
    check(data)


@settings(max_examples=1000)
@given(mutated(STREAM_MESSAGES))
def test_mutated_valid_messages(data: bytes) -> None:
    check(data)


@settings(max_examples=300)
@given(st.text(max_size=600))
def test_random_text(text: str) -> None:
    check(text.encode("utf-8", "surrogatepass"))


@settings(max_examples=300)
@given(st.sampled_from(STREAM_MESSAGES), st.integers(0, 2000))
def test_every_prefix_of_a_valid_message(data: bytes, cut: int) -> None:
    check(data[:cut])
