"""What the core asks before it records a call, and the hooks compliance controls use.

The core stays ignorant of rules: a `RecordingPolicy` (pure, no I/O) looks at the facts of
a new call and returns a `Decision`. Without one, every call is recorded under purpose
`unspecified` in the `default` retention class (the development default).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class CallFacts:
    """What is known when a call begins (its initial INVITE)."""

    call_id: str
    caller: str  # user part / number of From
    callee: str  # user part / number of To
    caller_uri: str  # the From header value
    callee_uri: str  # the To header value
    src_ip: bytes  # packed address that sent the INVITE (the SPAN-side phone or trunk)
    dst_ip: bytes
    headers: dict[str, str] = field(default_factory=dict)  # lower-case name -> first value


@dataclass(frozen=True, slots=True)
class Decision:
    record: bool
    purpose: str = "unspecified"
    legal_basis: str = "unspecified"
    retention_class: str = "default"
    notice: str = ""
    rule: str = "default"
    reason: str = ""  # why not recorded, when record is False


class RecordingPolicy(Protocol):
    def decide(self, facts: CallFacts) -> Decision: ...


class RecordEverything:
    """The development default: record every call, purpose `unspecified`."""

    def decide(self, facts: CallFacts) -> Decision:
        return Decision(record=True)


class DtmfListener(Protocol):
    """Told of every RFC 4733 telephone-event of a call (digit once per event, at its
    start). May pause or resume the call's recording through the core."""

    def on_digit(self, call_serial: int, side: int, digit: str, now_ns: int) -> None: ...
