"""Benchmark (not a test): live capture at rates sipp cannot generate. The load capture of
bench/loadgen.py (N concurrent G.711 calls, 100 packets/s each) is sent onto loopback by
`tcpreplay` at the capture's own pace, while `recorder run` records it from lo; for each
level, with the ring read in a process of its own (capture.reader_process: true, both
cores) and in one process, we read the kernel's drop counter, the frames and RTP packets
the recorder took, the calls recorded and the recorder's CPU seconds (all its processes).
tcpreplay shares the two cores (about one core at 150k packets/s), so the figures are a
floor for a dedicated appliance; when tcpreplay itself cannot keep the pace, the rate it
reached is what was offered.

`--drain` measures the live path without tcpreplay competing for the cores: the recorder's
processes are stopped (SIGSTOP) while the load goes into a 1 GiB kernel ring, then resumed;
the time they take to record everything the ring holds gives the packets/s the live path
sustains (and the cores it used doing so).

    sudo python bench/live_replay.py [--levels 500,1000,1500,2000,2500] [--seconds 10]
    sudo python bench/live_replay.py --drain --levels 1000,2500 --seconds 8
    sudo python bench/live_replay.py --levels 1500,2000,2500 --seconds 20 --burst 50

Without `--burst`, tcpreplay times every packet to the capture's timestamps, and on this
2-core machine cannot keep up beyond about 125k packets/s while the recorder runs: it then
offers less than real time. `--burst 50` paces it at the calls' own rate (100 packets/s a
call) in bursts of 50 packets, which offers 250k packets/s (2,500 calls) in real time.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import generate

from tests.service.harness import Recorder

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, children: bool = True) -> float:
    """User + system CPU seconds of a process and (`children`) of its live children."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat.parent.name) == pid or (children and int(fields[1]) == pid):
            total += (int(fields[11]) + int(fields[12])) / _TICKS
    return total


