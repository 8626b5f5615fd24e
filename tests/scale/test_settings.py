"""Settings of the shared backends: checks with one-line messages, and S3 credentials
from a systemd credential (used against the real server) or the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from recorder.config import parse_config
from recorder.errors import ConfigError
from recorder.scale.s3conn import credential_values, load_credentials, make_client
from recorder.scale.store import S3Store
from tests.scale.servers import ACCESS_KEY, SECRET_KEY, Seaweed


@pytest.mark.parametrize(
    ("yaml", "message"),
    [
        ("archive: {backend: s3}", "archive.s3.bucket must be set for the s3 backend"),
        (
            "archive: {backend: s3, s3: {bucket: b, prefix: /x}}",
            "archive.s3.prefix must end with '/' and not start with one",
        ),
        (
            "archive: {s3: {spool_max_bytes: 0}}",
            "archive.s3.spool_max_bytes must be positive",
        ),
        (
            "archive: {s3: {verify: always}}",
            "archive.s3.verify must be one of 'head', 'read', not 'always'",
        ),
        ("index: {backend: postgresql}", "index.dsn must be set for the postgresql backend"),
        (
            "retention: {classes: {m: {years: 5, lock: yes-please}}}",
            "retention.classes.m.lock must be true or false, not 'yes-please'",
        ),
    ],
)
def test_bad_settings_are_named(yaml: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(yaml)
    assert str(info.value) == message


def test_lock_flag_and_defaults() -> None:
    config = parse_config("retention: {classes: {mifid: {years: 5, lock: true}}}")
    assert config.retention.classes["mifid"].lock is True
    s3 = config.archive.s3
    assert (s3.keep_local, s3.verify, s3.spool_max_bytes, s3.prefix) == (
        False,
        "head",
        10 << 30,
        "",
    )


def test_credential_file_forms() -> None:
    text = (
        "[default]\n# the bank's recorder user\naws_access_key_id = AK\naws_secret_access_key=SK\n"
    )
    assert credential_values(text, "c") == {
        "aws_access_key_id": "AK",
        "aws_secret_access_key": "SK",
    }
    with pytest.raises(ConfigError) as info:
        credential_values("aws_access_key_id = AK\n", "S3 credential /run/c/s3")
    assert str(info.value) == "S3 credential /run/c/s3 has no aws_secret_access_key"
    with pytest.raises(ConfigError) as info:
        credential_values("password: x\n", "c")
    assert str(info.value) == "c line 1: expected aws_access_key_id = ... lines"


def test_systemd_credential_is_used_against_the_server(
    seaweed: Seaweed, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    folder = tmp_path / "creds"
    folder.mkdir()
    (folder / "s3").write_text(
        f"aws_access_key_id={ACCESS_KEY}\naws_secret_access_key={SECRET_KEY}\n"
    )
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(folder))
    text = (
        f'archive: {{backend: s3, s3: {{endpoint: "{seaweed.endpoint}", bucket: {bucket},'
        " path_style: true, credential: s3}}"
    )
    settings = parse_config(text).archive.s3
    assert load_credentials(settings) == {
        "aws_access_key_id": ACCESS_KEY,
        "aws_secret_access_key": SECRET_KEY,
    }
    store = S3Store(make_client(settings), bucket)
    assert store.object_lock_enabled()
    info = store.put_bytes("probe", b"hello")
    head = store.head("probe", info.version_id)
    assert head is not None and head.size == 5 and head.sha256 in (info.sha256, "")
    assert store.get_bytes("probe", info.version_id) == b"hello"


def test_shared_index_needs_the_bucket(tmp_path: Path) -> None:
    from recorder.runtime.keyfile import generate_master_key
    from recorder.runtime.session import ArchiveSession

    config = parse_config('index: {backend: postgresql, dsn: "host=127.0.0.1 port=1"}')
    with pytest.raises(ConfigError) as info:
        ArchiveSession(tmp_path / "a", generate_master_key(), "t", config)
    assert str(info.value) == "index.backend postgresql needs archive.backend s3"
