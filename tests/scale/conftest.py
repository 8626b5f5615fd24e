"""Fixtures of the scale tests: one SeaweedFS and one PostgreSQL per test session (each
test gets its own bucket and database), and private ones for the outage tests, which stop
and restart their server."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.scale.servers import (
    ACCESS_KEY,
    EXTERNAL,
    SECRET_KEY,
    External,
    Postgres,
    S3Service,
    Seaweed,
    missing,
)


def _need_clients() -> None:
    try:
        import boto3  # noqa: F401
        import psycopg  # noqa: F401
    except ImportError as exc:
        missing(f"{exc.name} is not installed (pip install '.[scale]')")


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Service]:
    """The S3 service of the session: SeaweedFS, or the one RECORDER_TEST_S3_ENDPOINT names."""
    _need_clients()
    if EXTERNAL:
        yield External(EXTERNAL)
        return
    server = Seaweed(tmp_path_factory.mktemp("seaweed"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    _need_clients()
    server = Postgres()
    server.start()
    yield server
    server.stop("immediate")
    server.remove()


@pytest.fixture
def bucket(seaweed: S3Service) -> str:
    return seaweed.make_bucket(f"rec-{secrets.token_hex(6)}")


@pytest.fixture
def dsn(postgres: Postgres) -> str:
    return postgres.create_database(f"rec_{secrets.token_hex(6)}")


@pytest.fixture
def own_seaweed(tmp_path: Path) -> Iterator[Seaweed]:
    """A SeaweedFS of this test alone (it may stop and restart it)."""
    _need_clients()
    server = Seaweed(tmp_path / "seaweed")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_postgres() -> Iterator[Postgres]:
    """A PostgreSQL cluster of this test alone (it may stop and restart it)."""
    _need_clients()
    server = Postgres()
    server.start()
    yield server
    with contextlib.suppress(Exception):  # the test may have stopped it already
        server.stop("immediate")
    server.remove()


@pytest.fixture(autouse=True)
def s3_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The recorder finds its S3 keys in the environment (boto3's chain)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.delenv("RECORDER_CONFIG", raising=False)
