"""An S3 client from `archive.s3`: endpoint, region, path-style addressing, and the
credentials of a systemd credential (`archive.s3.credential`, read from
`$CREDENTIALS_DIRECTORY`) or, without one, boto3's usual chain (the environment's
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile, an instance role).

The credential file holds `name = value` lines with the names of the AWS credentials file
(`aws_access_key_id`, `aws_secret_access_key`, optionally `aws_session_token`); blank
lines, `#` comments and a `[section]` header are ignored, so an AWS credentials file with
one profile works as it is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from recorder.config import S3Settings
from recorder.errors import ConfigError

_NAMES = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")


def credential_values(text: str, source: str) -> dict[str, str]:
    """The access key id, secret (and session token) in a credential file's text."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        name, sep, value = line.partition("=")
        name = name.strip().lower()
        if not sep or name not in _NAMES:
            raise ConfigError(f"{source} line {number}: expected aws_access_key_id = ... lines")
        values[name] = value.strip()
    for name in _NAMES[:2]:
        if not values.get(name):
            raise ConfigError(f"{source} has no {name}")
    return values


def load_credentials(settings: S3Settings) -> dict[str, str] | None:
    """Keys from the systemd credential when it is present; else None (boto3's chain)."""
    folder = os.environ.get("CREDENTIALS_DIRECTORY")
    if not settings.credential or not folder:
        return None
    path = Path(folder) / settings.credential
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"S3 credential {path} cannot be read: {exc}") from None
    return credential_values(text, f"S3 credential {path}")


def make_client(settings: S3Settings) -> Any:
    """A boto3 S3 client for `settings` (thread-safe; one per store)."""
    import boto3
    from botocore.config import Config as BotoConfig

    keys = load_credentials(settings) or {}
    config = BotoConfig(
        region_name=settings.region,
        s3={"addressing_style": "path" if settings.path_style else "auto"},
        retries={"max_attempts": 2, "mode": "standard"},  # the uploader does the long retries
        connect_timeout=settings.timeout_s,
        read_timeout=settings.timeout_s,
        tcp_keepalive=True,
    )
    return boto3.client(
        "s3",
        endpoint_url=settings.endpoint or None,
        config=config,
        **keys,
    )
