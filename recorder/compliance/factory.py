"""Builds the compliance pieces the recorder runs with, from the config."""

from __future__ import annotations

from collections.abc import Callable

from recorder.config import Config
from recorder.core.policy import RecordEverything, RecordingPolicy

NS_PER_DAY = 86_400 * 1_000_000_000


def build_policy(config: Config) -> RecordingPolicy:
    """Which calls are recorded, under which purpose (the default: every call)."""
    return RecordEverything()


def build_expiry(config: Config) -> Callable[[str, int], int | None]:
    """A recording's expiry, fixed when it closes: end + its retention class's days."""
    classes = config.retention.classes

    def expiry(retention_class: str, end_ns: int) -> int | None:
        days = classes[retention_class].days if retention_class in classes else 30
        return end_ns + days * NS_PER_DAY

    return expiry
