"""The public contract end to end, in process: keygen, replay, list --json, export, verify,
and every kind of tampering detected by both verify and export."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest

from recorder.cli import main
from recorder.container.format import SEALED_SEGMENT_BYTES
from recorder.container.reader import read_header_block
from tests.builders import CallBuilder, rtp, write_pcap
from tests.core.test_timeline_rules import (
    CALLER_START,
    MS,
    T0,
    base_call,
    expected,
    full,
    payload,
)
from tests.net.capwrite import epb, idb, shb


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    """An archive holding two recordings of known audio, and its key."""
    key = tmp_path / "master.key"
    archive = tmp_path / "archive"
    assert run_cli(capsys, "keygen", str(key), "--archive", str(archive))[0] == 0
    first = base_call()
    second = CallBuilder(
        call_id="../../etc/passwd",
        caller="+4930333",
        callee="+4930444",
        caller_rtp=42000,
        callee_rtp=52000,
    )
    second.invite(T0 + 100 * MS)
    second.answer(T0 + 600 * MS)
    for i in range(50):
        second.rtp_from_caller(
            CALLER_START + i * 20 * MS + 5 * MS, rtp(0, i, 160 * i, 0x5555, payload(i, 1))
        )
    second.bye(T0 + 3000 * MS)
    frames = sorted(first.frames + second.frames, key=lambda f: f.ts_ns)
    pcap = write_pcap(tmp_path / "two-calls.pcap", frames)
    code, out, _ = run_cli(
        capsys, "replay", "--archive", str(archive), "--key", str(key), str(pcap)
    )
    assert code == 0
    assert "calls recorded    2" in out
    code, out, _ = run_cli(capsys, "list", "--archive", str(archive), "--json")
    rows = {row["call_id"]: row for row in json.loads(out)}
    return {"key": key, "archive": archive, "rows": rows, "tmp": tmp_path}


def export(
    capsys: pytest.CaptureFixture[str], ctx: dict, call_id: str, name: str
) -> tuple[int, Path, str]:
    out = ctx["tmp"] / name  # type: ignore[operator]
    row = ctx["rows"][call_id]  # type: ignore[index]
    code, _, err = run_cli(
        capsys,
        "export",
        "--archive",
        str(ctx["archive"]),
        "--key",
        str(ctx["key"]),
        row["id"],
        "-o",
        str(out),
        "--as",
        "auditor-1",
    )
    return code, out, err


def read_wav(path: Path) -> tuple[int, np.ndarray]:
    with wave.open(str(path), "rb") as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 2
        return w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)


def test_list_json_contract(recorded: dict) -> None:
    row = recorded["rows"]["call-1@test"]
    assert row["caller"] == "+4930111" and row["callee"] == "+4930222"
    assert row["start"] == "2023-11-14T22:13:21.000000Z"  # T0 + 1 s
    assert row["duration_s"] == pytest.approx(8800 / 8000)
    assert row["codecs"] == ["PCMU"] and row["sample_rate"] == 8000 and row["channels"] == 2
    assert row["complete"] is True
    path = recorded["archive"] / row["path"]
    import hashlib

    assert hashlib.sha256(path.read_bytes()).hexdigest() == row["sha256"]
    for key in ("id", "end", "purpose", "retention_class"):
        assert key in row


def test_hostile_call_id_stays_data(recorded: dict) -> None:
    row = recorded["rows"]["../../etc/passwd"]
    assert row["path"].startswith("recordings/") and ".." not in row["path"]
    archive: Path = recorded["archive"]
    assert (archive / row["path"]).resolve().is_relative_to(archive.resolve())


def test_export_gives_the_audio_sample_for_sample(
    recorded: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    code, wav, _ = export(capsys, recorded, "call-1@test", "call.wav")
    assert code == 0
    rate, pcm = read_wav(wav)
    assert rate == 8000
    np.testing.assert_array_equal(pcm, expected(full(0), full(1), 8800))
    trail = (recorded["archive"] / "audit" / "audit.jsonl").read_text().splitlines()
    last = json.loads(trail[-1])
    assert last["event"] == "export" and last["actor"] == "auditor-1"
    assert last["recording_id"] == recorded["rows"]["call-1@test"]["id"]


def test_verify_passes_on_an_untouched_archive(
    recorded: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(
        capsys, "verify", "--archive", str(recorded["archive"]), "--key", str(recorded["key"])
    )
    assert code == 0, out
    assert out.strip().splitlines()[-1].startswith("OK: 2/2 recordings authentic")


def _file(ctx: dict, call_id: str) -> Path:
    return ctx["archive"] / ctx["rows"][call_id]["path"]


def _header_len(path: Path) -> int:
    with path.open("rb") as f:
        return read_header_block(f).length


def flip_bit(ctx: dict) -> None:
    path = _file(ctx, "call-1@test")
    data = bytearray(path.read_bytes())
    data[_header_len(path) + 100] ^= 0x01
    path.write_bytes(bytes(data))


def truncate(ctx: dict) -> None:
    path = _file(ctx, "call-1@test")
    path.write_bytes(path.read_bytes()[:-40])


def truncate_at_boundary(ctx: dict) -> None:
    path = _file(ctx, "call-1@test")
    path.write_bytes(path.read_bytes()[: _header_len(path) + 2 * SEALED_SEGMENT_BYTES])


def swap_segments(ctx: dict) -> None:
    path = _file(ctx, "call-1@test")
    data = path.read_bytes()
    h, s = _header_len(path), SEALED_SEGMENT_BYTES
    path.write_bytes(data[:h] + data[h + s : h + 2 * s] + data[h : h + s] + data[h + 2 * s :])


def swap_headers(ctx: dict) -> None:
    a, b = _file(ctx, "call-1@test"), _file(ctx, "../../etc/passwd")
    da, db = a.read_bytes(), b.read_bytes()
    ha, hb = _header_len(a), _header_len(b)
    a.write_bytes(db[:hb] + da[ha:])
    b.write_bytes(da[:ha] + db[hb:])


def replace_files(ctx: dict) -> None:
    a, b = _file(ctx, "call-1@test"), _file(ctx, "../../etc/passwd")
    da, db = a.read_bytes(), b.read_bytes()
    a.write_bytes(db)
    b.write_bytes(da)


def delete_audit_line(ctx: dict) -> None:
    path = ctx["archive"] / "audit" / "audit.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:2] + lines[3:]))


def edit_audit_line(ctx: dict) -> None:
    path = ctx["archive"] / "audit" / "audit.jsonl"
    path.write_bytes(path.read_bytes().replace(b'"actor":"', b'"actor":"x', 1))


@pytest.mark.parametrize(
    ("tamper", "message", "export_fails"),
    [
        (flip_bit, "segment 0 failed authentication", True),
        (truncate, "torn tail", True),
        (truncate_at_boundary, "no final segment", True),
        (swap_segments, "segment 0 failed authentication", True),
        (swap_headers, "header MAC failed", True),
        (replace_files, "header MAC failed", True),
        (delete_audit_line, "audit trail: ", False),
        (edit_audit_line, "audit trail: ", False),
    ],
)
def test_tampering_is_detected(
    recorded: dict, capsys: pytest.CaptureFixture[str], tamper, message: str, export_fails: bool
) -> None:
    tamper(recorded)
    code, out, _ = run_cli(
        capsys, "verify", "--archive", str(recorded["archive"]), "--key", str(recorded["key"])
    )
    assert code == 1
    failures = [line for line in out.splitlines() if line.startswith("FAIL ")]
    assert any(message in line for line in failures), out
    code, wav, err = export(capsys, recorded, "call-1@test", "tampered.wav")
    if export_fails:
        assert code == 1 and message in err
        assert not wav.exists()


def test_wrong_key_is_detected(
    recorded: dict, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    other = tmp_path / "other.key"
    assert run_cli(capsys, "keygen", str(other))[0] == 0
    code, out, _ = run_cli(
        capsys, "verify", "--archive", str(recorded["archive"]), "--key", str(other)
    )
    assert code == 1
    assert sum(line.startswith("FAIL recording") for line in out.splitlines()) == 2
    recorded["key"] = other
    code, wav, err = export(capsys, recorded, "call-1@test", "wrong.wav")
    assert code == 1 and not wav.exists()
    assert "needs master key" in err


def test_replay_skips_a_packet_without_a_usable_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pcapng packet whose time lies beyond int64 nanoseconds (here 2^40 s) crashed the
    replay; it is now skipped and counted, and the call around it is recorded."""
    frames = base_call().frames
    data = shb() + idb("<", 1, tsresol=9) + idb("<", 1, tsresol=0)
    for k, frame in enumerate(frames):
        data += epb("<", 0, frame.ts_ns, frame.data)
        if k == len(frames) // 2:
            data += epb("<", 1, 2**40, frame.data)
    capture = tmp_path / "far-future.pcapng"
    capture.write_bytes(data)
    archive, key = tmp_path / "archive", tmp_path / "k.key"
    code, out, _ = run_cli(
        capsys, "replay", "--dev-key", "--archive", str(archive), "--key", str(key), str(capture)
    )
    assert code == 0
    assert f"captures read     1 ({len(frames)} frames)" in out
    assert "skipped: 1 packet(s) with no usable time or interface" in out
    assert "calls recorded    1" in out
    lines = (archive / "audit" / "audit.jsonl").read_text().splitlines()
    audit = [json.loads(line) for line in lines]
    finished = [r for r in audit if r["event"] == "replay.finished"]
    assert finished and finished[-1]["skipped_packets"] == 1
