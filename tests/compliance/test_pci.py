"""PCI DSS pause/resume: DTMF patterns and the local control interface. A paused window is
exact silence and the paused audio is found nowhere on disk; digits are never stored."""

from __future__ import annotations

import threading
import wave
from pathlib import Path

import numpy as np
import pytest

from recorder.compliance.control import ControlServer, read_token, send_request
from recorder.compliance.factory import build_core
from recorder.config import parse_config
from recorder.core.events import RecordingAudio, RecordingMarker
from recorder.errors import ConfigError
from tests.compliance.helpers import (
    CONFIG,
    MS,
    T_2023,
    Archive,
    capture,
    make_call,
    new_archive,
    payload,
    ulaw,
)

PAUSE_DIGITS = {20: "*", 21: "1", 40: "#", 41: "1"}  # callee (agent) side
CALLER_PAUSED = range(22, 42)  # caller packets that arrive between '*1' and '#1'
CALLEE_PAUSED = range(22, 40)
CALLEE_OFFSET = 40  # the callee's first packet is 5 ms after the caller's: 40 samples


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)


def export(ctx: Archive, capsys: pytest.CaptureFixture[str], name: str) -> np.ndarray:
    row = ctx.rows(capsys)["call-1@test"]
    out = ctx.tmp / name
    code, _, err = ctx.cli(capsys, "export", row["id"], "-o", str(out), key=True)
    assert code == 0, err
    return read_wav(out)


def paused_call() -> object:
    return make_call(T_2023, 1, "+442070000001", "+4930222", callee_digits=PAUSE_DIGITS)


def test_dtmf_pause_is_exact_silence_and_leaves_no_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "ref").mkdir()
    (tmp_path / "pci").mkdir()
    reference = new_archive(tmp_path / "ref", capsys, None)  # records everything, no pause
    reference.replay(capsys, capture(tmp_path / "ref" / "c.pcap", paused_call()))
    full = export(reference, capsys, "full.wav")
    ctx = new_archive(tmp_path / "pci", capsys, CONFIG)
    ctx.replay(capsys, capture(tmp_path / "pci" / "c.pcap", paused_call()))
    got = export(ctx, capsys, "paused.wav")

    expected = full.copy()
    expected[160 * CALLER_PAUSED.start : 160 * CALLER_PAUSED.stop, 0] = 0
    callee = slice(CALLEE_OFFSET + 160 * CALLEE_PAUSED.start, CALLEE_OFFSET + 160 * 40)
    expected[callee, 1] = 0
    assert got.shape == full.shape  # the timeline stays true: same length
    np.testing.assert_array_equal(got, expected)
    assert np.count_nonzero(full[160 * 22 : 160 * 42, 0]) > 3000  # there was audio to hide

    # The paused audio, in every form it could take, is in no file the recorder wrote.
    secrets = []
    for i in CALLER_PAUSED:
        secrets += [payload(i, 0, 1), ulaw(payload(i, 0, 1)).tobytes()]
        secrets.append(full[160 * i : 160 * (i + 1)].tobytes())
    for i in CALLEE_PAUSED:
        secrets += [payload(i, 1, 1), ulaw(payload(i, 1, 1)).tobytes()]
    files = [p for p in (tmp_path / "pci").rglob("*") if p.is_file() and p.suffix != ".pcap"]
    files.append(ctx.tmp / "paused.wav")
    assert len(files) >= 5
    for path in files:
        data = path.read_bytes()
        assert not any(s in data for s in secrets), path
    # ...while the same search does find them where they were recorded.
    assert secrets[2] in (reference.tmp / "full.wav").read_bytes()

    markers = [r for r in ctx.audit() if r["event"] in ("recording.paused", "recording.resumed")]
    assert [(r["event"], r["detail"]) for r in markers] == [
        ("recording.paused", "DTMF pattern"),
        ("recording.resumed", "DTMF pattern"),
    ]
    assert markers[0]["at"] == "2023-11-14T22:13:21.425000Z"  # the '1' of '*1'
    assert markers[1]["at"] == "2023-11-14T22:13:21.825000Z"  # the '1' of '#1'
    text = (ctx.root / "audit" / "audit.jsonl").read_text()
    assert '"*1"' not in text and "#1" not in text


