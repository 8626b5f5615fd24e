"""PCI DSS pause and resume inside the core's loop: DTMF patterns, a pause time-out, and
DTMF opt-out. Pure (no I/O): it runs in the capture loop, on capture time.

While a call is paused the core places no audio (the recording holds silence of the same
length) and emits `RecordingMarker`s that the writer audits. Digits are kept only in memory,
only the last few per call side (as many as the longest pattern), and are never logged or
stored: markers say "DTMF pattern", never which digits.
"""

from __future__ import annotations

from recorder.core.limits import CoreLimits
from recorder.core.pipeline import RecorderCore
from recorder.core.policy import RecordingPolicy

NS_PER_S = 1_000_000_000


class DtmfControl:
    """`DtmfListener` that pauses, resumes or stops (opt-out) a call's recording when the
    RFC 4733 digits of one side end with a configured pattern. `core` is set by the core's
    builder (`factory.build_core`)."""

    def __init__(self, pause: str = "", resume: str = "", opt_out: str = "") -> None:
        self.core: RecorderCore | None = None
        self._pause, self._resume, self._opt_out = pause, resume, opt_out
        self._keep = max(len(pause), len(resume), len(opt_out), 1)
        self._recent: dict[tuple[int, int], str] = {}  # (serial, side) -> last digits

    def on_digit(self, call_serial: int, side: int, digit: str, now_ns: int) -> None:
        core = self.core
        if core is None:
            return
        key = (call_serial, side)
        recent = (self._recent.get(key, "") + digit)[-self._keep :]
        call = core.calls.by_serial(call_serial)
        paused = call is not None and call.paused_since_ns is not None
        if self._opt_out and recent.endswith(self._opt_out):
            core.stop_recording(call_serial, now_ns, "opt-out (DTMF)")
            recent = ""
        elif paused and self._resume and recent.endswith(self._resume):
            core.resume(call_serial, now_ns, "DTMF pattern")
            recent = ""
        elif not paused and self._pause and recent.endswith(self._pause):
            core.pause(call_serial, now_ns, "DTMF pattern")
            recent = ""
        self._recent[key] = recent

    def forget_ended(self, core: RecorderCore) -> None:
        """Drop the digits of calls that have ended (called on every timer sweep)."""
        if not self._recent:
            return
        live = {call.serial for call in core.calls}
        for key in [k for k in self._recent if k[0] not in live]:
            del self._recent[key]


class ComplianceCore(RecorderCore):
    """The recorder core with a pause time-out: a pause that nobody ends (a forgotten
    resume, a lost pattern) ends `max_pause_s` of capture time after it began, at the next
    timer sweep (so a little later, never earlier)."""

    def __init__(
        self,
        limits: CoreLimits | None = None,
        policy: RecordingPolicy | None = None,
        dtmf: DtmfControl | None = None,
        max_pause_s: float = 300.0,
    ) -> None:
        super().__init__(limits, policy=policy, dtmf_listener=dtmf)
        self._dtmf = dtmf
        if dtmf is not None:
            dtmf.core = self
        self._max_pause_ns = int(max_pause_s * NS_PER_S)
        self._deadlines: dict[int, int] = {}  # serial -> capture time the pause ends

    def pause(self, serial: int, now_ns: int, reason: str) -> bool:
        paused = super().pause(serial, now_ns, reason)
        if paused:
            self._deadlines[serial] = now_ns + self._max_pause_ns
        return paused

    def resume(self, serial: int, now_ns: int, reason: str) -> bool:
        self._deadlines.pop(serial, None)
        return super().resume(serial, now_ns, reason)

    def handle_timer(self, now_ns: int) -> None:
        super().handle_timer(now_ns)
        now = self.now_ns
        for serial, deadline in list(self._deadlines.items()):
            if now >= deadline:
                self.resume(serial, now, "pause time-out")
        if self._dtmf is not None:
            self._dtmf.forget_ended(self)