def family(pid: int) -> list[int]:
    """A process and its children (the capture process)."""
    out = [pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return out


def start(
    folder: Path, calls: int, seconds: float, reader_process: bool, ring_bytes: int
) -> tuple[Recorder, Path, int]:
    """The load capture, and `recorder run` on lo waiting for it."""
    capture = folder / "load.pcap"
    packets = generate(capture, calls, seconds)
    config = folder / "recorder.yaml"
    config.write_text(
        f"capture:\n  reader_process: {str(reader_process).lower()}\n  buffer_bytes: {ring_bytes}\n"
    )
    recorder = Recorder(folder, config=config, bpf="udp and net 10.0.0.0/8")
    recorder.start()
    return recorder, capture, packets


def drain_level(folder: Path, calls: int, seconds: float, reader_process: bool) -> dict:
    """Load into the ring while the recorder is stopped, then time the recording of it."""
    recorder, capture, packets = start(folder, calls, seconds, reader_process, 1 << 30)
    try:
        assert recorder.proc is not None
        pids = family(recorder.proc.pid)
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        subprocess.run(
            ["tcpreplay", "-i", "lo", "--preload-pcap", "-q", str(capture)],
            capture_output=True,
            check=True,
        )
        cpu0 = cpu_seconds(recorder.proc.pid)
        started = time.monotonic()
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
        rtp = packets - 4 * calls  # less INVITE, 200, ACK and BYE
        while True:
            # Done when every RTP packet is placed, not when every frame was handed to the
            # core: the core queues RTP per call and places it a second of capture time at a
            # time, so the frame count alone ran ahead of the work (in the reader process's
            # case by 13x: 2.4 s against 32 s, measured).
            m = recorder.scrape()
            if m["recorder_rtp_packets_total"] + m[
                "recorder_capture_kernel_dropped_packets_total"
            ] >= rtp or (time.monotonic() - started > 300):
                break
            time.sleep(0.05)
        wall = time.monotonic() - started
        cpu = cpu_seconds(recorder.proc.pid) - cpu0
        recorder.stop(timeout=300)
    finally:
        recorder.close()
    return {
        "packets": packets,
        "frames": m["recorder_capture_packets_total"],
        "kernel_dropped": m["recorder_capture_kernel_dropped_packets_total"],
        "pps": m["recorder_capture_packets_total"] / wall,
        "cpu_s": cpu,
        "wall_s": wall,
    }


def run_level(
    folder: Path,
    calls: int,
    seconds: float,
    reader_process: bool,
    burst: int = 0,
    ring_bytes: int = 1 << 28,
) -> dict:
    recorder, capture, packets = start(folder, calls, seconds, reader_process, ring_bytes)
    # Paced (burst > 0): the capture's own average rate, `burst` packets per timer tick, so
    # that tcpreplay's per-packet timing does not take the core the recorder needs.
    # `--timer=nano` sleeps between bursts: tcpreplay's default timer spins, and took a
    # whole core at 250k packets/s where sleeping took 0.65 (measured, 760k packets alone).
    pace = [f"--pps={calls * 100}", f"--pps-multi={burst}", "--timer=nano"] if burst else []
    try:
        assert recorder.proc is not None
        cpu0 = cpu_seconds(recorder.proc.pid)
        own0 = cpu_seconds(recorder.proc.pid, children=False)
        started = time.monotonic()
        sender = subprocess.Popen(
            ["tcpreplay", "-i", "lo", "--preload-pcap", "-q", *pace, str(capture)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        drops: list[tuple[float, float]] = []  # (seconds since the start, kernel drops)
        while sender.poll() is None:  # where the drops happen: the calls' set-up, or later
            time.sleep(1)
            dropped = recorder.scrape()["recorder_capture_kernel_dropped_packets_total"]
            drops.append((time.monotonic() - started, dropped))
        out, err = sender.communicate()
        if sender.returncode:
            raise RuntimeError(f"tcpreplay failed: {err.strip()}")
        wall = time.monotonic() - started
        frames = -1.0
        while True:  # until the recorder has caught up with what the ring holds
            time.sleep(1)
            m = recorder.scrape()
            if m["recorder_capture_packets_total"] == frames:
                break
            frames = m["recorder_capture_packets_total"]
        cpu = cpu_seconds(recorder.proc.pid) - cpu0
        own = cpu_seconds(recorder.proc.pid, children=False) - own0
        recorder.stop(timeout=300)  # closes the calls whose BYE was lost
        m["recorder_recordings_written_total"] = sum(
            1 for r in recorder.audit() if r["event"] == "recording.closed"
        )
    finally:
        recorder.close()
    rated = re.search(r"([\d.]+) pps", out)
    first = next((t for t, n in drops if n), None)
    return {
        "packets": packets,
        "offered_pps": float(rated.group(1)) if rated else packets / wall,
        "frames": m["recorder_capture_packets_total"],
        "kernel_dropped": m["recorder_capture_kernel_dropped_packets_total"],
        "rtp": m["recorder_rtp_packets_total"],
        "recorded": m["recorder_recordings_written_total"],
        "cpu_s": cpu,
        "recording_cpu_s": own,  # the recording process alone (without the reader)
        "wall_s": wall,
        "first_drop_s": first,  # when the metrics first showed a drop (seconds, or None)
        "drops_by_5s": next((n for t, n in drops if t >= 5), 0.0),
        "drops": drops,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="500,1000,1500,2000,2500")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each call")
    parser.add_argument("--drain", action="store_true", help="time the recording of a full ring")
    parser.add_argument(
        "--burst",
        type=int,
        default=0,
        help="pace tcpreplay at the calls' rate (100 packets/s a call), this many packets a "
        "tick (0: the capture's own timestamps, packet by packet)",
    )
    parser.add_argument(
        "--ring-mib",
        type=int,
        default=256,
        help="kernel capture ring (capture.buffer_bytes; the default config has 64 MiB)",
    )
    args = parser.parse_args()
    if shutil.which("tcpreplay") is None:
        raise SystemExit("tcpreplay is not installed (Debian: apt install tcpreplay)")
    print(f"{os.cpu_count()} CPUs; calls of {args.seconds} s, PCMU both ways (100 packets/s)")
    if args.drain:
        for level in (int(x) for x in args.levels.split(",")):
            for reader_process in (True, False):
                mode = "reader process" if reader_process else "one process"
                with tempfile.TemporaryDirectory() as tmp:
                    r = drain_level(Path(tmp), level, args.seconds, reader_process)
                print(
                    f"{mode:>14}, {level:5d} calls: {int(r['frames']):,}/{r['packets']:,} frames"
                    f" recorded from the ring at {r['pps']:9,.0f} pkt/s "
                    f"({r['pps'] / 100:5,.0f} calls in real time), kernel drops "
                    f"{int(r['kernel_dropped'])}, cpu {r['cpu_s']:.1f} s in {r['wall_s']:.1f} s "
                    f"({r['cpu_s'] / r['wall_s']:.2f} cores)",
                    flush=True,
                )
        return 0
    for reader_process in (True, False):
        mode = "reader process" if reader_process else "one process"
        for level in (int(x) for x in args.levels.split(",")):
            with tempfile.TemporaryDirectory() as tmp:
                r = run_level(
                    Path(tmp), level, args.seconds, reader_process, args.burst, args.ring_mib << 20
                )
            rtp_sent = r["packets"] - 4 * level  # less INVITE, 200, ACK and BYE
            clean = r["kernel_dropped"] == 0 and r["rtp"] == rtp_sent and r["recorded"] == level
            when = ""
            if r["first_drop_s"] is not None:
                when = f" (first seen at {r['first_drop_s']:.0f} s, {r['drops_by_5s']:,.0f} by 5 s)"
            print(
                f"{mode:>14}, {level:5d} calls: offered {r['offered_pps']:9,.0f} pkt/s "
                f"({r['offered_pps'] / 100:5,.0f} calls in real time); "
                f"kernel drops {int(r['kernel_dropped']):8,d}{when}; "
                f"rtp {int(r['rtp']):,}/{rtp_sent:,}; recorded {int(r['recorded'])}/{level}; "
                f"recorder cpu {r['cpu_s']:.1f} s (recording process {r['recording_cpu_s']:.1f}) "
                f"in {r['wall_s']:.1f} s ({r['cpu_s'] / r['wall_s']:.2f} cores) -> "
                f"{'clean' if clean else 'NOT clean'}",
                flush=True,
            )
            if r["first_drop_s"] is not None:  # the kernel's count, a second at a time
                series = ", ".join(f"{t:.0f} s {n:,.0f}" for t, n in r["drops"] if n)
                print(f"{'':>16}drops over time: {series}", flush=True)
            if not clean:
                break
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
