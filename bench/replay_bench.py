"""Replay throughput benchmark (not a test): generates captures of N concurrent G.711 calls,
then runs, alternately, a bare-Python baseline (read pcap records with struct, look each
packet's flow up in a dict: the floor of any per-packet Python design), `recorder replay`
(everything it does for real: match, reorder, decode, encrypt, write, audit, index) and
`tshark -q -z rtp,streams`, and prints packets/s, concurrent calls followed in real time,
peak memory, CPU seconds and the ratios between them, measured in the same run. A G.722
case compares the recorder with the G.722 decoder alone on the same payloads.

    python bench/replay_bench.py                       # 10, 1,000, 10,000 calls; G.722
    python bench/replay_bench.py --calls 1000 --seconds 60 --rounds 3
    python bench/replay_bench.py --calls 10000 --seconds 2 --g722-calls 0   # call churn
    python bench/replay_bench.py --calls 2000 --g722-calls 0 --unsignalled-every 10

A G.711 call at 20 ms carries 100 packets/s (50 each way), so packets/s / 100 is the number
of concurrent calls that could be followed in real time.
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import generate

_RECORD = struct.Struct("<IIII")


def baseline(path: Path) -> float:
    """Seconds for the floor: read every record, look its flow up in a dict."""
    flows: dict[bytes, int] = {}
    start = time.perf_counter()
    with path.open("rb", buffering=1 << 20) as f:
        f.read(24)
        read, unpack = f.read, _RECORD.unpack
        while head := read(16):
            _, _, caplen, _ = unpack(head)
            data = read(caplen)
            key = data[30:34] + data[36:38]
            flows[key] = flows.get(key, 0) + 1
    return time.perf_counter() - start


def decoder_alone(calls: int, seconds: float) -> float:
    """Seconds the G.722 decoder alone takes for the payloads of such a capture: one
    decoder per stream, fed 50 packets (a second) at a time, as the recorder feeds it."""
    import G722  # the recorder's own decoder package

    payload = os.urandom(160 * 50)
    decoders = [G722.G722(16000, 64000) for _ in range(2 * calls)]
    start = time.perf_counter()
    for _ in range(max(1, round(seconds))):
        for decoder in decoders:
            decoder.decode(payload)
    return time.perf_counter() - start


def compile_recorder() -> None:
    """Byte-compile the recorder as `pip install` does, so that no round compiles its
    source again (where PYTHONDONTWRITEBYTECODE is set, every start would: about 0.1 s)."""
    spec = importlib.util.find_spec("recorder")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            compileall.compile_dir(folder, quiet=1)


def timed(cmd: list[str], cwd: Path) -> tuple[float, int, float]:
    """Wall seconds, peak resident memory (bytes) and CPU seconds of a command."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"{cmd[0]} failed: {err.strip()[-500:]}")
    return elapsed, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime


def run_case(
    calls: int,
    seconds: float,
    rounds: int,
    work: Path,
    with_tshark: bool,
    codec: str = "PCMU",
    unsignalled_every: int = 0,
) -> dict:
    capture = work / f"load-{calls}.pcap"
    packets = generate(capture, calls, seconds, codec=codec, unsignalled_every=unsignalled_every)
    best: dict[str, tuple[float, int, float]] = {}
    for _ in range(rounds):  # alternate, keep each one's best: these machines are noisy
        b = baseline(capture)
        best["baseline"] = min(best.get("baseline", (b, 0, b)), (b, 0, b))
        if codec == "G722":
            d = decoder_alone(calls, seconds)
            best["decoder"] = min(best.get("decoder", (d, 0, d)), (d, 0, d))
        archive = work / "archive"
        shutil.rmtree(archive, ignore_errors=True)
        cmd = [
            sys.executable,
            "-m",
            "recorder",
            "replay",
            "--dev-key",
            "--archive",
            str(archive),
            "--key",
            str(work / "bench.key"),
            str(capture),
        ]
        r = timed(cmd, work)
        best["recorder"] = min(best.get("recorder", r), r)
        if with_tshark and shutil.which("tshark"):
            t = timed(["tshark", "-q", "-n", "-z", "rtp,streams", "-r", str(capture)], work)
            best["tshark"] = min(best.get("tshark", t), t)
    capture.unlink()
    return {"calls": calls, "codec": codec, "packets": packets, **best}


def report(row: dict) -> str:
    pps = {
        name: row["packets"] / row[name][0]
        for name in ("baseline", "recorder", "tshark", "decoder")
        if name in row
    }
    parts = [f"{row['calls']:>6} {row['codec']} calls {row['packets']:>9} packets:"]
    parts.append(
        f"recorder {pps['recorder']:>9,.0f} pkt/s = {pps['recorder'] / 100:>6,.0f} calls"
        f" in real time ({row['packets'] / row['recorder'][2]:,.0f} pkt per CPU-second),"
        f" peak {row['recorder'][1] / 2**20:,.0f} MiB;"
    )
    if "decoder" in pps:
        parts.append(
            f"G.722 decoder alone {pps['decoder']:>8,.0f} pkt/s (recorder at "
            f"{pps['recorder'] / pps['decoder']:.0%} of it);"
        )
    parts.append(
        f"baseline {pps['baseline']:>9,.0f} pkt/s (recorder at "
        f"{pps['recorder'] / pps['baseline']:.2f}x)"
    )
    if "tshark" in pps:
        parts.append(
            f"; tshark {pps['tshark']:>8,.0f} pkt/s (recorder "
            f"{pps['recorder'] / pps['tshark']:.2f}x faster)"
        )
    return " ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--calls", type=int, nargs="+", default=[10, 1000, 10000])
    parser.add_argument(
        "--seconds",
        type=float,
        nargs="+",
        default=None,
        help="call length per case (default: 10 s from 1,000 calls up, else about 2M packets)",
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--g722-calls", type=int, default=300, help="G.722 case size (0: no G.722 case)"
    )
    parser.add_argument("--no-tshark", action="store_true")
    parser.add_argument(
        "--unsignalled-every",
        type=int,
        default=0,
        metavar="N",
        help="leave out the SIP of every Nth call: its RTP shares every call's ports, unexplained",
    )
    args = parser.parse_args()
    # About 2M packets a case, but calls of 10 s from 1,000 calls up: cases that compare how
    # the cost grows with concurrent calls must carry the same call set-up and tear-down
    # (about 1 ms a call) per packet (run --seconds 2 to measure those instead).
    seconds = args.seconds or [10.0 if n >= 1000 else 2_000_000 / (100 * n) for n in args.calls]
    compile_recorder()
    with tempfile.TemporaryDirectory(prefix="recorder-bench-") as tmp:
        work = Path(tmp)
        rows = []
        for calls, length in zip(args.calls, seconds, strict=True):
            row = run_case(
                calls,
                length,
                args.rounds,
                work,
                not args.no_tshark,
                unsignalled_every=args.unsignalled_every,
            )
            rows.append(row)
            print(report(row), flush=True)
        if args.g722_calls:
            length = max(20.0, 2_000_000 / (100 * args.g722_calls))  # about 2M packets too
            row = run_case(args.g722_calls, length, args.rounds, work, False, codec="G722")
            print(report(row), flush=True)
        if len(rows) > 1:
            small, large = rows[0], rows[-1]
            per_call = (large["recorder"][1] - small["recorder"][1]) / (
                large["calls"] - small["calls"]
            )
            print(
                f"memory: about {per_call / 1024:,.0f} KiB per concurrent call "
                f"(peak RSS {small['calls']} vs {large['calls']} calls)"
            )


if __name__ == "__main__":
    main()
