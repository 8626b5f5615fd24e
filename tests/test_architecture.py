"""The core is sans-I/O: nothing under recorder/core imports a clock, files, sockets,
threads, the runtime shells, libpcap or Prometheus (DESIGN.md, "The principle")."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "recorder" / "core"
FORBIDDEN = {
    "os",
    "time",
    "socket",
    "threading",
    "multiprocessing",
    "asyncio",
    "select",
    "subprocess",
    "datetime",
    "random",
    "secrets",
    "logging",
    "sqlite3",
    "prometheus_client",
    "pylibpcap",
    "ctypes",
    "recorder.runtime",
    "recorder.compliance",
    "recorder.cli",
    "recorder.commands",
    "recorder.config",
}


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_core_imports_nothing_with_side_effects() -> None:
    offending = {}
    for path in sorted(CORE.rglob("*.py")):
        bad = {
            name
            for name in imported(path)
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
        }
        if bad:
            offending[str(path.relative_to(CORE))] = sorted(bad)
    assert offending == {}


def test_the_check_sees_imports() -> None:
    assert "os" in imported(
        Path(__file__).resolve().parents[1] / "recorder" / "runtime" / "writer.py"
    )
