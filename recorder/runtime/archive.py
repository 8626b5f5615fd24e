"""The archive folder: where recordings, the index, the key store and the audit trail live.

    <archive>/recordings/YYYY/MM/DD/<id>.rec          sealed recordings (…rec.partial while open)
    <archive>/index.sqlite                             one row per recording, calls not recorded
    <archive>/keys.sqlite                              wrapped file keys (destroyed to shred)
    <archive>/audit/audit.jsonl                        the hash-chained audit trail
    <archive>/spare/<32 hex>.spare                     empty files made ahead (runtime/spares.py)

Every name under the archive is made here from values the recorder generated (a time and
random hex), never from the wire, so no Call-ID can steer a path.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from recorder.errors import ArchiveError

RECORDING_SUFFIX = ".rec"
PARTIAL_SUFFIX = ".rec.partial"
_ID = re.compile(r"\A\d{8}T\d{6}Z-[0-9a-f]{16}\Z")


def new_recording_id(start_ns: int) -> str:
    """Sortable by start time, unique by 64 random bits: e.g. 20240102T030405Z-1f2e3d4c5b6a7988."""
    stamp = datetime.fromtimestamp(start_ns // 1_000_000_000, UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(8)}"


def is_recording_id(text: str) -> bool:
    return bool(_ID.match(text))


@dataclass(frozen=True)
class Archive:
    root: Path

    @property
    def index_path(self) -> Path:
        return self.root / "index.sqlite"

    @property
    def keystore_path(self) -> Path:
        return self.root / "keys.sqlite"

    @property
    def audit_dir(self) -> Path:
        return self.root / "audit"

    @property
    def audit_path(self) -> Path:
        return self.audit_dir / "audit.jsonl"

    @property
    def recordings_dir(self) -> Path:
        return self.root / "recordings"

    def relative_path(self, recording_id: str) -> str:
        """`recordings/YYYY/MM/DD/<id>.rec`, from the id alone (checked, never from the wire)."""
        if not is_recording_id(recording_id):
            raise ArchiveError(f"not a recording id: {recording_id!r}")
        day = recording_id[:8]
        return f"recordings/{day[:4]}/{day[4:6]}/{day[6:8]}/{recording_id}{RECORDING_SUFFIX}"

    def resolve(self, relative: str) -> Path:
        """An index path made absolute, refusing anything that would leave the archive."""
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ArchiveError(f"path {relative!r} leaves the archive")
        return path

    def create(self) -> None:
        """Make the archive's folders (owner-only) if they are missing."""
        for folder in (self.root, self.audit_dir, self.recordings_dir):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    def require(self) -> None:
        if not self.index_path.exists():
            raise ArchiveError(f"{self.root} is not an archive (no index.sqlite)")

    def partial_files(self) -> list[Path]:
        return sorted(self.recordings_dir.rglob("*" + PARTIAL_SUFFIX))

    def recording_files(self) -> list[Path]:
        return sorted(self.recordings_dir.rglob("*" + RECORDING_SUFFIX))
