"""systemd's notify protocol (sd_notify(3)) without a dependency: one datagram of
`KEY=value` lines to the unix socket named by $NOTIFY_SOCKET ("@..." is abstract).

    notifier = Notifier.from_environment()
    notifier.notify("READY=1")            # Type=notify: the unit is started
    notifier.watchdog_due()               # True every WATCHDOG_USEC/2: send "WATCHDOG=1"

Outside systemd (no $NOTIFY_SOCKET) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, address: str | None, watchdog_usec: int = 0) -> None:
        self._address = address
        self._sock: socket.socket | None = None
        self.watchdog_s = watchdog_usec / 1_000_000
        self._next_ping = 0.0

    @classmethod
    def from_environment(cls) -> Notifier:
        """From $NOTIFY_SOCKET and $WATCHDOG_USEC (honouring $WATCHDOG_PID)."""
        address = os.environ.get("NOTIFY_SOCKET") or None
        usec = 0
        pid = os.environ.get("WATCHDOG_PID")
        if pid is None or pid == str(os.getpid()):
            try:
                usec = int(os.environ.get("WATCHDOG_USEC", "0"))
            except ValueError:
                usec = 0
        return cls(address, max(0, usec))

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *lines: str) -> bool:
        """Send the state lines; False (logged once) when systemd cannot be reached."""
        if self._address is None:
            return False
        target = "\0" + self._address[1:] if self._address.startswith("@") else self._address
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)  # a stalled reader must never stall the capture
            self._sock.sendto("\n".join(lines).encode(), target)
        except BlockingIOError:
            log.debug("systemd's notify socket is full; %s not sent", lines[0])
            return False
        except OSError as exc:
            log.warning("cannot notify systemd at %s: %s", self._address, exc.strerror or exc)
            self._address = None  # systemd is gone or never was: stop trying
            return False
        return True

    def watchdog_due(self, now: float | None = None) -> bool:
        """True when a WATCHDOG=1 ping is due (every half of WatchdogSec)."""
        if not self.watchdog_s or self._address is None:
            return False
        now = time.monotonic() if now is None else now
        if now < self._next_ping:
            return False
        self._next_ping = now + self.watchdog_s / 2
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
