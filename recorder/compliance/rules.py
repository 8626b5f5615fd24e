"""The recording policy from `policy:` in the config: pure, run by the core at each INVITE.

The first rule that matches a call decides: an exclusion rule (`record: false`) or no match
means the call is not recorded (the core counts it as `not_selected` with the reason given
here); a recording rule names purpose, legal basis, retention class and notice. An opt-out
header on the INVITE wins over every rule.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from recorder.compliance.settings import PolicySettings, RuleSettings
from recorder.core.policy import CallFacts, Decision
from recorder.core.sip.headers import header_uri

_GLOB = re.compile(r"[*?\[]")
_NO = frozenset({"0", "no", "false", "off"})


def matches(patterns: Iterable[str], value: str) -> bool:
    """A glob pattern list against one value (case-insensitive for URIs and hosts)."""
    value = value.lower()
    for pattern in patterns:
        pattern = pattern.lower()
        if fnmatchcase(value, pattern) if _GLOB.search(pattern) else value == pattern:
            return True
    return False


def uri_host(uri: str) -> str:
    """The host of a SIP/SIPS URI (`sip:+49@bank.example;user=phone` -> `bank.example`)."""
    rest = uri.partition("@")[2] if "@" in uri else uri.partition(":")[2]
    for stop in ";?>":
        rest = rest.partition(stop)[0]
    if rest.startswith("["):  # IPv6 reference (RFC 3261 §25.1)
        return rest[1:].partition("]")[0].lower()
    return rest.partition(":")[0].lower()


@dataclass(frozen=True)
class _Rule:
    settings: RuleSettings
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


class RulePolicy:
    """`RecordingPolicy` of the configured rules (no I/O: safe inside the core)."""

    def __init__(self, settings: PolicySettings) -> None:
        self._settings = settings
        self._rules = [
            _Rule(rule, tuple(ipaddress.ip_network(c, strict=False) for c in rule.address))
            for rule in settings.rules
        ]
        self._opt_out = settings.opt_out.header.lower()

    def decide(self, facts: CallFacts) -> Decision:
        if self._opt_out:
            value = _header(facts.headers, self._opt_out)
            if value is not None and value.strip().lower() not in _NO:
                return Decision(record=False, rule="opt_out", reason="opt-out (SIP header)")
        if not self._rules:
            return Decision(record=True)  # no policy configured: the development default
        direction = self.direction(facts)
        for rule in self._rules:
            if self._match(rule, facts, direction):
                s = rule.settings
                if not s.record:
                    return Decision(record=False, rule=s.name, reason=f"excluded by rule {s.name}")
                return Decision(
                    record=True,
                    purpose=s.purpose,
                    legal_basis=s.legal_basis or "unspecified",
                    retention_class=s.retention_class,
                    notice=s.notice,
                    rule=s.name,
                )
        return Decision(record=False, rule="", reason="no recording rule matched")

    def direction(self, facts: CallFacts) -> str:
        """inbound, outbound, internal or external, from the local domains and numbers."""
        caller = self._is_local(facts.caller, facts.caller_uri)
        callee = self._is_local(facts.callee, facts.callee_uri)
        if caller and callee:
            return "internal"
        if caller:
            return "outbound"
        if callee:
            return "inbound"
        return "external"

    def _is_local(self, number: str, header_value: str) -> bool:
        s = self._settings
        if number and matches(s.local_numbers, number):
            return True
        return bool(s.local_domains) and matches(
            s.local_domains, uri_host(header_uri(header_value))
        )

    @staticmethod
    def _match(rule: _Rule, facts: CallFacts, direction: str) -> bool:
        s = rule.settings
        if s.caller and not matches(s.caller, facts.caller):
            return False
        if s.callee and not matches(s.callee, facts.callee):
            return False
        if s.number and not (matches(s.number, facts.caller) or matches(s.number, facts.callee)):
            return False
        if s.uri and not any(
            matches(s.uri, header_uri(v)) for v in (facts.caller_uri, facts.callee_uri)
        ):
            return False
        if rule.networks and not any(_in(rule.networks, ip) for ip in (facts.src_ip, facts.dst_ip)):
            return False
        return not s.direction or direction in s.direction


def _in(networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network], packed: bytes) -> bool:
    if len(packed) not in (4, 16):
        return False
    address = ipaddress.ip_address(packed)
    return any(address in net for net in networks)


def _header(headers: dict[str, str], name: str) -> str | None:
    return headers.get(name)  # the core keys headers by canonical lower-case full name
