"""The local control interface for PCI DSS pause/resume: a Unix stream socket that a CTI
or agent desktop calls, authenticated by a shared token kept in a 0600 file.

Protocol: one JSON object per connection, one line each way::

    -> {"token": "...", "action": "pause", "call_id": "..."}        (or "number": "+49...")
    <- {"ok": true, "calls": 1, "changed": 1}

Actions: `pause`, `resume`, `stop` (opt-out: the rest of the call is not recorded).
An optional `reason` (short text, audited with the marker) says who or why.

Threads: a socket thread accepts, reads and authenticates; the request waits in a queue
until the capture loop calls `drain(core)`, which is the only place the core is touched
(the core is single-threaded and sans-I/O). The socket thread then answers.

Timing (live capture, `clock` given): a pause takes effect at the core's capture time when
the loop applies it, which is never later than the request (packets still waiting in the
capture ring are silenced too: more silence, never less). A resume takes effect at the
wall-clock time the request arrived, or later: audio captured before the agent resumed
but processed after (a capture backlog, the kernel's block timeout) stays silent. (The
arrival is stamped in the core's time, which a step of the system clock does not move.)
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import queue
import socket
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recorder.core.pipeline import RecorderCore
from recorder.errors import ConfigError

log = logging.getLogger(__name__)

MAX_REQUEST = 4096
ACTIONS = ("pause", "resume", "stop")
_REPLY_WAIT_S = 5.0
_READ_TIMEOUT_S = 2.0


@dataclass
class ControlRequest:
    action: str
    call_id: str | None
    number: str | None
    reason: str
    received_ns: int = 0  # core time when the request arrived (0: not stamped)
    reply: queue.Queue[dict[str, Any]] = field(default_factory=lambda: queue.Queue(maxsize=1))


def read_token(path: Path) -> bytes:
    """The shared secret: a file readable by its owner only, at least 16 bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        raise ConfigError(f"control token file {path} cannot be read: {exc.strerror}") from None
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & 0o077:
            raise ConfigError(f"control token file {path} is readable by others (mode {mode:04o})")
        token = os.read(fd, 1024).strip()
    finally:
        os.close(fd)
    if len(token) < 16:
        raise ConfigError(f"control token file {path} holds fewer than 16 bytes")
    return token


class ControlServer:
    """Start with `start()`, call `drain(core)` from the capture loop (often: each pass),
    `stop()` at shutdown."""

    def __init__(
        self, socket_path: Path, token_path: Path, *, clock: Callable[[], int] | None = None
    ) -> None:
        """`clock` (live capture only: the wall clock in the core's capture time, which
        differs from it only after a step of the system clock) stamps each request as it
        arrives; a resume never takes effect before it."""
        self.socket_path = Path(socket_path)
        self._clock = clock
        self._token = read_token(token_path)
        self._requests: queue.Queue[ControlRequest] = queue.Queue(maxsize=64)
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        self._remove_stale_socket()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # the socket is created 0600: only the service user connects
        try:
            sock.bind(str(self.socket_path))
        finally:
            os.umask(old)
        sock.listen(16)
        sock.settimeout(0.2)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)
        self._thread.start()

    def _remove_stale_socket(self) -> None:
        """A socket left by a crash is removed; any other file is refused, never deleted
        (a mistyped path must not cost a config file)."""
        try:
            mode = self.socket_path.lstat().st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise ConfigError(f"control socket {self.socket_path} exists and is not a socket")
        self.socket_path.unlink()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self._sock is not None:
            self._sock.close()
            self.socket_path.unlink(missing_ok=True)

    def drain(self, core: RecorderCore) -> int:
        """Apply every waiting request to the core at its current capture time."""
        done = 0
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return done
            request.reply.put(apply_request(core, request))
            done += 1

    # -- socket thread ------------------------------------------------------------------

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                try:
                    self._handle(conn)
                except OSError as exc:
                    log.warning("control connection failed: %s", exc)

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(_READ_TIMEOUT_S)
        data = b""
        while b"\n" not in data and len(data) <= MAX_REQUEST:
            chunk = conn.recv(MAX_REQUEST + 1 - len(data))
            if not chunk:
                break
            data += chunk
        reply = self._answer(data.partition(b"\n")[0])
        conn.sendall(json.dumps(reply).encode() + b"\n")

    def _answer(self, line: bytes) -> dict[str, Any]:
        request, problem = parse_request(line, self._token)
        if request is None:
            log.warning("control request refused: %s", problem)
            return {"ok": False, "error": problem}
        if self._clock is not None:
            request.received_ns = self._clock()
        try:
            self._requests.put_nowait(request)
        except queue.Full:
            return {"ok": False, "error": "busy"}
        try:
            return request.reply.get(timeout=_REPLY_WAIT_S)
        except queue.Empty:
            return {"ok": False, "error": "the recorder did not answer in time"}


def parse_request(line: bytes, token: bytes) -> tuple[ControlRequest | None, str]:
    """A checked request, or None and why (fixed words: nothing from the request echoed)."""
    if len(line) > MAX_REQUEST:
        return None, "request too long"
    try:
        data = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None, "not JSON"
    if not isinstance(data, dict):
        return None, "not a JSON object"
    given = data.get("token")
    if not isinstance(given, str) or not hmac.compare_digest(given.encode(), token):
        return None, "bad token"
    action, call_id, number = data.get("action"), data.get("call_id"), data.get("number")
    if action not in ACTIONS:
        return None, "unknown action"
    if not (isinstance(call_id, str) or isinstance(number, str)):
        return None, "needs call_id or number"
    if call_id is not None and not isinstance(call_id, str):
        return None, "call_id must be a string"
    if number is not None and not isinstance(number, str):
        return None, "number must be a string"
    reason = data.get("reason", "")
    if not isinstance(reason, str):
        return None, "reason must be a string"
    # Audited as the marker's detail: printable, short, and never digits (PCI: a reason
    # must not become a channel for card data).
    clean = "".join(c for c in reason[:80] if c.isprintable() and not c.isdigit())
    return ControlRequest(str(action), call_id, number, f"control: {clean}".strip()), ""


def apply_request(core: RecorderCore, request: ControlRequest) -> dict[str, Any]:
    """Run one request on the core (capture loop thread only)."""
    serials = core.find_calls(call_id=request.call_id, number=request.number)
    now = core.now_ns
    if request.action == "resume":
        now = max(now, request.received_ns)  # audio captured before the resume stays silent
    act = {"pause": core.pause, "resume": core.resume, "stop": core.stop_recording}[request.action]
    changed = sum(1 for serial in serials if act(serial, now, request.reason))
    return {"ok": bool(serials), "calls": len(serials), "changed": changed}


def send_request(socket_path: Path, request: dict[str, Any], timeout_s: float = 10.0) -> Any:
    """Client side (the `recorder control` command, tests): one request, one reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        sock.connect(str(socket_path))
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return json.loads(data)
