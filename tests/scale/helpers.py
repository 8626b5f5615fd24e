"""Configs, captures and archive sessions for the scale tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from recorder.compliance.factory import build_core
from recorder.config import Config, parse_config
from recorder.container.masterkey import MasterKey
from recorder.core.model import FrameBlock
from recorder.runtime.runner import LoopStats, drain, feed_blocks
from recorder.runtime.session import ArchiveSession
from recorder.runtime.sources import CaptureFile
from tests.compliance.helpers import T_2023, capture, make_call
from tests.scale.servers import S3Service as Seaweed

NS = 1_000_000_000

# Trading calls (+4930555...) are MiFID: five years, object-locked. Calls of +4940... are
# recorded by consent in a class that is locked but not protected by law (so that only
# the bucket's lock stops their erasure). Everything else is erasable.
POLICY = """
policy:
  local_numbers: ["+4930*"]
  rules:
    - name: trading
      purpose: mifid
      legal_basis: legal_obligation
      retention_class: mifid
      notice: "IVR TRD-1"
      number: ["+4930555*"]
    - name: archive-by-consent
      purpose: archive
      legal_basis: consent
      retention_class: vault
      notice: "IVR ARC-1"
      number: ["+4940*"]
    - name: quality
      purpose: quality
      legal_basis: legitimate_interests
      retention_class: quality
      notice: "IVR QA-2"
retention:
  classes:
    mifid: {years: 5, max_years: 7, obligation: "MiFID II Art 16(7)", lock: true}
    vault: {years: 4, lock: true}
    quality: {days: 90}
"""


def config_text(
    seaweed: Seaweed,
    bucket: str,
    *,
    sensor: str = "sensor-a",
    dsn: str | None = None,
    drain_s: float = 20.0,
    extra_s3: str = "",
) -> str:
    index = f'index: {{backend: postgresql, dsn: "{dsn}"}}\n' if dsn else ""
    return (
        f"sensor_id: {sensor}\n"
        "archive:\n"
        "  backend: s3\n"
        "  s3:\n"
        f'    endpoint: "{seaweed.endpoint}"\n'
        f"    bucket: {bucket}\n"
        "    path_style: true\n"
        f"    drain_timeout_s: {drain_s}\n"
        "    retry_max_s: 0.5\n"
        "    timeout_s: 2\n"
        "    audit_ship_interval_s: 0.2\n"
        f"{extra_s3}"
        f"{index}"
        f"{POLICY}"
    )


def write_config(path: Path, text: str) -> Config:
    path.write_text(text)
    return parse_config(text, str(path))


def calls_capture(path: Path, first: int, pairs: list[tuple[str, str]]) -> Path:
    """One call per (caller, callee), a minute apart from 2023-11-14, numbered from `first`."""
    calls = [
        make_call(T_2023 + (first + i) * 60 * NS, first + i, caller, callee, packets=25)
        for i, (caller, callee) in enumerate(pairs)
    ]
    return capture(path, *calls)


@contextmanager
def recording(
    root: Path, master: MasterKey, config: Config
) -> Iterator[tuple[ArchiveSession, LoopStats]]:
    """A session fed capture by capture, as `replay` does (closed on exit)."""
    session = ArchiveSession(root, master, "sensor", config)
    try:
        yield session, LoopStats()
    finally:
        session.close()


def feed_capture(session: ArchiveSession, loop: LoopStats, pcap: Path) -> None:
    """Record every call of one capture to its end (like one file of a replay), a block a
    frame: the writer commits after each, so a recording that closes is in the upload
    spool before the next call asks to be admitted (a big block would commit it later)."""
    core = build_core(session.config)
    blocks = (FrameBlock.of(f.linktype, [(f.ts_ns, f.data)]) for f in CaptureFile(pcap))
    feed_blocks(blocks, core, session.writer, loop)
    core.close()
    drain(core, session.writer)


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll `condition` until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {condition}")
        time.sleep(0.05)


def pairs(first: int, count: int = 3) -> list[tuple[str, str]]:
    """Distinct callers; the first of every three calls a trader (MiFID, locked)."""
    return [
        (f"+49777{first + i:03d}", "+4930555100" if i % 3 == 0 else "+4930200")
        for i in range(count)
    ]
