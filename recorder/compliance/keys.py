"""Master key rotation (PCI DSS 3.6/3.7): a new current key for new recordings, old file
keys re-wrapped under it without touching the audio, old keys retired once nothing needs
them. Every step is audited with key ids only (never key material)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from recorder.container.keywrap import unwrap_file_key, wrap_file_key
from recorder.errors import IntegrityError, KeyFileError
from recorder.runtime.archive import Archive
from recorder.runtime.audit import AuditTrail, Value
from recorder.runtime.keyfile import (
    KeyRing,
    add_ring_key,
    generate_master_key,
    load_key_file,
    load_key_ring,
    remove_ring_key,
)
from recorder.scale.backends import CommandStores, backends_for, kids_in_use


def rotate(archive: Archive, folder: Path, actor: str, import_file: Path | None = None) -> str:
    """Make a new master key the current one of key directory `folder`; returns its kid.
    `import_file` first brings an existing single key file into the directory (the way from
    `--key master.key` to a ring)."""
    backends_for(archive).require()
    if folder.exists() and not folder.is_dir():
        raise KeyFileError(
            f"{folder} is a key file; rotation needs a key directory: "
            f"recorder keys rotate --key DIR --import {folder}"
        )
    old: str | None = None
    if import_file is not None:
        imported = load_key_file(import_file)
        add_ring_key(folder, imported)
        old = imported.kid
    elif folder.is_dir():
        old = load_key_ring(folder).current.kid
    new = generate_master_key()
    add_ring_key(folder, new)
    with AuditTrail(archive.audit_path, actor) as audit:
        audit.append(
            "key.rotated",
            previous_kid=old,
            kid=new.kid,
            imported=old is not None and import_file is not None,
        )
    return new.kid


@dataclass
class RewrapReport:
    rewrapped: dict[str, int] = field(default_factory=dict)  # old kid -> file keys moved
    failed: dict[str, str] = field(default_factory=dict)  # recording id -> why


def rewrap(archive: Archive, ring: KeyRing, actor: str) -> RewrapReport:
    """Re-wrap every file key not under the current master key (audio untouched); with a
    shared index, those of the shared key store."""
    report = RewrapReport()
    current = ring.current
    with CommandStores(archive) as stores, AuditTrail(archive.audit_path, actor) as audit:
        keys, index = stores.keys, stores.index
        assert keys is not None
        for recording_id in keys.recording_ids():
            entry = keys.get(recording_id)
            if entry is None or entry[0] == current.kid:
                continue
            old_kid, wrapped = entry
            try:
                file_key = unwrap_file_key(ring.keys, wrapped, recording_id)
            except IntegrityError as exc:
                report.failed[recording_id] = str(exc)
                continue
            keys.replace(
                recording_id,
                current.kid,
                wrap_file_key(current, file_key, recording_id, os.urandom(12)),
            )
            index.update_recording(recording_id, kid=current.kid)
            report.rewrapped[old_kid] = report.rewrapped.get(old_kid, 0) + 1
        audit.append(
            "key.rewrapped",
            outcome="failure" if report.failed else "ok",
            kid=current.kid,
            from_kids=dict(sorted(report.rewrapped.items())),
            failed=list[Value](sorted(report.failed)),
        )
    return report


def retire(archive: Archive, folder: Path, actor: str) -> list[str]:
    """Remove from the key directory every old key no stored file key needs; returns the
    retired kids. A key still wrapping a file key stays (run `keys rewrap` first)."""
    ring = load_key_ring(folder)
    if not ring.is_directory:
        raise KeyFileError(f"{folder} is a single key file: there is nothing to retire")
    in_use = kids_in_use(archive)  # a shared key store counts every sensor's keys
    retired = []
    with AuditTrail(archive.audit_path, actor) as audit:
        for kid in sorted(ring.keys):
            if kid == ring.current.kid:
                continue
            if in_use.get(kid):
                audit.append(
                    "key.retire_refused",
                    outcome="failure",
                    kid=kid,
                    reason=f"wraps {in_use[kid]} file keys",
                )
                continue
            remove_ring_key(folder, kid)
            audit.append("key.retired", kid=kid)
            retired.append(kid)
    return retired
