"""The recording policy: rule matching (numbers, URIs, SPAN-side address, direction,
opt-out header) and the config checks that refuse a rule without a notice."""

from __future__ import annotations

import socket

import pytest

from recorder.compliance.factory import build_policy
from recorder.compliance.retention import add_period, deletion_refusal
from recorder.compliance.rules import RulePolicy, matches, uri_host
from recorder.config import parse_config
from recorder.core.policy import CallFacts, Decision
from recorder.errors import ConfigError
from recorder.runtime.index import Hold, RecordingRow
from tests.compliance.helpers import CONFIG

V4 = socket.inet_aton


def facts(
    caller: str,
    callee: str,
    *,
    src: str = "10.9.0.1",
    headers: dict | None = None,
    caller_host: str = "carrier.example",
    callee_host: str = "carrier.example",
) -> CallFacts:
    return CallFacts(
        call_id="c",
        caller=caller,
        callee=callee,
        caller_uri=f'"X" <sip:{caller}@{caller_host}>;tag=1',
        callee_uri=f"<sip:{callee}@{callee_host}>",
        src_ip=V4(src),
        dst_ip=V4("192.0.2.1"),
        headers=headers or {},
    )


@pytest.fixture
def policy() -> RulePolicy:
    policy = build_policy(parse_config(CONFIG))
    assert isinstance(policy, RulePolicy)
    return policy


def test_first_matching_rule_decides(policy: RulePolicy) -> None:
    d = policy.decide(facts("+442070", "+4930555123"))
    assert d == Decision(
        record=True,
        purpose="mifid",
        legal_basis="legal_obligation",
        retention_class="mifid",
        notice="IVR announcement TRD-1 v3 (de, en); client agreement 12",
        rule="trading",
    )
    assert policy.decide(facts("+4930999000", "+4930555123")).reason == (
        "excluded by rule private-lines"  # an exclusion listed first wins
    )
    assert policy.decide(facts("+442070", "+4930222")).rule == "quality"  # inbound
    assert policy.decide(facts("+4930222", "+442070")).reason == "no recording rule matched"


def test_direction_from_local_numbers_and_domains(policy: RulePolicy) -> None:
    assert policy.direction(facts("+49301", "+49302")) == "internal"
    assert policy.direction(facts("+49301", "+331")) == "outbound"
    assert policy.direction(facts("+331", "+4930")) == "inbound"
    assert policy.direction(facts("+331", "+332", callee_host="elsewhere")) == "external"
    # A local domain makes a party local whatever its number.
    assert policy.direction(facts("al", "+33", caller_host="BANK.example", callee_host="x")) == (
        "outbound"
    )


@pytest.mark.parametrize(
    ("value", "header", "recorded"),
    [
        ("1", True, False),
        ("yes", True, False),
        ("0", True, True),
        ("no", True, True),
        ("", False, True),
    ],
)
def test_opt_out_header(policy: RulePolicy, value: str, header: bool, recorded: bool) -> None:
    headers = {"x-recording-opt-out": value} if header else {}
    d = policy.decide(facts("+442070", "+4930555", headers=headers))
    assert d.record is recorded
    if not recorded:
        assert d.reason == "opt-out (SIP header)"


def test_address_uri_and_patterns() -> None:
    config = parse_config(
        CONFIG.replace(
            "    - name: private-lines",
            """    - name: trunk-b
      purpose: dispute
      legal_basis: contract
      retention_class: quality
      notice: N-7
      address: ["10.20.0.0/16", "2001:db8::/32"]
      uri: ["sip:*@orders.bank.example"]
    - name: private-lines""",
        )
    )
    policy = RulePolicy(config.policy)
    hit = facts("+1", "desk", src="10.20.3.4", callee_host="orders.bank.example")
    assert policy.decide(hit).rule == "trunk-b"
    assert (
        policy.decide(facts("+1", "desk", src="10.21.3.4", callee_host="orders.bank.example")).rule
        != "trunk-b"
    )
    assert matches(["+4930555*"], "+4930555123") and not matches(["+4930555"], "+49305551")
    assert matches(["1??"], "123") and not matches(["1??"], "1234")
    assert uri_host("sip:+49@[2001:db8::1]:5060;user=phone") == "2001:db8::1"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            '      notice: "IVR announcement QA-2 v1"\n',
            "policy.rules[2].notice must name the notice",
        ),
        ("      retention_class: quality\n", "policy.rules[2].retention_class must be set"),
        ("      legal_basis: legitimate_interests\n", "policy.rules[2].legal_basis must be set"),
    ],
)
def test_a_rule_without_notice_class_or_basis_is_refused(change: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(CONFIG.replace(change, ""))
    assert str(info.value).startswith(message)


def test_cross_section_checks() -> None:
    unknown = parse_config(CONFIG.replace("retention_class: quality", "retention_class: qa"))
    with pytest.raises(ConfigError, match=r"retention_class 'qa' is not a retention class"):
        build_policy(unknown)
    wrong = parse_config(CONFIG.replace("legal_basis: legal_obligation", "legal_basis: consent"))
    with pytest.raises(ConfigError, match=r"must be legal_obligation: .* MiFID II Art 16"):
        build_policy(wrong)
    with pytest.raises(ConfigError, match="address holds 'nonsense'"):
        parse_config(CONFIG.replace('number: ["+4930555*"]', 'address: ["nonsense"]'))


def _row(**changes: object) -> RecordingRow:
    base = dict(
        id="r",
        call_id="c",
        caller="a",
        callee="b",
        start_ns=0,
        end_ns=10,
        sample_rate=8000,
        channels=2,
        path="p",
        state="closed",
        legal_basis="legal_obligation",
        expires_ns=1000,
    )
    base.update(changes)
    return RecordingRow(**base)  # type: ignore[arg-type]


def test_the_deletion_gate() -> None:
    hold = Hold("r", "dispute", 0, "x")
    assert deletion_refusal(_row(), None, 999, "erasure") == (
        "kept under a legal obligation until 1970-01-01T00:00:00Z"
    )
    assert deletion_refusal(_row(), None, 1000, "erasure") is None
    assert deletion_refusal(_row(), None, 1000, "retention") is None
    assert deletion_refusal(_row(), hold, 10**30, "retention") == "legal hold (dispute)"
    assert deletion_refusal(_row(expires_ns=None), None, 10**30, "erasure") == (
        "kept under a legal obligation (no expiry fixed yet)"
    )
    assert deletion_refusal(_row(state="open"), None, 10**30, "erasure") == "still being recorded"
    quality = _row(legal_basis="legitimate_interests")
    assert deletion_refusal(quality, None, 999, "erasure") is None
    assert deletion_refusal(quality, None, 999, "retention") == "not expired"


def test_calendar_years() -> None:
    leap = 1_709_164_800 * 10**9 + 7  # 2024-02-29T00:00:00Z (+7 ns)
    assert add_period(leap, 5, 0) == 1_867_017_600 * 10**9 + 7  # 2029-03-01: later, not earlier
    assert add_period(leap, 0, 90) == leap + 90 * 86_400 * 10**9