def test_a_pause_nobody_ends_ends_after_max_pause(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = CONFIG.replace("max_pause_s: 60", "max_pause_s: 1")
    ctx = new_archive(tmp_path, capsys, config)
    call = make_call(T_2023, 1, "+4420", "+4930222", packets=150, callee_digits={20: "*", 21: "1"})
    ctx.replay(capsys, capture(tmp_path / "c.pcap", call))
    markers = {r["event"]: r for r in ctx.audit() if r["event"].startswith("recording.")}
    assert markers["recording.resumed"]["detail"] == "pause time-out"
    paused_at = markers["recording.paused"]["at"]
    resumed_at = markers["recording.resumed"]["at"]
    assert paused_at == "2023-11-14T22:13:21.425000Z"
    assert "2023-11-14T22:13:22.425" <= resumed_at < "2023-11-14T22:13:23.425"
    pcm = export(ctx, capsys, "x.wav")
    assert not pcm[160 * 22 : 160 * 22 + 8000].any()  # one second of silence
    assert np.count_nonzero(pcm[-1600:, 0]) > 1000  # recording again at the end


def test_dtmf_opt_out_stops_the_recording(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ctx = new_archive(tmp_path, capsys, CONFIG)
    call = make_call(T_2023, 1, "+4420", "+4930222", callee_digits={20: "*", 21: "9"})
    ctx.replay(capsys, capture(tmp_path / "c.pcap", call))
    stopped = [r for r in ctx.audit() if r["event"] == "recording.stopped"]
    assert [(r["at"], r["detail"]) for r in stopped] == [
        ("2023-11-14T22:13:21.425000Z", "opt-out (DTMF)")
    ]
    # What came before the opt-out is kept; nothing after it is recorded (the call's audio
    # lasts until 22:13:22.005): the recording ends with the last 20 ms packet that arrived
    # before the digit, at most one packet past it.
    row = ctx.rows(capsys)["call-1@test"]
    assert "2023-11-14T22:13:21.405000Z" <= row["end"] <= "2023-11-14T22:13:21.445000Z"
    assert stopped[0]["recording_id"] == row["id"]


@pytest.fixture
def token(tmp_path: Path) -> Path:
    path = tmp_path / "control.token"
    path.write_text("s3cr3t-token-for-the-desktop\n")
    path.chmod(0o600)
    return path


def test_token_file_must_be_private(token: Path) -> None:
    token.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        read_token(token)


def test_control_interface_pauses_a_live_call(tmp_path: Path, token: Path) -> None:
    """A desktop pauses and resumes through the socket while the loop runs the core."""
    config = parse_config(CONFIG)
    core = build_core(config)
    server = ControlServer(tmp_path / "control.sock", token)
    server.start()
    secret = read_token(token).decode()
    frames = make_call(T_2023, 1, "+4420", "+4930222").sorted_frames()
    t_pause, t_resume = T_2023 + 1000 * MS + 300 * MS, T_2023 + 1000 * MS + 700 * MS
    replies = {}

    def call_desktop(action: str, request: dict) -> None:
        replies[action] = send_request(tmp_path / "control.sock", request)

    def desktop(action: str, **request: str) -> None:
        thread = threading.Thread(
            target=call_desktop, args=(action, {"token": secret, "action": action, **request})
        )
        thread.start()
        while thread.is_alive():  # the capture loop keeps draining while the desktop waits
            server.drain(core)
            thread.join(0.01)

    events = []
    try:
        for frame in frames:
            if frame.ts_ns >= t_pause and "pause" not in replies:
                desktop("pause", number="+4930222", reason="agent desk 7 card entry")
            if frame.ts_ns >= t_resume and "resume" not in replies:
                desktop("resume", call_id="call-1@test")
            core.receive_frame(frame)
            events += list(core.events())
        bad = send_request(tmp_path / "control.sock", {"token": "wrong", "action": "pause"})
    finally:
        server.stop()
    core.close()
    events += list(core.events())
    assert replies == {
        "pause": {"ok": True, "calls": 1, "changed": 1},
        "resume": {"ok": True, "calls": 1, "changed": 1},
    }
    assert bad == {"ok": False, "error": "bad token"}
    markers = [(e.kind, e.at_ns, e.detail) for e in events if isinstance(e, RecordingMarker)]
    assert markers == [
        ("paused", t_pause - 15 * MS, "control: agent desk  card entry"),  # digits dropped
        ("resumed", t_resume - 15 * MS, "control:"),
    ]
    pcm = np.frombuffer(
        b"".join(e.pcm for e in events if isinstance(e, RecordingAudio)), "<i2"
    ).reshape(-1, 2)
    # Caller packets 15..34 arrived while paused (at 300..680 ms): silence.
    assert not pcm[160 * 15 : 160 * 35, 0].any()
    np.testing.assert_array_equal(pcm[160 * 35 : 160 * 36, 0], ulaw(payload(35, 0, 1)))
    np.testing.assert_array_equal(pcm[160 * 14 : 160 * 15, 0], ulaw(payload(14, 0, 1)))
