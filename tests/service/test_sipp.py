"""End to end with real peers: sipp places concurrent calls with PCMA audio both ways
(played from pcaps we made) between a UAC and a UAS on loopback, while `recorder run`
captures on lo."""

from __future__ import annotations

import random
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.service.harness import Recorder, free_udp_ports, port_filter, require_capture
from tests.service.recordings import alaw, export_pcm, find, recordings, verify
from tests.service.sipp import start_uas, uac_command, write_audio_pcap, write_scenarios

pytestmark = pytest.mark.slow

CALLS = 3
PACKETS = 100  # 2 s of audio per call


def test_sipp_calls_are_recorded_and_decode_to_the_audio_sent(tmp_path: Path) -> None:
    sipp = require_tool("sipp")
    require_capture()
    caller = write_audio_pcap(tmp_path / "caller.pcap", PACKETS, side=0)
    callee = write_audio_pcap(tmp_path / "callee.pcap", PACKETS, side=1)
    scenario, uas_scenario = write_scenarios(
        tmp_path, tmp_path / "caller.pcap", tmp_path / "callee.pcap", pause_ms=2300
    )
    uas_port, uac_port = free_udp_ports(2)
    uas_media, uac_media = random.sample(range(20000, 60000, 2000), 2)
    ranges = [(uas_media, uas_media + 1999), (uac_media, uac_media + 1999)]
    recorder = Recorder(tmp_path, bpf=port_filter([uas_port, uac_port], ranges))
    recorder.start()
    uas = start_uas(sipp, uas_scenario, uas_port, uas_media, tmp_path / "uas.log")
    try:
        time.sleep(0.3)
        uac = subprocess.run(
            uac_command(sipp, scenario, uas_port, uac_port, uac_media, CALLS, 5),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert uac.returncode == 0, uac.stdout[-2000:]
        recorder.scrape_until("recorder_calls_active", 0)  # past the BYE linger
        # then the writer's close of each (after the group sync: later, on a busy machine)
        metrics = recorder.scrape_until("recorder_recordings_written_total", CALLS)
        assert recorder.stop() == 0
    finally:
        uas.terminate()
        uas.wait(10)
        recorder.close()
    assert metrics["recorder_calls_started_total"] == CALLS
    assert metrics['recorder_calls_ended_total{outcome="recorded"}'] == CALLS
    assert metrics["recorder_recordings_written_total"] == CALLS
    # The service opens recordings from spare files made ahead (created: none was ready).
    spare, created = (metrics[f"recorder_recording_files_{k}_total"] for k in ("spare", "created"))
    assert spare + created == CALLS and spare >= 1
    assert metrics["recorder_calls_active"] == 0
    assert metrics["recorder_capture_kernel_dropped_packets_total"] == 0
    assert metrics["recorder_rtp_packets_total"] == 2 * CALLS * PACKETS

    rows = recordings(recorder.archive)
    assert len(rows) == CALLS
    assert all(r["complete"] and r["codecs"] == ["PCMA"] and r["reason"] == "bye" for r in rows)
    assert f"{CALLS}/{CALLS} recordings authentic" in verify(recorder.archive, recorder.key)
    sent = [alaw(b"".join(caller)), alaw(b"".join(callee))]
    for row in rows:
        pcm = export_pcm(recorder.archive, recorder.key, str(row["id"]), tmp_path / "call.wav")
        starts = [find(pcm[:, side], sent[side]) for side in (0, 1)]
        # Sample 0 is the first RTP packet of the call, from either side; the other side
        # starts within 100 ms (both play as soon as the ACK is through).
        assert min(starts) == 0 and max(starts) < 800, starts
        for side in (0, 1):  # silence around each side's audio: nothing else leaked in
            assert not pcm[: starts[side], side].any()
            assert not pcm[starts[side] + len(sent[side]) :, side].any()
