"""Subject access (search, export --subject with manifest) and master key rotation,
through the CLI; every access is an audit event."""

from __future__ import annotations

import hashlib
import json
import wave
from pathlib import Path

import pytest

from recorder.runtime.audit import canonical_bytes, line_hash
from recorder.runtime.keystore import KeyStore
from tests.compliance.helpers import CONFIG, T_2023, Archive, capture, make_call, new_archive

S = 1_000_000_000


@pytest.fixture
def archive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Archive:
    ctx = new_archive(tmp_path, capsys, CONFIG)
    calls = [
        make_call(T_2023, 1, "+442070000001", "+4930555100"),  # mifid
        make_call(T_2023 + 10 * S, 2, "+442070000001", "+4930222"),  # same subject: quality
        make_call(T_2023 + 20 * S, 3, "+442070000009", "+4930223"),  # someone else
    ]
    ctx.replay(capsys, capture(tmp_path / "c.pcap", *calls))
    return ctx


def test_search_by_number_time_and_purpose_is_audited(
    archive: Archive, capsys: pytest.CaptureFixture[str]
) -> None:
    def ids(*args: str) -> list[str]:
        code, out, _ = archive.cli(capsys, "search", "--json", *args)
        assert code == 0
        return [row["call_id"] for row in json.loads(out)]

    assert ids("--number", "+442070000001") == ["call-1@test", "call-2@test"]
    assert ids("--number", "+442070000001", "--purpose", "quality") == ["call-2@test"]
    assert ids("--from", "2023-11-14T22:13:25Z") == ["call-2@test", "call-3@test"]
    assert ids("--from", "2023-11-14", "--to", "2023-11-14T22:13:25Z") == ["call-1@test"]
    searches = [r for r in archive.audit() if r["event"] == "search"]
    assert len(searches) == 4
    assert searches[0]["actor"] == "dpo-1" and searches[0]["outcome"] == "ok"
    assert searches[0]["criteria"] == {
        "by_number": True,
        "from": None,
        "to": None,
        "purpose": None,
    }
    assert len(searches[0]["results"]) == 2


def test_export_subject_writes_wavs_and_a_manifest_with_their_history(
    archive: Archive, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rows = archive.rows(capsys)
    out = tmp_path / "dsar"
    code, text, err = archive.cli(
        capsys, "export", "--subject", "+442070000001", "-o", str(out), key=True
    )
    assert code == 0, err
    assert "wrote 2 recording(s)" in text
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["subject"] == "+442070000001" and manifest["generated_by"] == "dpo-1"
    entries = {e["recording"]["call_id"]: e for e in manifest["recordings"]}
    assert sorted(entries) == ["call-1@test", "call-2@test"]
    trail = (archive.root / "audit" / "audit.jsonl").read_bytes().splitlines()
    hashes = {hashlib.sha256(line).hexdigest() for line in trail}
    for call_id, entry in entries.items():
        wav = out / entry["file"]
        assert hashlib.sha256(wav.read_bytes()).hexdigest() == entry["wav_sha256"]
        with wave.open(str(wav)) as w:
            assert w.getnframes() / w.getframerate() == pytest.approx(rows[call_id]["duration_s"])
        assert entry["stored_sha256"] == rows[call_id]["sha256"]
        events = [a["record"]["event"] for a in entry["audit"]]
        assert events[:2] == ["recording.opened", "recording.closed"]
        assert "export" in events
        for item in entry["audit"]:  # each record is the trail's own line
            assert item["line_sha256"] == line_hash(canonical_bytes(item["record"]))
            assert item["line_sha256"] in hashes
    assert entries["call-1@test"]["recording"]["purpose"] == "mifid"
    summary = [r for r in archive.audit() if r["event"] == "export.subject"]
    assert summary[0]["recordings"] == [rows["call-1@test"]["id"], rows["call-2@test"]["id"]]


def test_single_export_still_works_and_needs_an_id(
    archive: Archive, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    row = archive.rows(capsys)["call-3@test"]
    code, _, _ = archive.cli(capsys, "export", row["id"], "-o", str(tmp_path / "a.wav"), key=True)
    assert code == 0 and (tmp_path / "a.wav").exists()
    code, _, err = archive.cli(capsys, "export", "-o", str(tmp_path / "b.wav"), key=True)
    assert code == 2 and "name a recording id or --subject NUMBER" in err


def test_rotate_rewrap_retire(
    archive: Archive, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ring = tmp_path / "keys.d"
    code, out, err = archive.cli(
        capsys, "keys", "rotate", "--import", str(archive.key), "--key", str(ring)
    )
    assert code == 0, err
    new_kid = out.strip()
    old_kid = (archive.key.read_text().split("kid ")[1]).split()[0]
    assert sorted(p.name for p in ring.iterdir()) == sorted(
        ["current", f"{old_kid}.key", f"{new_kid}.key"]
    )
    # New recordings use the new key; old ones still open with the ring.
    later = make_call(T_2023 + 60 * S, 4, "+442070000004", "+4930222")
    archive.key = ring
    archive.replay(capsys, capture(tmp_path / "later.pcap", later))
    assert archive.rows(capsys)["call-4@test"]["kid"] == new_kid
    assert archive.cli(capsys, "verify", key=True)[0] == 0
    code, out, _ = archive.cli(capsys, "keys", "retire", key=True)
    assert out.strip() == "nothing to retire"  # the old key still wraps three file keys
    code, out, _ = archive.cli(capsys, "keys", "rewrap", key=True)
    assert code == 0 and out.strip() == f"re-wrapped 3 file key(s) from {old_kid}"
    with KeyStore(archive.root / "keys.sqlite") as keys:
        assert keys.kids_in_use() == {new_kid: 4}
    code, out, _ = archive.cli(capsys, "keys", "retire", key=True)
    assert out.strip() == f"retired {old_kid}"
    assert not (ring / f"{old_kid}.key").exists()
    assert {r["kid"] for r in archive.rows(capsys).values()} == {new_kid}
    code, out, _ = archive.cli(capsys, "verify", key=True)
    assert code == 0, out
    events = [r["event"] for r in archive.audit() if r["event"].startswith("key.")]
    assert events == [
        "key.generated",
        "key.rotated",
        "key.retire_refused",
        "key.rewrapped",
        "key.retired",
    ]
    # The audio was not re-encrypted: the files are byte for byte what the trail recorded.
    closed = {r["recording_id"]: r["sha256"] for r in archive.audit() if "sha256" in r}
    for row in archive.rows(capsys).values():
        assert (
            hashlib.sha256((archive.root / row["path"]).read_bytes()).hexdigest()
            == closed[row["id"]]
        )
