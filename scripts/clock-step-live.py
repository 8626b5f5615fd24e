"""By hand, as root, on a machine of no other use: step this machine's real clock in the
middle of a live call and check that `recorder run` records the call whole.

    python scripts/clock-step-live.py [--step-s -30] [--reader-process true|false]

It starts the service on lo (tests/service/harness.py), sets up a call with real UDP peers
(tests/service/peers.py), talks 3 s, steps CLOCK_REALTIME by --step-s, talks 3 s more, hangs
up, steps the clock back by the same amount and stops the service. It then checks that the
recording holds every packet each side sent, in order and without a gap, that its start is
the wall clock of the first packet, and that the step was audited. Not a test: it moves the
clock of the whole machine for a few seconds (tests/service/test_clock_step.py stands in a
watch for the real clock instead).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.service.harness import Recorder, port_filter, require_capture
from tests.service.peers import LoopbackCall
from tests.service.recordings import export_pcm, find, recordings, ulaw, verify


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def step_clock(delta_ns: int) -> None:
    """CLOCK_REALTIME += delta_ns (needs CAP_SYS_TIME)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    target = time.clock_gettime_ns(time.CLOCK_REALTIME) + delta_ns
    spec = _Timespec(target // 10**9, target % 10**9)
    if libc.clock_settime(time.CLOCK_REALTIME, ctypes.byref(spec)) != 0:
        raise OSError(ctypes.get_errno(), "clock_settime")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--step-s", type=float, default=-30.0)
    parser.add_argument("--reader-process", choices=["true", "false"], default="true")
    args = parser.parse_args()
    require_capture()
    delta = int(args.step_s * 1e9)
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        call = LoopbackCall("clock-step@live")
        config = tmp / "recorder.yaml"
        config.write_text(f"capture:\n  reader_process: {args.reader_process}\n")
        recorder = Recorder(tmp, bpf=port_filter(call.ports), config=config)
        stepped = False
        try:
            recorder.start()
            call.setup()
            first_ns = time.time_ns()
            call.talk(150)
            step_clock(delta)
            stepped = True
            call.talk(150)
            call.bye()
            time.sleep(1.5)  # the BYE's linger, then the sweep closes it
            step_clock(-delta)
            stepped = False
            assert recorder.stop() == 0, recorder.log()
        finally:
            if stepped:
                step_clock(-delta)
            call.close()
            recorder.close()
        [row] = recordings(recorder.archive)
        print(f"recording: {row['start']} .. {row['end']}, {row['duration_s']} s, {row['reason']}")
        pcm = export_pcm(recorder.archive, recorder.key, str(row["id"]), tmp / "call.wav")
        whole = True
        for side in (0, 1):
            sent = ulaw(b"".join(call.sent[side]))
            before = find(pcm[:, side], ulaw(b"".join(call.sent[side][:150])))
            after = find(pcm[:, side], ulaw(b"".join(call.sent[side][150:])))
            at = find(pcm[:, side], sent)
            print(
                f"side {side}: {len(sent) / 8000:.2f} s sent; before the step found at sample "
                f"{before}, after it at {after} (-1: not there); whole at {at}"
            )
            whole &= 0 <= at < 80 and np.array_equal(pcm[at : at + len(sent), side], sent)
        start_s = first_ns / 1e9
        print(f"first packet sent at {time.strftime('%H:%M:%S', time.gmtime(start_s))} UTC")
        steps = [r for r in recorder.audit() if r["event"] == "capture.clock_stepped"]
        print("audited steps:", [(r["delta_ms"], r["at"]) for r in steps])
        print(verify(recorder.archive, recorder.key).strip().splitlines()[-1])
        first = int(str(steps[0]["delta_ms"])) if steps else None
        ok = whole and first is not None and abs(first - delta // 10**6) < 1000
        print("PASS: recorded whole across the step" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
