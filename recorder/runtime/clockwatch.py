"""Noticing a step of the wall clock, which stamps live frames (see `core/clock.py`).

The wall clock minus the boot-time clock is constant while the wall clock only runs:
NTP's slewing moves it by at most half a millisecond a second, and both count a
suspended machine's sleep. A change of a second or more between two looks (at most a tick
apart) is a step: NTP's or an operator's, or a virtual machine's clock set on resume.
"""

from __future__ import annotations

import time
from collections.abc import Callable

STEP_NS = 1_000_000_000  # smaller changes are slewing, or within the jitter window anyway
_READ_NS = 10_000_000  # a read of both clocks that took longer is taken again
_TRIES = 5


def _boot_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


class ClockWatch:
    def __init__(
        self, wall: Callable[[], int] = time.time_ns, boot: Callable[[], int] = _boot_ns
    ) -> None:
        self._wall, self._boot = wall, boot
        self._base = self._read()

    def _read(self) -> int:
        """Wall minus boot time, read between two reads of the boot clock: a process
        descheduled between its reads would otherwise see a step that never was."""
        for _ in range(_TRIES):
            before, wall, after = self._boot(), self._wall(), self._boot()
            if after - before <= _READ_NS:
                break
        return wall - (before + after) // 2

    def step(self) -> int | None:
        """How far the wall clock was stepped since the last look (ns; forward is
        positive), or None. Slewing between looks is taken in, so it never adds up."""
        base = self._read()
        delta, self._base = base - self._base, base
        return delta if abs(delta) >= STEP_NS else None
