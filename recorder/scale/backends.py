"""Which index, key store and recording store an archive is used with.

By default (no config, or archive backend `local` and index backend `sqlite`) an archive
is its folder: `index.sqlite`, `keys.sqlite`, the recordings under it, exactly as before.
With the shared backends, commands run on any node (a sensor or an office machine):
  - the index and the key store are the PostgreSQL database of `index.dsn`;
  - a recording is read from the local archive if it is still there, else from the
    bucket (`archive.s3`), by the version id its upload recorded;
  - the local folder keeps only this node's audit trail (and a sensor's spool).

Commands learn the config from `bind(archive, config)` (replay, retention, the service)
or from the file named by the environment variable RECORDER_CONFIG (list, search, export,
verify, hold, erase: `RECORDER_CONFIG=/etc/recorder/recorder.yaml recorder list`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from recorder.config import Config, load_config
from recorder.errors import ArchiveError
from recorder.runtime.archive import Archive
from recorder.runtime.index import Index, RecordingRow
from recorder.runtime.keystore import KeyStore
from recorder.scale.store import RecordingStore

ENV_CONFIG = "RECORDER_CONFIG"

_BOUND: dict[Path, Config] = {}


def bind(archive: Archive, config: Config) -> None:
    """Use `config`'s backends for `archive` in this process."""
    _BOUND[archive.root.resolve()] = config


def config_for(archive: Archive) -> Config | None:
    """The config bound to `archive`, else the one RECORDER_CONFIG names, else None."""
    bound = _BOUND.get(archive.root.resolve())
    if bound is not None:
        return bound
    named = os.environ.get(ENV_CONFIG)
    if named:
        config = load_config(Path(named))
        bind(archive, config)
        return config
    return None


def make_store(config: Config) -> RecordingStore:
    from recorder.scale.s3conn import make_client
    from recorder.scale.store import S3Store

    settings = config.archive.s3
    return S3Store(make_client(settings), settings.bucket)


@dataclass
class Backends:
    """An archive's index, key store and store, as its config says."""

    archive: Archive
    config: Config | None

    @property
    def shared_index(self) -> bool:
        return self.config is not None and self.config.index.backend == "postgresql"

    @property
    def uploads(self) -> bool:
        return self.config is not None and self.config.archive.backend == "s3"

    def require(self) -> None:
        """The archive must exist (a shared index is checked when it is opened)."""
        if not self.shared_index:
            self.archive.require()

    def open_index(self) -> Index:
        if self.config is not None and self.shared_index:
            from recorder.scale.pg import PgIndex

            idx = self.config.index
            return PgIndex(idx.dsn, connect_timeout_s=idx.connect_timeout_s)
        return Index(self.archive.index_path)

    def open_keys(self) -> KeyStore:
        if self.config is not None and self.shared_index:
            from recorder.scale.pg import PgKeyStore

            idx = self.config.index
            return PgKeyStore(idx.dsn, connect_timeout_s=idx.connect_timeout_s)
        return KeyStore(self.archive.keystore_path)

    def store(self) -> RecordingStore | None:
        if self.config is None or not self.uploads:
            return None
        return make_store(self.config)

    def prefix(self) -> str:
        return self.config.archive.s3.prefix if self.config is not None else ""


def backends_for(archive: Archive) -> Backends:
    return Backends(archive, config_for(archive))


def kids_in_use(archive: Archive) -> dict[str, int]:
    """How many file keys each master key wraps: in the key store this archive uses and,
    on a sensor of a shared index, in its local key store too (keys not yet replicated)."""
    counts: dict[str, int] = {}
    backends = backends_for(archive)
    backends.require()
    stores = [backends.open_keys()]
    if backends.shared_index and archive.keystore_path.exists():
        stores.append(KeyStore(archive.keystore_path, create=False))
    for store in stores:
        try:
            for kid, count in store.kids_in_use().items():
                counts[kid] = counts.get(kid, 0) + count
        finally:
            store.close()
    return dict(sorted(counts.items()))


class CommandStores:
    """What a compliance command acts through: the index, the key store and, with the
    s3 backend, the uploaded copies (`remote`, for the deletion gate and deletions) and
    `sync(recording_id)`, which brings an object's legal hold and retain-until in line
    with the index after a change. A context manager that closes what it opened."""

    def __init__(self, archive: Archive, *, keys: bool = True) -> None:
        from recorder.scale.locks import RemoteCopies

        backends = backends_for(archive)
        backends.require()
        self.backends = backends
        self.index = backends.open_index()
        self.keys = backends.open_keys() if keys else None
        self.store = backends.store()
        self.remote = (
            None
            if self.store is None
            else RemoteCopies(self.index, self.store, uploads_expected=backends.uploads)
        )

    def sync(self, recording_id: str) -> None:
        if self.store is None or self.backends.config is None:
            return
        from recorder.compliance.retention import build_expiry_rule
        from recorder.scale.locks import sync_object

        classes = build_expiry_rule(self.backends.config)
        sync_object(self.index, self.store, classes, recording_id)

    def __enter__(self) -> CommandStores:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.keys is not None:
            self.keys.close()
        self.index.close()


def ship_trail(archive: Archive) -> None:
    """After a command on a node with the s3 backend: ship its audit trail (best effort:
    what cannot go now goes with the next command or the running service)."""
    import logging

    from recorder.scale.auditship import AuditShipper

    backends = backends_for(archive)
    config = backends.config
    if config is None or not backends.uploads or not archive.audit_path.exists():
        return
    s3 = config.archive.s3
    shipper = AuditShipper(
        archive, make_store(config), s3.prefix, config.sensor_id, s3.audit_retain_days
    )
    try:
        shipper.ship()
    except ArchiveError as exc:
        logging.getLogger(__name__).warning("audit trail not shipped now: %s", exc)


def open_recording(
    archive: Archive, row: RecordingRow, index: Index, store: RecordingStore | None
) -> BinaryIO:
    """A recording's bytes: the local file while it is there, else its uploaded object."""
    path = archive.resolve(row.path)
    if path.is_file():
        return path.open("rb")
    obj = index.object_of(row.id)
    if obj is None:
        raise FileNotFoundError(f"file {row.path} is missing")
    if store is None:
        raise FileNotFoundError(
            f"file {row.path} is not here: it was uploaded to {obj.object_key} "
            f"(set {ENV_CONFIG} to the config that names the bucket)"
        )
    try:
        return store.open(obj.object_key, obj.version_id)
    except ArchiveError as exc:
        raise FileNotFoundError(f"object {obj.object_key} cannot be read: {exc}") from None
