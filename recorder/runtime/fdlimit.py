"""The limit on open files: every recording being written holds its file open, so the limit
caps the calls recorded at once. A common default soft limit is 1,024 (a login shell's
`ulimit -n`, systemd's LimitNOFILE= for services), which would stop recording new calls near
1,000 concurrent ones; the hard limit is usually far higher, and a process may raise its
soft limit up to it."""

from __future__ import annotations

import resource

# Files besides the recordings: index and key store (and their journals), audit trail,
# capture, pipes, metrics and control sockets, S3 and PostgreSQL connections, libraries.
RESERVED = 128
ENOUGH_CALLS = 10_000  # concurrent recordings below which a limit is warned of
ADVISED = 65_536  # what systemd/recorder.service sets (LimitNOFILE=)
# The kernel's default fs.nr_open; a higher soft limit (hard limits of 2^30 exist) would only
# slow programs that close every possible descriptor.
_MOST = 1 << 20


def raise_open_files_limit() -> tuple[int, str | None]:
    """Raise the soft limit to the hard one where allowed. Returns the limit in force and,
    when it allows fewer than `ENOUGH_CALLS` recordings at once, a warning saying so."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _MOST if hard == resource.RLIM_INFINITY else min(hard, _MOST)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError):  # a seccomp filter denying setrlimit (EPERM), say
            pass
    calls = recording_slots()
    if calls < ENOUGH_CALLS:
        return soft, (
            f"open files are limited to {soft:,} (LimitNOFILE= in the unit, ulimit -n): "
            f"at most {calls:,} calls can be recorded at once; raise the limit to {ADVISED:,}"
        )
    return soft, None


def recording_slots() -> int:
    """How many recordings may hold their files open at once: the soft limit, less what the
    rest of the process needs (running out would fail the index's and audit trail's writes,
    not only new recordings)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return _MOST if soft == resource.RLIM_INFINITY else max(0, soft - RESERVED)
