"""Subcommands of the compliance controls: registered into the CLI."""

from __future__ import annotations

from typing import Any


def register(sub: Any, common: Any) -> None:
    """Add this area's subcommands to the `recorder` parser (see cli.Common)."""
    _ = (sub, common)
