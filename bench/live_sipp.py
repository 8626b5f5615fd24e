"""Benchmark (not a test): how many concurrent calls `recorder run` records live on this
machine with zero capture drops. sipp places calls with PCMA audio both ways on loopback
(the same peers as tests/service/test_sipp.py) at rising levels of concurrency; for each
level we read the recorder's metrics: kernel drops (libpcap ps_drop), RTP packets matched
versus sent, capture lag. sipp shares the CPU with the recorder, so the figure is a floor
for a dedicated appliance.

    sudo python bench/live_sipp.py [--levels 25,50,100,200] [--hold 10]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.service.harness import Recorder, free_udp_ports, port_filter
from tests.service.sipp import (
    start_uas,
    uac_command,
    write_audio_pcap,
    write_scenarios,
)


def run_level(folder: Path, concurrent: int, hold_s: int) -> dict[str, float]:
    packets = hold_s * 50
    write_audio_pcap(folder / "caller.pcap", packets, side=0)
    write_audio_pcap(folder / "callee.pcap", packets, side=1)
    uac_sf, uas_sf = write_scenarios(
        folder, folder / "caller.pcap", folder / "callee.pcap", pause_ms=hold_s * 1000 + 300
    )
    calls = concurrent * 2  # ramp up over one hold time, then keep `concurrent` up
    rate = concurrent / hold_s
    uas_port, uac_port = free_udp_ports(2)
    ranges = [(16000, 25999), (36000, 45999)]
    recorder = Recorder(folder, bpf=port_filter([uas_port, uac_port], ranges))
    recorder.start()
    uas = start_uas("sipp", uas_sf, uas_port, 16000, folder / "uas.log")
    cpu0 = os.times()
    started = time.monotonic()
    try:
        time.sleep(0.3)
        uac = subprocess.run(
            uac_command("sipp", uac_sf, uas_port, uac_port, 36000, calls, rate),
            capture_output=True,
            text=True,
            timeout=hold_s * 10 + 120,
        )
        time.sleep(2)
        m = recorder.scrape()
        recorder.stop(timeout=120)
    finally:
        uas.terminate()
        uas.wait(30)
        recorder.close()
    cpu1 = os.times()
    wall = time.monotonic() - started
    return {
        "concurrent": concurrent,
        "calls": calls,
        "uac_ok": float(uac.returncode == 0),
        "recorded": m["recorder_recordings_written_total"],
        "rtp_matched": m["recorder_rtp_packets_total"],
        "rtp_sent": 2 * calls * packets,
        "kernel_dropped": m["recorder_capture_kernel_dropped_packets_total"],
        "frames": m["recorder_capture_packets_total"],
        "lag_s": m["recorder_capture_lag_seconds"],
        "children_cpu_s": (cpu1.children_user + cpu1.children_system)
        - (cpu0.children_user + cpu0.children_system),
        "wall_s": wall,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="25,50,100,150,200,300")
    parser.add_argument("--hold", type=int, default=10, help="seconds of audio per call")
    args = parser.parse_args()
    best = 0
    print(f"{os.cpu_count()} CPUs; calls of {args.hold} s, PCMA both ways (100 packets/s a call)")
    for level in (int(x) for x in args.levels.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            r = run_level(Path(tmp), level, args.hold)
        clean = (
            r["kernel_dropped"] == 0
            and r["recorded"] == r["calls"]
            and r["rtp_matched"] == r["rtp_sent"]
        )
        print(
            f"concurrent {level:4d}: recorded {int(r['recorded'])}/{r['calls']}, "
            f"rtp {int(r['rtp_matched'])}/{int(r['rtp_sent'])}, "
            f"kernel drops {int(r['kernel_dropped'])}, lag {r['lag_s']:.3f} s, "
            f"uac {'ok' if r['uac_ok'] else 'FAILED'}, cpu {r['children_cpu_s']:.0f} s "
            f"in {r['wall_s']:.0f} s -> {'clean' if clean else 'NOT clean'}",
            flush=True,
        )
        if not clean:
            break
        best = level
    print(f"sustained with zero capture drops: {best} concurrent calls")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
