"""Admission of new recordings (placeholder: always admit until the disk guard lands)."""

from __future__ import annotations

from collections.abc import Callable

from recorder.config import Config
from recorder.runtime.archive import Archive
from recorder.runtime.audit import AuditTrail


def build_admission(
    config: Config, archive: Archive, audit: AuditTrail
) -> Callable[[], str | None]:
    """A check run before each new recording: a reason to refuse it, or None."""
    return lambda: None
