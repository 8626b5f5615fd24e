"""Retention: expiry by class, the one gate every deletion goes through, and the
retention run that deletes what has expired.

Deleting a recording means, in this order: an audit record `recording.deleted` (so that
an interrupted deletion is visible to `verify` and finished by the next run), the wrapped
file key destroyed in the key store (secure_delete: every copy of the file, backups
included, can no longer be decrypted), the file unlinked, and the index row (the only
place holding numbers and URIs) removed. The audit record holds no personal data.

The gate (`deletion_refusal`) is the only judge: a held recording is never deleted; one
kept under a legal obligation (legal basis `legal_obligation`, e.g. MiFID II) is never
deleted before its expiry, whatever the command; retention deletes nothing unexpired.
The clock is the system clock; `--now` may only turn it back (a dry look at the past can
delete less, never more), so no flag can expire anything early.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

from recorder.compliance.settings import PROTECTED_BASIS, RetentionClass
from recorder.config import Config
from recorder.errors import RecorderError
from recorder.runtime.archive import Archive
from recorder.runtime.audit import AuditTrail
from recorder.runtime.files import fsync_dir
from recorder.runtime.index import Hold, Index, RecordingRow
from recorder.runtime.keystore import KeyStore
from recorder.runtime.timefmt import parse_rfc3339_ns, rfc3339_ns
from recorder.scale.backends import CommandStores, bind, ship_trail

if TYPE_CHECKING:
    from recorder.scale.locks import RemoteCopies

NS_PER_S = 1_000_000_000
NS_PER_DAY = 86_400 * NS_PER_S
DEFAULT_DAYS = 30
Why = Literal["retention", "erasure"]


def add_period(end_ns: int, years: int, days: int) -> int:
    """`end_ns` plus calendar years (29 February moves to 1 March: later, never earlier)
    plus days, in exact nanoseconds."""
    seconds, frac = divmod(end_ns, NS_PER_S)
    when = datetime.fromtimestamp(seconds, UTC)
    if years:
        try:
            when = when.replace(year=when.year + years)
        except ValueError:  # 29 February into a common year
            when = when.replace(year=when.year + years, month=3, day=1)
    when += timedelta(days=days)
    return int(when.timestamp()) * NS_PER_S + frac


def class_expiry(cls: RetentionClass, end_ns: int) -> int:
    return add_period(end_ns, cls.years, cls.days)


def class_limit(cls: RetentionClass, end_ns: int) -> int:
    """The latest expiry an extension may set (the class period if not extendable)."""
    if (cls.max_years, cls.max_days) == (0, 0):
        return class_expiry(cls, end_ns)
    return add_period(end_ns, cls.max_years, cls.max_days)


def deletion_refusal(row: RecordingRow, hold: Hold | None, now_ns: int, why: Why) -> str | None:
    """Why `row` must not be deleted now, or None if it may be. The only gate."""
    if row.state == "open":
        return "still being recorded"
    if hold is not None:
        return f"legal hold ({hold.reason})"
    if row.legal_basis == PROTECTED_BASIS:
        if row.expires_ns is None:
            return "kept under a legal obligation (no expiry fixed yet)"
        if now_ns < row.expires_ns:
            return f"kept under a legal obligation until {rfc3339_ns(row.expires_ns, digits=0)}"
    if why == "retention" and (row.expires_ns is None or now_ns < row.expires_ns):
        return "not expired"
    return None


class Disposer:
    """Deletes recordings, each through `deletion_refusal`, each deletion audited.
    `remote` (archive backend s3) adds the bucket's word: an object under Object Lock, or
    one not uploaded yet, is not deleted; an uploaded one is deleted with the file."""

    def __init__(
        self,
        archive: Archive,
        index: Index,
        keys: KeyStore,
        audit: AuditTrail,
        remote: RemoteCopies | None = None,
    ):
        self.archive, self.index, self.keys, self.audit = archive, index, keys, audit
        self.remote = remote

    def refusal(self, row: RecordingRow, now_ns: int, why: Why) -> str | None:
        refusal = deletion_refusal(row, self.index.hold_of(row.id), now_ns, why)
        if refusal is None and self.remote is not None:
            refusal = self.remote.refusal(row, now_ns)
        return refusal

    def delete(self, row: RecordingRow, now_ns: int, why: Why) -> str | None:
        """Delete `row` unless the gate refuses; returns the refusal (not deleted) or None."""
        refusal = self.refusal(row, now_ns, why)
        if refusal is not None:
            return refusal
        self.audit.append(
            "recording.deleted",
            recording_id=row.id,
            reason=why,
            at=rfc3339_ns(now_ns),
            sha256=row.sha256 or None,
            purpose=row.purpose,
            legal_basis=row.legal_basis,
            retention_class=row.retention_class,
            expires=None if row.expires_ns is None else rfc3339_ns(row.expires_ns),
        )
        self.keys.delete(row.id)  # the shredding step: no copy of the file decrypts now
        path = self.archive.resolve(row.path)
        path.unlink(missing_ok=True)
        if path.parent.is_dir():
            fsync_dir(path.parent)
        if self.remote is not None:
            self.remote.delete(row)  # refused by the bucket: the row stays, verify says so
        self.index.delete_recording(row.id)
        return None


def resolve_now(given: str | None) -> tuple[int, bool]:
    """(now in ns, whether it was given): the system clock, or an earlier given time."""
    wall = time.time_ns()
    if given is None:
        return wall, False
    try:
        now = parse_rfc3339_ns(given)
    except ValueError:
        raise RecorderError(f"--now {given!r} is not an RFC 3339 UTC time") from None
    if now > wall:
        raise RecorderError(
            "--now may not be later than the system clock (it may only look at the past, "
            "so that no flag can expire a recording early)"
        )
    return now, True


@dataclass
class RetentionReport:
    now_ns: int
    deleted: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)  # expired but kept: id -> why
    expiry_fixed: int = 0
    calls_purged: int = 0
    dry_run: bool = False
    interrupted: bool = False  # `cancelled` said stop: the rest waits for the next run


def build_expiry_rule(config: Config) -> dict[str, RetentionClass]:
    """The configured classes, plus `default` (30 days) when the config has none."""
    classes = dict(config.retention.classes)
    classes.setdefault("default", RetentionClass(days=DEFAULT_DAYS))
    return classes


def run_retention(
    archive: Archive,
    config: Config,
    actor: str,
    now_ns: int,
    *,
    clock_given: bool = False,
    dry_run: bool = False,
    cancelled: Callable[[], bool] | None = None,
) -> RetentionReport:
    """Fix missing expiries, delete every expired recording the gate allows, purge old
    entries of calls not recorded. Audited from start to finish. `cancelled` (the service's
    shutdown) is asked before each recording: a run stops between two deletions, never
    inside one."""
    bind(archive, config)  # the index, keys and bucket this config names
    report = RetentionReport(now_ns, dry_run=dry_run)
    classes = build_expiry_rule(config)
    with CommandStores(archive) as stores, AuditTrail(archive.audit_path, actor) as audit:
        index, keys = stores.index, stores.keys
        assert keys is not None
        audit.append(
            "retention.started",
            now=rfc3339_ns(now_ns),
            clock="given" if clock_given else "system",
            dry_run=dry_run,
        )
        if not dry_run:
            report.expiry_fixed = _fix_expiries(index, audit, classes, stores.sync)
        disposer = Disposer(archive, index, keys, audit, stores.remote)
        for row in index.expired(now_ns):
            if cancelled is not None and cancelled():
                report.interrupted = True
                break
            refusal = disposer.refusal(row, now_ns, "retention")
            if refusal is None and not dry_run:
                refusal = disposer.delete(row, now_ns, "retention")
            if refusal is None:
                report.deleted.append(row.id)
            else:
                report.kept[row.id] = refusal
                if not dry_run:
                    audit.append("retention.kept", recording_id=row.id, reason=refusal)
        if not (dry_run or report.interrupted):
            report.calls_purged = index.purge_calls(
                now_ns - config.retention.calls_days * NS_PER_DAY
            )
        audit.append(
            "retention.finished",
            now=rfc3339_ns(now_ns),
            dry_run=dry_run,
            deleted=len(report.deleted),
            kept=len(report.kept),
            expiry_fixed=report.expiry_fixed,
            calls_purged=report.calls_purged,
            interrupted=report.interrupted,
        )
    ship_trail(archive)
    return report


def _fix_expiries(
    index: Index,
    audit: AuditTrail,
    classes: dict[str, RetentionClass],
    sync: Callable[[str], None] | None = None,
) -> int:
    """Recordings closed without an expiry (recovered after a crash) get their class's
    (and, uploaded under Object Lock, a retain-until extended to it: `sync`)."""
    fixed = 0
    for row in index.without_expiry():
        cls = classes.get(row.retention_class)
        if cls is None or row.end_ns is None:
            continue  # unknown class: kept until someone configures it
        expires = class_expiry(cls, row.end_ns)
        index.update_recording(row.id, expires_ns=expires)
        audit.append("retention.expiry_fixed", recording_id=row.id, expires=rfc3339_ns(expires))
        if sync is not None:
            sync(row.id)
        fixed += 1
    return fixed


def extend_retention(
    index: Index,
    audit: AuditTrail,
    classes: dict[str, RetentionClass],
    row: RecordingRow,
    until_ns: int,
    reason: str,
    sync: Callable[[str], None] | None = None,
) -> str | None:
    """Push a recording's expiry to `until_ns` within its class's limit; never shorten.
    Returns the refusal, or None when extended. Both outcomes are audited. `sync` then
    extends the retain-until of an uploaded, object-locked copy to match."""
    cls = classes.get(row.retention_class)
    refusal: str | None = None
    if row.end_ns is None or row.state == "open":
        refusal = "still being recorded"
    elif cls is None:
        refusal = f"retention class {row.retention_class!r} is not configured"
    elif row.expires_ns is not None and until_ns < row.expires_ns:
        refusal = "a retention period is never shortened"
    elif until_ns > class_limit(cls, row.end_ns):
        limit = rfc3339_ns(class_limit(cls, row.end_ns), digits=0)
        refusal = f"beyond what class {row.retention_class!r} allows ({limit})"
    if refusal is not None:
        audit.append(
            "retention.extend_refused",
            outcome="failure",
            recording_id=row.id,
            until=rfc3339_ns(until_ns),
            reason=refusal,
        )
        return refusal
    index.update_recording(row.id, expires_ns=until_ns)
    audit.append(
        "retention.extended",
        recording_id=row.id,
        before=None if row.expires_ns is None else rfc3339_ns(row.expires_ns),
        until=rfc3339_ns(until_ns),
        reason=reason,
    )
    if sync is not None:
        sync(row.id)
    return None
