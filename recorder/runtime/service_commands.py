"""Subcommands of the live service (`run`, `check-config`): registered into the CLI.

    recorder run --config /etc/recorder/recorder.yaml          # what systemd starts
    recorder run --interface lo --archive ./archive --key master.key
    recorder check-config --config /etc/recorder/recorder.yaml

Flags override single settings of the config file (or of the defaults without one).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from recorder.runtime.fdlimit import raise_open_files_limit
from recorder.runtime.servicecfg import (
    OVERRIDES,
    capture_filter_caveat,
    check_capture_filter,
    check_compliance_settings,
    key_path,
    load_keys,
    load_service_config,
)


def register(sub: Any, common: Any) -> None:
    """Add this area's subcommands to the `recorder` parser (see cli.Common)."""
    p = sub.add_parser("run", help="record live calls from a network interface (the service)")
    _options(p)
    p.add_argument("--as", dest="as_name", metavar="NAME", help="actor for the audit trail")
    p = sub.add_parser("check-config", help="validate the config and the key file, then exit")
    _options(p)


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML config (default: every setting's default)")
    p.add_argument("--interface", help="capture.interface (a name, or 'any')")
    p.add_argument("--filter", help="capture.filter (BPF)")
    p.add_argument("--archive", type=Path, help="archive.path")
    p.add_argument("--key", type=Path, help="keys.file (a master key file or key directory)")
    p.add_argument("--metrics-address", help="metrics.address (HOST:PORT)")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log.level")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {option: getattr(args, option) for option in OVERRIDES}


def cmd_run(args: argparse.Namespace, actor: str) -> int:
    from recorder.runtime.runner import tune_gc
    from recorder.runtime.service import Service

    overrides = _overrides(args)
    config = load_service_config(args.config, overrides)
    keys = load_keys(config)
    service = Service(config, keys, actor, config_path=args.config, overrides=overrides)
    tune_gc()
    return service.run()


def cmd_check_config(args: argparse.Namespace, actor: str) -> int:
    config = load_service_config(args.config, _overrides(args))
    keys = load_keys(config)
    check_capture_filter(config)
    caveat = capture_filter_caveat(config.capture.filter)
    compliance = check_compliance_settings(config)
    source = args.config or "defaults"
    capture = config.capture
    ring = f" ({len(keys.keys)} keys)" if len(keys.keys) > 1 else ""
    print(
        f"config OK: {source} (interface {capture.interface}, archive {config.archive.path}, "
        f"key {key_path(config)} kid {keys.current.kid}{ring})"
    )
    print(compliance)
    if caveat is not None:
        print(f"warning: {caveat}")
    _, files_caveat = raise_open_files_limit()
    if files_caveat is not None:
        print(f"warning: {files_caveat}")
    return 0
