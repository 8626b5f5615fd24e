"""Logging for the service: one line per event that matters, fit for journald.

Under systemd (stderr is the journal: $JOURNAL_STREAM names it) lines carry no time
stamp (journald adds its own) but a `<N>` syslog priority prefix, which journald turns
into the entry's priority (SyslogLevelPrefix=, on by default). Elsewhere lines start with
a UTC time. Personal data (numbers, URIs, Call-IDs) is logged only at DEBUG.
"""

from __future__ import annotations

import logging
import os
import sys
import time

# syslog priorities (RFC 5424 section 6.2.1) by logging level
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3}


class JournalFormatter(logging.Formatter):
    """`<priority>logger: message`, one line (newlines in messages are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITY.get(record.levelno, 2 if record.levelno > logging.ERROR else 6)
        text = super().format(record).replace("\n", "\\n")
        return f"<{priority}>{text}"


class PlainFormatter(logging.Formatter):
    converter = time.gmtime  # type: ignore[assignment]  # UTC times

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", "\\n")


def under_journald() -> bool:
    """True when stderr is the journal stream systemd connected us to."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = stream.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return st.st_dev == int(device) and st.st_ino == int(inode)


def configure(level: str, *, journal: bool | None = None) -> None:
    """(Re)configure the root logger: `level` is a LogSettings level name."""
    journal = under_journald() if journal is None else journal
    handler = logging.StreamHandler(sys.stderr)
    if journal:
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(
            PlainFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%SZ")
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    set_level(level)


def set_level(level: str) -> None:
    logging.getLogger().setLevel(getattr(logging, level))
