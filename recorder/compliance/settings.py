"""Settings of the compliance controls (a placeholder until those controls land: the
defaults record every call under purpose `unspecified`, 30-day retention)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RetentionClass:
    days: int = 30
    max_days: int = 0  # how far a retention may be extended; 0: not extendable


@dataclass(frozen=True)
class RetentionSettings:
    classes: dict[str, RetentionClass] = field(
        default_factory=lambda: {"default": RetentionClass(days=30)}
    )


@dataclass(frozen=True)
class PolicySettings:
    configured: bool = False


@dataclass(frozen=True)
class PciSettings:
    enabled: bool = False
