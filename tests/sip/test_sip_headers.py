"""uri_user, header_param and canonical header names."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recorder.core.sip.headers import canonical_name, header_param, header_uri, uri_user


@pytest.mark.parametrize(
    ("value", "user"),
    [
        ('"Alice" <sip:+4930123@example.com;user=phone>;tag=x', "+4930123"),
        ("<tel:+1-555-0100>", "+1-555-0100"),
        ("sip:example.com", ""),
        ("<sip:example.com>;tag=1", ""),
        ("sip:bob@example.com", "bob"),
        ("sip:bob@example.com;tag=9", "bob"),
        ("<sips:bob:secret@example.com:5061;transport=tls>", "bob"),
        ("SIP:Bob@Example.COM", "Bob"),
        ("<TEL:+4930123;phone-context=+49>", "+4930123"),
        ("tel:0301234;tag=1", "0301234"),
        ("<sip:%2B4930123@example.com>", "+4930123"),
        ("<sip:+4930123;npdi;rn=+4930999@example.com;user=phone>", "+4930123"),
        ('"Semi;colon <fake@x>" <sip:carol@example.com>', "carol"),
        ('"quoted \\" <sip:nope@x>" <sip:dave@example.com>', "dave"),
        ("<urn:service:sos>", ""),
        ("Anonymous <sip:anonymous@anonymous.invalid>;tag=1", "anonymous"),
        ("", ""),
        ("<", ""),
        ("<sip:unterminated@host", "unterminated"),
        ("garbage", ""),
    ],
)
def test_uri_user(value: str, user: str) -> None:
    assert uri_user(value) == user


def test_uri_user_of_none() -> None:
    assert uri_user(None) == ""


@pytest.mark.parametrize(
    ("value", "name", "expected"),
    [
        ('"Alice" <sip:a@x;tag=inuri>;tag=1928301774', "tag", "1928301774"),
        ("<sip:a@x;user=phone>", "user", None),  # a URI parameter, not a header parameter
        ("<sip:a@x>;TAG=Up", "tag", "Up"),
        ("<sip:a@x>; tag = spaced ;x=1", "tag", "spaced"),
        ("sip:a@x;tag=bare", "tag", "bare"),
        ("SIP/2.0/UDP host:5060;branch=z9hG4bK1;rport", "branch", "z9hG4bK1"),
        ("SIP/2.0/UDP host:5060;branch=z9hG4bK1;rport", "rport", ""),
        ('<sip:a@x>;note="a;b";tag=t', "tag", "t"),
        ('<sip:a@x>;note="a;b";tag=t', "note", "a;b"),
        ('"Tag;tag=fake" <sip:a@x>', "tag", None),
        ("<sip:a@x>", "tag", None),
        ("", "tag", None),
        (None, "tag", None),
    ],
)
def test_header_param(value: str | None, name: str, expected: str | None) -> None:
    assert header_param(value, name) == expected


def test_header_uri() -> None:
    assert header_uri('"A" <sip:a@x;user=phone>;tag=1') == "sip:a@x;user=phone"
    assert header_uri("sip:a@x;tag=1") == "sip:a@x"
    assert header_uri(None) == ""


@pytest.mark.parametrize(
    ("name", "canonical"),
    [("Call-ID", "call-id"), ("i", "call-id"), ("I", "call-id"), (" Via ", "via"), ("X-A", "x-a")],
)
def test_canonical_name(name: str, canonical: str) -> None:
    assert canonical_name(name) == canonical


@given(st.text(max_size=200), st.text(max_size=10))
def test_helpers_are_total(value: str, name: str) -> None:
    assert isinstance(uri_user(value), str)
    result = header_param(value, name)
    assert result is None or isinstance(result, str)
