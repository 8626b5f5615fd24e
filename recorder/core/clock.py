"""Keeping the core's clock continuous when the capture clock is stepped.

Live frames are stamped by the kernel from the system's wall clock, which NTP, an operator
or a resumed virtual machine can step by seconds or hours while calls go on. The core runs
on capture time: stepped back, every call's audio was placed behind what it had already
written (lost, for as long as the step) and its timers stopped; stepped forward past the
idle time-out, every call in progress was ended and the rest of its audio dropped as
unsignalled RTP.

The live shell knows when the wall clock steps (it compares it with the boot-time clock,
`runtime/clockwatch.py`) and tells this class, sans I/O: `stepped(delta)`. The first frame
that shows the step, a jump of at least half of it from the newest capture time, starts a
new segment (on a quiet link, the shell's timer tick does, once no frame stamped before the
step can still come: `time`): from it on, `shift` takes the step back out of every time
handed to the core, so the core sees one continuous clock and every call goes on where it
was. What the core reports as wall time (a recording's start, a marker, an unrecorded
call's first and last packet) is turned back into the wall clock of its segment by
`event`. A replay never calls `stepped`: a capture file's own times are its clock.
"""

from __future__ import annotations

import bisect
import dataclasses

import numpy as np
from numpy.typing import NDArray

from recorder.core.events import (
    CallNotRecorded,
    Event,
    RecordingEnded,
    RecordingMarker,
    RecordingStarted,
)
from recorder.core.model import FrameBlock

MAX_SEGMENTS = 1024  # steps remembered for converting times back (older: the oldest kept)


@dataclasses.dataclass(frozen=True, slots=True)
class ClockStep:
    """A step taken out of the core's clock: `delta_ns` (the wall clock's jump) from the
    core time `at_ns` on."""

    delta_ns: int
    at_ns: int


class SteppedClock:
    """Capture times in (wall clock, possibly stepped), continuous core times out."""

    def __init__(self) -> None:
        self.shift_ns = 0  # added to capture times: minus every step applied so far
        self.pending_ns: int | None = None  # a step announced, not yet seen in the frames
        self.applied: list[ClockStep] = []  # for the shell to log and audit (it empties it)
        self._starts: list[int] = []  # core times at which each segment starts, ascending
        self._shifts: list[int] = []  # the shift of each segment
        self._recording_shifts: dict[int, int] = {}  # serial -> shift at its start

    def stepped(self, delta_ns: int) -> None:
        """The wall clock jumped by `delta_ns` (positive: forward) since the last frame
        or time handed over."""
        self.pending_ns = (self.pending_ns or 0) + delta_ns
        if self.pending_ns == 0:
            self.pending_ns = None

    def block(self, block: FrameBlock, now_ns: int) -> FrameBlock:
        """`block` with core times; `now_ns` is the core's newest time before it."""
        if self.pending_ns is None:
            if not self.shift_ns:
                return block
            return dataclasses.replace(block, times=block.times + self.shift_ns)
        times = block.times + self.shift_ns
        if len(times):
            newest = np.maximum.accumulate(np.concatenate(([now_ns], times[:-1])))
            hits = np.flatnonzero(self._shows_step(times - newest))
            if len(hits) and (delta := self._take_step(now_ns)) is not None:
                k = int(hits[0])
                times[k:] -= delta
                self._begin(delta, int(times[k]))
        return dataclasses.replace(block, times=times)

    def time(self, t_ns: int, now_ns: int) -> int:
        """One capture time (a timer tick, the shutdown) as core time. A pending step is
        taken here, wherever the time falls: the shell calls this only once every frame
        stamped before the step has been handed over (on an idle tick, a while after it
        noticed the step), so that a quiet link's timers do not wait for a frame."""
        t = t_ns + self.shift_ns
        if self.pending_ns is not None and (delta := self._take_step(now_ns)) is not None:
            t -= delta
            self._begin(delta, t)
        return t

    def core_time(self, wall_ns: int) -> int:
        """A wall-clock time as core time, for another thread (the control socket's
        stamp of a PCI resume, which must never take effect early): while a step is
        pending, the later of the two readings."""
        pending, shift = self.pending_ns, self.shift_ns
        t = wall_ns + shift
        return t if pending is None else max(t, t - pending)

    def _shows_step(self, jumps: NDArray[np.int64]) -> NDArray[np.bool_]:
        """Jumps from the newest capture time that are the announced step: at least half
        of it, in its direction (frames reorder by milliseconds; steps are of seconds)."""
        assert self.pending_ns is not None
        half = self.pending_ns // 2
        shows: NDArray[np.bool_] = jumps >= half if self.pending_ns > 0 else jumps <= half
        return shows

    def _take_step(self, now_ns: int) -> int | None:
        """Take the pending step out of the shift; None when there is nothing to keep
        continuous (no frame seen yet: the new wall clock simply is the clock)."""
        delta = self.pending_ns
        if delta is not None and now_ns:
            self.shift_ns -= delta  # before the step stops pending: see `core_time`
        self.pending_ns = None
        return delta if now_ns else None

    def _begin(self, delta_ns: int, at_ns: int) -> None:
        self.applied.append(ClockStep(delta_ns, at_ns))
        self._starts.append(at_ns)
        self._shifts.append(self.shift_ns)
        if len(self._starts) > MAX_SEGMENTS:
            del self._starts[0], self._shifts[0]

    def wall(self, t_ns: int) -> int:
        """The wall-clock time of core time `t_ns` (in the segment it falls in)."""
        return t_ns - self._shift_at(t_ns)

    def _shift_at(self, t_ns: int) -> int:
        k = bisect.bisect_right(self._starts, t_ns)
        return self._shifts[k - 1] if k else 0

    def event(self, event: Event) -> Event:
        """`event` with wall-clock times. A recording keeps its start's segment to its
        end, so that its end is still its start plus its audio."""
        if not self._starts:
            return event  # no step yet: core time is wall time
        if isinstance(event, RecordingStarted):
            shift = self._recording_shifts[event.serial] = self._shift_at(event.start_ns)
            return dataclasses.replace(event, start_ns=event.start_ns - shift)
        if isinstance(event, RecordingEnded):
            # (Not known: it started before the first step, when core time was wall time.)
            shift = self._recording_shifts.pop(event.serial, 0)
            return dataclasses.replace(event, end_ns=event.end_ns - shift)
        if isinstance(event, RecordingMarker):
            return dataclasses.replace(event, at_ns=self.wall(event.at_ns))
        if isinstance(event, CallNotRecorded):
            return dataclasses.replace(
                event, first_ns=self.wall(event.first_ns), last_ns=self.wall(event.last_ns)
            )
        return event
