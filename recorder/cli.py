"""`recorder` command line: keygen, replay, list, export, verify.

Errors an operator can fix (a bad key file, a missing archive) are one line on stderr and
exit status 2; a verification failure exits 1.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from recorder import __version__
from recorder.errors import IntegrityError, RecorderError

DEFAULT_ARCHIVE = Path("archive")
DEFAULT_KEY = Path("master.key")


def _actor(args: argparse.Namespace) -> str:
    if getattr(args, "as_name", None):
        return str(args.as_name)
    for name in ("RECORDER_ACTOR", "SUDO_USER", "USER", "LOGNAME"):
        if os.environ.get(name):
            return os.environ[name]
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recorder", description="Passive SIP/RTP call recorder with encrypted recordings."
    )
    parser.add_argument("--version", action="version", version=f"recorder {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", required=True)

    def archive_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--archive",
            type=Path,
            default=DEFAULT_ARCHIVE,
            help=f"archive folder (default: ./{DEFAULT_ARCHIVE})",
        )

    def key_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--key",
            type=Path,
            default=DEFAULT_KEY,
            help=f"master key file (default: ./{DEFAULT_KEY})",
        )

    def shared_config_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config",
            type=Path,
            dest="shared_config",
            help="the node's config, for an archive on S3 and PostgreSQL (or RECORDER_CONFIG)",
        )

    def actor_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--as",
            dest="as_name",
            metavar="NAME",
            help="who is acting, for the audit trail (default: the login user)",
        )

    p = sub.add_parser("keygen", help="create a new 256-bit master key file (mode 0600)")
    p.add_argument("path", type=Path)
    p.add_argument("--archive", type=Path, help="also record the key's creation in this archive")
    actor_arg(p)

    p = sub.add_parser("replay", help="record every call in pcap/pcapng captures")
    p.add_argument("captures", type=Path, nargs="+")
    archive_arg(p)
    key_arg(p)
    actor_arg(p)
    p.add_argument("--config", type=Path, help="YAML config (policy, retention, limits)")
    p.add_argument(
        "--dev-key",
        action="store_true",
        help="generate the key file if it does not exist (development only)",
    )

    p = sub.add_parser("list", help="list recordings")
    archive_arg(p)
    p.add_argument("--json", action="store_true", help="print a JSON array")
    p.add_argument("--calls", action="store_true", help="list calls seen but not recorded")
    shared_config_arg(p)

    p = sub.add_parser("export", help="decrypt one recording to a 16-bit PCM WAV")
    p.add_argument("recording_id", nargs="?")
    p.add_argument("--subject", metavar="NUMBER", help="every recording of NUMBER, to folder -o")
    p.add_argument("-o", "--output", type=Path, required=True)
    archive_arg(p)
    key_arg(p)
    actor_arg(p)
    shared_config_arg(p)

    p = sub.add_parser("verify", help="check every recording and the audit trail")
    archive_arg(p)
    key_arg(p)
    actor_arg(p)
    shared_config_arg(p)

    # Feature areas add their own subcommands (and handlers named cmd_<command>).
    for module in _feature_modules():
        module.register(sub, Common(archive_arg, key_arg, actor_arg))
    return parser


@dataclass(frozen=True)
class Common:
    """The shared argument helpers, handed to each feature area's `register`."""

    archive_arg: Callable[[argparse.ArgumentParser], None]
    key_arg: Callable[[argparse.ArgumentParser], None]
    actor_arg: Callable[[argparse.ArgumentParser], None]


def _feature_modules() -> list[ModuleType]:
    from recorder.compliance import commands as compliance_commands
    from recorder.runtime import service_commands

    return [service_commands, compliance_commands]


def _handler(command: str) -> Callable[[argparse.Namespace, str], int]:
    from recorder import commands

    for module in [commands, *_feature_modules()]:
        handler = getattr(module, "cmd_" + command.replace("-", "_"), None)
        if handler is not None:
            return handler  # type: ignore[no-any-return]
    raise LookupError(f"no handler for {command}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    handler = _handler(args.command)
    try:
        if getattr(args, "shared_config", None) is not None:
            from recorder.config import load_config
            from recorder.runtime.archive import Archive
            from recorder.scale.backends import bind

            bind(Archive(args.archive), load_config(args.shared_config))
        return int(handler(args, _actor(args)))
    except IntegrityError as exc:  # stored data failed a check: like a failed verify
        print(f"recorder {args.command}: {exc}", file=sys.stderr)
        return 1
    except RecorderError as exc:
        print(f"recorder {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def print_json(obj: object) -> None:
    json.dump(obj, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
