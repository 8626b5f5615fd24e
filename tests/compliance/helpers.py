"""Captures and CLI helpers for the compliance tests: calls between numbers, with audio of
known bytes, optional RFC 4733 digits and extra INVITE headers."""

from __future__ import annotations

import json
import struct
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from recorder.cli import main
from tests.builders import NS, CallBuilder, rtp, sdp, sip, write_pcap

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

MS = 1_000_000
T_2023 = 1_700_000_000 * NS  # 2023-11-14T22:13:20Z: quality (90 d) has expired, MiFID not
T_2020 = 1_590_000_000 * NS  # 2020-05-20T18:40:00Z: even five years have passed

CONFIG = """
policy:
  local_domains: [bank.example]
  local_numbers: ["+4930*"]
  opt_out:
    header: X-Recording-Opt-Out
    dtmf: "*9"
  rules:
    - name: private-lines
      record: false
      number: ["+4930999*"]
    - name: trading
      purpose: mifid
      legal_basis: legal_obligation
      retention_class: mifid
      notice: "IVR announcement TRD-1 v3 (de, en); client agreement 12"
      number: ["+4930555*"]
    - name: quality
      purpose: quality
      legal_basis: legitimate_interests
      retention_class: quality
      notice: "IVR announcement QA-2 v1"
      direction: [inbound]
retention:
  classes:
    mifid: {years: 5, max_years: 7, obligation: "MiFID II Art 16(7)"}
    quality: {days: 90}
pci:
  dtmf: {pause: "*1", resume: "#1"}
  max_pause_s: 60
"""


def payload(i: int, side: int, salt: int) -> bytes:
    """160 µ-law bytes, distinct for every (packet, side, call)."""
    return bytes((i * 7 + k * (3 + side) + salt * 31) % 256 for k in range(160))


def ulaw(data: bytes) -> np.ndarray:
    return np.frombuffer(audioop.ulaw2lin(data, 2), "<i2")


def dtmf(digit: str) -> bytes:
    """One RFC 4733 event packet payload: event, E bit + volume 10, duration 160."""
    return struct.pack("!BBH", "0123456789*#ABCD".index(digit), 0x80 | 10, 160)


@dataclass
class Call(CallBuilder):
    """A CallBuilder whose INVITE can carry extra headers."""

    extra: list[tuple[str, str]] = field(default_factory=list)

    def invite(self, t_ns: int) -> None:
        body = sdp(self.caller_ip, self.caller_rtp, self.pts)
        headers = [*self._dialog(False), ("CSeq", "1 INVITE"), *self.extra]
        msg = sip(f"INVITE sip:{self.callee}@example.com SIP/2.0", headers, body)
        self.sip_from_caller(t_ns, msg)


def make_call(
    t0: int,
    n: int,
    caller: str,
    callee: str,
    *,
    packets: int = 50,
    extra: list[tuple[str, str]] | None = None,
    callee_digits: dict[int, str] | None = None,
) -> Call:
    """Call number `n` (distinct ports, Call-ID and audio): INVITE at t0, answer at +0.5 s,
    `packets` of 20 ms from each side from +1 s (callee 5 ms later), BYE after the audio.
    `callee_digits` replaces the callee's packet i by an RFC 4733 digit."""
    call = Call(
        call_id=f"call-{n}@test",
        caller=caller,
        callee=callee,
        caller_rtp=40000 + 2 * n,
        callee_rtp=50000 + 2 * n,
        extra=extra or [],
    )
    call.invite(t0)
    call.answer(t0 + 500 * MS)
    start = t0 + 1000 * MS
    digits = callee_digits or {}
    for i in range(packets):
        call.rtp_from_caller(
            start + i * 20 * MS, rtp(0, 100 + i, 1000 + 160 * i, 0xA000 + n, payload(i, 0, n))
        )
        if i in digits:
            packet = rtp(101, 7 + i, 5000 + 160 * i, 0xB000 + n, dtmf(digits[i]))
        else:
            packet = rtp(0, 7 + i, 5000 + 160 * i, 0xB000 + n, payload(i, 1, n))
        call.rtp_from_callee(start + i * 20 * MS + 5 * MS, packet)
    call.bye(start + packets * 20 * MS + 200 * MS)
    return call


def capture(path: Path, *calls: Call) -> Path:
    frames = sorted((f for c in calls for f in c.frames), key=lambda f: f.ts_ns)
    return write_pcap(path, frames)


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@dataclass
class Archive:
    """An archive made through the CLI, with its key and config."""

    root: Path
    key: Path
    config: Path | None
    tmp: Path

    def cli(
        self, capsys: pytest.CaptureFixture[str], *args: str, key: bool = False
    ) -> tuple[int, str, str]:
        extra = ["--key", str(self.key)] if key else []
        return run_cli(capsys, *args, "--archive", str(self.root), *extra, "--as", "dpo-1")

    def replay(self, capsys: pytest.CaptureFixture[str], pcap: Path) -> str:
        cfg = ["--config", str(self.config)] if self.config else []
        code, out, err = run_cli(
            capsys, "replay", "--archive", self.root, "--key", self.key, *cfg, pcap
        )
        assert code == 0, err
        return out

    def rows(self, capsys: pytest.CaptureFixture[str]) -> dict[str, dict]:
        code, out, _ = run_cli(capsys, "list", "--archive", self.root, "--json")
        assert code == 0
        return {row["call_id"]: row for row in json.loads(out)}

    def audit(self) -> list[dict]:
        text = (self.root / "audit" / "audit.jsonl").read_text()
        return [json.loads(line) for line in text.splitlines()]


def new_archive(tmp: Path, capsys: pytest.CaptureFixture[str], config: str | None) -> Archive:
    key = tmp / "master.key"
    root = tmp / "archive"
    assert run_cli(capsys, "keygen", key, "--archive", root)[0] == 0
    cfg = None
    if config is not None:
        cfg = tmp / "recorder.yaml"
        cfg.write_text(config)
    return Archive(root, key, cfg, tmp)


def rfc(ns: int) -> str:
    return datetime.fromtimestamp(ns // NS, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
