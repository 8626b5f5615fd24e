"""Run `recorder run` as a real process on loopback and talk to it like systemd does:
READY/WATCHDOG over a $NOTIFY_SOCKET we own, signals, the metrics endpoint."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from recorder.runtime.keyfile import generate_master_key, write_key_file


def require_capture() -> None:
    """Live capture needs CAP_NET_RAW (root here); skip with the reason otherwise."""
    from recorder.runtime.libpcap import CaptureError, PcapHandle

    try:
        PcapHandle(
            "lo", snaplen=128, promiscuous=False, timeout_ms=10, buffer_bytes=1 << 20, bpf=""
        ).close()
    except CaptureError as exc:
        if os.environ.get("RECORDER_REQUIRE_TOOLS") == "1":
            pytest.fail(f"cannot capture on lo ({exc}) and RECORDER_REQUIRE_TOOLS=1")
        pytest.skip(f"cannot capture on lo: {exc}")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_udp_ports(n: int) -> list[int]:
    """`n` distinct UDP ports free right now (kept bound until all are chosen)."""
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [int(s.getsockname()[1]) for s in socks]
    for s in socks:
        s.close()
    return ports


def port_filter(ports: list[int], ranges: Sequence[tuple[int, int]] = ()) -> str:
    """A BPF filter for UDP on exactly these ports and port ranges."""
    terms = [f"port {p}" for p in ports] + [f"portrange {a}-{b}" for a, b in ranges]
    return f"udp and ({' or '.join(terms)})"


class Recorder:
    """One `recorder run` process on lo with its own archive, key and metrics port."""

    def __init__(
        self,
        tmp: Path,
        *extra: str,
        config: Path | None = None,
        bpf: str = "udp",
        key: Path | None = None,
    ) -> None:
        """`bpf` should name the test's own ports: other tests on this machine may be
        sending on loopback at the same time. `key`: a key file or key directory (default:
        a new key file in `tmp`)."""
        self.tmp = tmp
        self.archive = tmp / "archive"
        self.key = key or tmp / "master.key"
        if not self.key.exists():
            write_key_file(self.key, generate_master_key())
        self.metrics_port = free_port()
        self.args = [
            sys.executable, "-m", "recorder", "run",
            "--interface", "lo",
            "--filter", bpf,
            "--archive", str(self.archive),
            "--key", str(self.key),
            "--metrics-address", f"127.0.0.1:{self.metrics_port}",
            *extra,
        ]  # fmt: skip
        if config is not None:
            self.args += ["--config", str(config)]
        self.proc: subprocess.Popen[bytes] | None = None
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify_path = tmp / f"notify-{len(list(tmp.glob('notify-*')))}.sock"
        self.notify.bind(str(self.notify_path))
        self.notifications: list[str] = []
        self.stderr = tmp / "recorder.stderr"

    def start(self, timeout: float = 15.0) -> None:
        env = dict(os.environ, NOTIFY_SOCKET=str(self.notify_path), WATCHDOG_USEC="400000")
        env.pop("JOURNAL_STREAM", None)
        with self.stderr.open("ab") as err:
            self.proc = subprocess.Popen(self.args, env=env, stdout=err, stderr=err)
        self.wait_notification("READY=1", timeout)

    def wait_notification(self, line: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"recorder exited {self.proc.returncode}: {self.log()}")
            self.notify.settimeout(0.2)
            try:
                data = self.notify.recv(4096).decode()
            except TimeoutError:
                continue
            self.notifications += data.split("\n")
            if line in self.notifications:
                return
        raise AssertionError(f"no {line} from the recorder in {timeout} s: {self.log()}")

    def log(self) -> str:
        return self.stderr.read_text(errors="replace") if self.stderr.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> int:
        self.signal(signal.SIGTERM)
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(10)

    def scrape(self) -> dict[str, float]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def scrape_until(self, name: str, value: float, timeout: float = 5.0) -> dict[str, float]:
        """The metrics once `name` reads `value` (or at the deadline, for the caller to
        assert on): the core's timers (call ends, audio flushes) run once a second of
        capture time, so what follows a BYE shows up within about two seconds."""
        deadline = time.monotonic() + timeout
        metrics = self.scrape()
        while metrics.get(name) != value and time.monotonic() < deadline:
            time.sleep(0.1)
            metrics = self.scrape()
        return metrics

    def audit(self) -> list[dict[str, object]]:
        path = self.archive / "audit" / "audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]

    def wait_audit(self, event: str, timeout: float = 10.0) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [r for r in self.audit() if r["event"] == event]
            if found:
                return found[-1]
            time.sleep(0.05)
        raise AssertionError(f"no audit record {event}: {self.log()}")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.notify.close()


def collect_blocks(
    capture: Any, tick: Callable[[bool], None], blocks: list[Any], limit_s: float = 30.0
) -> None:
    """Append the blocks of a live capture (`LiveCapture`, `ProcessCapture`) to `blocks`
    until `tick` stops it, ticking every 0.05 s; fails past `limit_s`."""
    started = time.monotonic()

    def limited(idle: bool) -> None:  # (fails a capture that never yields, too)
        assert time.monotonic() - started < limit_s, f"no end after {limit_s} s"
        tick(idle)

    for block in capture.blocks(limited, 0.05):
        blocks.append(block)
        assert time.monotonic() - started < limit_s
