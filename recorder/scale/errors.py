"""Errors of the shared backends (S3, PostgreSQL): importable without boto3 or psycopg."""

from __future__ import annotations

from recorder.errors import ArchiveError


class BackendUnavailable(ArchiveError):
    """S3 or PostgreSQL cannot be reached now (retry later); `backend` says which."""

    def __init__(self, backend: str, detail: str) -> None:
        super().__init__(f"{backend} unavailable: {detail}")
        self.backend = backend


class StoreRefused(ArchiveError):
    """The object store refused a request (HTTP `status`, S3 error `code`), e.g. deleting an
    object under COMPLIANCE retention: 403 AccessDenied."""

    def __init__(self, operation: str, status: int, code: str, message: str = "") -> None:
        detail = f": {message}" if message else ""
        super().__init__(f"S3 refused {operation}: {status} {code}{detail}")
        self.operation = operation
        self.status = status
        self.code = code


class AlreadyStored(ArchiveError):
    """A PUT made only if the key held nothing found an object there (HTTP 412): an earlier
    attempt landed, perhaps while its answer was lost, or another file holds the key."""

    def __init__(self, key: str) -> None:
        super().__init__(f"{key} exists already")
        self.key = key
