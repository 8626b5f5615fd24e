"""Settings of the compliance controls: recording rules, retention classes, PCI DSS pause.

Without a `policy.rules` list every call is recorded under purpose `unspecified` in the
`default` retention class (30 days) and the recorder warns that no policy is configured.
With rules, a call is recorded only if a rule selects it; the first matching rule wins.
Cross-section checks (a rule's retention class exists) are in `factory.check_compliance`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

from recorder.configschema import require

# GDPR Art 6(1) (a)-(f). `legal_obligation` (c) is what keeps a recording against erasure
# (Art 17(3)(b)) and against any deletion before its retention ends.
LegalBasis = Literal[
    "consent",
    "contract",
    "legal_obligation",
    "vital_interests",
    "public_task",
    "legitimate_interests",
]
Direction = Literal["inbound", "outbound", "internal", "external"]
PROTECTED_BASIS = "legal_obligation"


@dataclass(frozen=True)
class RuleSettings:
    """One recording rule. Every criterion given must match (a list matches if any item
    does); a rule with no criteria matches every call. Number and URI patterns are
    shell-style globs (`+4930555*`, `sip:*@trading.example`); a pattern without `*?[` is an
    exact match. `address` holds CIDRs matched against either IP address of the INVITE."""

    name: str = ""
    record: bool = True  # false: an exclusion (e.g. private lines): matching calls are skipped
    purpose: str = ""
    legal_basis: LegalBasis | None = None
    retention_class: str = ""
    notice: str = ""  # the notice that informed callers and staff (MiFID Art 76, GDPR Art 13)
    caller: list[str] = field(default_factory=list)
    callee: list[str] = field(default_factory=list)
    number: list[str] = field(default_factory=list)  # caller or callee
    uri: list[str] = field(default_factory=list)  # caller or callee URI
    address: list[str] = field(default_factory=list)
    direction: list[Direction] = field(default_factory=list)

    def check(self, path: str) -> None:
        require(bool(self.name), f"{path}.name", "must name the rule")
        if not self.record:
            return
        require(bool(self.purpose), f"{path}.purpose", "must name the purpose of recording")
        require(self.legal_basis is not None, f"{path}.legal_basis", "must be set")
        require(bool(self.retention_class), f"{path}.retention_class", "must be set")
        require(
            bool(self.notice.strip()),
            f"{path}.notice",
            "must name the notice that informed callers and staff (a rule without one is refused)",
        )
        for cidr in self.address:
            require(_is_cidr(cidr), f"{path}.address", f"holds {cidr!r}, not an IP network")


@dataclass(frozen=True)
class OptOutSettings:
    """Ways a caller or agent stops the recording of one call (audited)."""

    header: str = ""  # SIP header on the INVITE (any value but 0/no/false): not recorded
    dtmf: str = ""  # RFC 4733 digits that stop the recording for the rest of the call

    def check(self, path: str) -> None:
        require(_is_digits(self.dtmf), f"{path}.dtmf", "must be DTMF digits 0-9 * # A-D")


@dataclass(frozen=True)
class PolicySettings:
    local_domains: list[str] = field(default_factory=list)  # host parts of local URIs
    local_numbers: list[str] = field(default_factory=list)  # globs of local numbers
    rules: list[RuleSettings] = field(default_factory=list)
    opt_out: OptOutSettings = field(default_factory=OptOutSettings)

    @property
    def configured(self) -> bool:
        """True when rules decide what is recorded (else the development default)."""
        return bool(self.rules)

    def check(self, path: str) -> None:
        names = [r.name for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        require(not dupes, f"{path}.rules", f"names {', '.join(dupes)} more than once")


@dataclass(frozen=True)
class RetentionClass:
    """How long recordings of a class are kept after they end: `years` (calendar) plus
    `days`; `max_years`/`max_days` is how far `retention extend` may push it (e.g. MiFID II:
    5 years, up to 7 on the authority's request); 0 means not extendable."""

    years: int = 0
    days: int = 0
    max_years: int = 0
    max_days: int = 0
    obligation: str = ""  # the law that imposes it (rules using the class need legal_obligation)
    # With archive backend s3: recordings of the class are stored under S3 Object Lock in
    # COMPLIANCE mode until their expiry (write once: SEC 17a-4(f), MiFID II Art 76). Never
    # set it on a class that must stay erasable (GDPR): a locked object outlives any request.
    lock: bool = False

    def check(self, path: str) -> None:
        require(self.years >= 0 and self.days >= 0, path, "years and days must not be negative")
        require(self.years + self.days > 0, path, "must keep recordings for some time")
        longer = (self.max_years, self.max_days) != (0, 0)
        if longer:
            require(
                self.max_years * 366 + self.max_days >= self.years * 366 + self.days,
                path,
                "max_years/max_days must not be shorter than years/days",
            )


@dataclass(frozen=True)
class RetentionSettings:
    classes: dict[str, RetentionClass] = field(
        default_factory=lambda: {"default": RetentionClass(days=30)}
    )
    calls_days: int = 90  # how long entries of calls seen but not recorded are kept
    interval_s: float = 3600.0  # how often the service runs retention

    def check(self, path: str) -> None:
        require(self.calls_days > 0, f"{path}.calls_days", "must be positive")
        require(self.interval_s > 0, f"{path}.interval_s", "must be positive")


@dataclass(frozen=True)
class DtmfPauseSettings:
    """RFC 4733 digit patterns that pause the recording (card entry) and resume it."""

    pause: str = ""  # e.g. "*1"; empty: DTMF never pauses
    resume: str = ""  # e.g. "#1"; empty: only the timeout resumes

    def check(self, path: str) -> None:
        for name in ("pause", "resume"):
            require(_is_digits(getattr(self, name)), f"{path}.{name}", "must be DTMF digits")


@dataclass(frozen=True)
class ControlSettings:
    """The local control interface a CTI / agent desktop calls to pause and resume."""

    enabled: bool = False
    socket: str = "/run/recorder/control.sock"
    token_file: str = "/etc/recorder/control.token"  # noqa: S105 (a path, not a secret)


@dataclass(frozen=True)
class PciSettings:
    max_pause_s: float = 300.0  # a pause nobody ends is ended after this (capture time)
    dtmf: DtmfPauseSettings = field(default_factory=DtmfPauseSettings)
    control: ControlSettings = field(default_factory=ControlSettings)

    @property
    def enabled(self) -> bool:
        return bool(self.dtmf.pause) or self.control.enabled

    def check(self, path: str) -> None:
        require(self.max_pause_s > 0, f"{path}.max_pause_s", "must be positive")


DTMF_DIGITS = frozenset("0123456789*#ABCD")


def _is_digits(text: str) -> bool:
    return len(text) <= 16 and all(c in DTMF_DIGITS for c in text)


def _is_cidr(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True
