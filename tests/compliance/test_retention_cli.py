"""Recording policy, retention, legal hold and erasure through the CLI, on captures."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from recorder.errors import IntegrityError
from recorder.runtime.keyfile import load_key_file
from recorder.runtime.keystore import KeyStore
from recorder.runtime.opening import file_key_for
from recorder.runtime.timefmt import parse_rfc3339_ns, rfc3339_ns
from tests.compliance.helpers import (
    CONFIG,
    T_2020,
    T_2023,
    Archive,
    capture,
    make_call,
    new_archive,
    run_cli,
)

S = 1_000_000_000
MIFID, QUALITY, HELD = "call-1@test", "call-2@test", "call-6@test"


@pytest.fixture
def archive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Archive:
    """Six calls in 2023 under the policy of helpers.CONFIG."""
    ctx = new_archive(tmp_path, capsys, CONFIG)
    calls = [
        make_call(T_2023, 1, "+442070000001", "+4930555100"),  # trading desk: mifid
        make_call(T_2023 + 10 * S, 2, "+442070000002", "+4930222"),  # inbound: quality
        make_call(T_2023 + 20 * S, 3, "+4930333", "+442070000003"),  # outbound: no rule
        make_call(T_2023 + 30 * S, 4, "+442070000004", "+4930999123"),  # private: excluded
        make_call(
            T_2023 + 40 * S, 5, "+442070000005", "+4930224", extra=[("X-Recording-Opt-Out", "1")]
        ),
        make_call(T_2023 + 50 * S, 6, "+442070000006", "+4930223"),  # quality, to be held
    ]
    out = ctx.replay(capsys, capture(tmp_path / "calls.pcap", *calls))
    assert "calls recorded    3" in out
    return ctx


def test_policy_selects_and_counts(archive: Archive, capsys: pytest.CaptureFixture[str]) -> None:
    rows = archive.rows(capsys)
    assert sorted(rows) == [MIFID, QUALITY, HELD]
    assert (rows[MIFID]["purpose"], rows[MIFID]["legal_basis"]) == ("mifid", "legal_obligation")
    assert rows[MIFID]["retention_class"] == "mifid"
    assert (rows[QUALITY]["purpose"], rows[QUALITY]["retention_class"]) == ("quality", "quality")
    code, out, _ = run_cli(capsys, "list", "--calls", "--json", "--archive", archive.root)
    assert code == 0
    calls = {c["call_id"]: (c["outcome"], c["reason"]) for c in json.loads(out)}
    assert calls == {
        "call-3@test": ("not_selected", "no recording rule matched"),
        "call-4@test": ("not_selected", "excluded by rule private-lines"),
        "call-5@test": ("not_selected", "opt-out (SIP header)"),
    }
    opened = {r["recording_id"]: r for r in archive.audit() if r["event"] == "recording.opened"}
    assert {r["rule"] for r in opened.values()} == {"trading", "quality"}
    assert opened[rows[MIFID]["id"]]["notice"].startswith("IVR announcement TRD-1")


def test_expiry_is_fixed_at_close_in_rfc3339(
    archive: Archive, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = archive.rows(capsys)
    mifid, quality = rows[MIFID], rows[QUALITY]
    # Five calendar years after the end, to the microsecond; 90 days for quality.
    assert mifid["expires"] == "2028" + mifid["end"][4:]
    end = datetime.fromisoformat(quality["end"].replace("Z", "+00:00"))
    assert quality["expires"] == (end + timedelta(days=90)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_retention_deletes_the_expired_and_shreds_its_key(
    archive: Archive, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rows = archive.rows(capsys)
    quality = rows[QUALITY]
    stored = archive.root / quality["path"]
    backup = tmp_path / "backup.rec"
    shutil.copy(stored, backup)
    with KeyStore(archive.root / "keys.sqlite") as keys:
        entry = keys.get(quality["id"])
    assert entry is not None
    wrapped = entry[1]
    assert archive.cli(capsys, "hold", "set", rows[HELD]["id"], "--reason", "dispute 17")[0] == 0

    code, out, _ = archive.cli(capsys, "retention", "run")
    assert code == 0, out
    assert f"deleted {quality['id']}" in out
    assert f"kept {rows[HELD]['id']}: legal hold (dispute 17)" in out
    assert sorted(archive.rows(capsys)) == [MIFID, HELD]
    assert not stored.exists()
    # The key is gone from the key store, to the bytes (secure_delete).
    assert wrapped not in (archive.root / "keys.sqlite").read_bytes()
    # A copy restored from a backup no longer decrypts: its file key is destroyed.
    shutil.copy(backup, stored)
    with KeyStore(archive.root / "keys.sqlite") as keys, pytest.raises(IntegrityError):
        file_key_for(keys, {"k": load_key_file(archive.key)}, quality["id"])
    code, out, _ = archive.cli(capsys, "verify", key=True)
    assert code == 1 and f"file {quality['path']} is not in the index" in out
    stored.unlink()
    code, out, _ = archive.cli(capsys, "verify", key=True)
    assert code == 0, out  # deleted recordings are audited as deleted, not "missing"
    deleted = [r for r in archive.audit() if r["event"] == "recording.deleted"]
    assert [(r["recording_id"], r["reason"], r["actor"]) for r in deleted] == [
        (quality["id"], "retention", "dpo-1")
    ]
    assert deleted[0]["sha256"] == quality["sha256"]


@pytest.mark.parametrize("now", ["2023-11-15T00:00:00Z", "2026-01-01T00:00:00Z", None])
def test_mifid_survives_retention_at_any_clock_before_expiry(
    archive: Archive, capsys: pytest.CaptureFixture[str], now: str | None
) -> None:
    mifid = archive.rows(capsys)[MIFID]
    args = ["--now", now] if now else []
    code, out, _ = archive.cli(capsys, "retention", "run", *args)
    assert code == 0 and f"deleted {mifid['id']}" not in out
    assert MIFID in archive.rows(capsys)
    assert (archive.root / mifid["path"]).exists()
    started = [r for r in archive.audit() if r["event"] == "retention.started"][-1]
    assert started["clock"] == ("given" if now else "system")


def test_now_may_not_be_later_than_the_system_clock(
    archive: Archive, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = archive.cli(capsys, "retention", "run", "--now", "2099-01-01T00:00:00Z")
    assert code == 2
    assert "--now may not be later than the system clock" in err
    assert MIFID in archive.rows(capsys)


def test_mifid_cannot_be_erased_and_the_refusal_is_printed_and_audited(
    archive: Archive, capsys: pytest.CaptureFixture[str]
) -> None:
    mifid = archive.rows(capsys)[MIFID]
    code, out, _ = archive.cli(capsys, "erase", "--number", "+4930555100", "--reference", "DSR-9")
    assert code == 0
    until = mifid["expires"][:19] + "Z"
    assert f"kept {mifid['id']}: kept under a legal obligation until {until}" in out
    assert MIFID in archive.rows(capsys)
    kept = [r for r in archive.audit() if r["event"] == "erase.kept"]
    assert kept[0]["recording_id"] == mifid["id"] and "legal obligation" in kept[0]["reason"]


def test_erasure_deletes_what_nothing_keeps(
    archive: Archive, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = archive.rows(capsys)
    archive.cli(capsys, "hold", "set", "--number", "+4930223", "--reason", "claim 4")
    code, out, _ = archive.cli(capsys, "erase", "--number", "+442070000002")
    assert code == 0 and f"deleted {rows[QUALITY]['id']}" in out
    code, out, _ = archive.cli(capsys, "erase", "--number", "+4930223")
    assert f"kept {rows[HELD]['id']}: legal hold (claim 4)" in out
    code, out, _ = archive.cli(capsys, "erase", "--number", "+4930333")  # an unrecorded call
    assert "entries of calls not recorded removed 1" in out
    assert sorted(archive.rows(capsys)) == [MIFID, HELD]
    assert archive.cli(capsys, "verify", key=True)[0] == 0


def test_hold_clear_lets_retention_delete(
    archive: Archive, capsys: pytest.CaptureFixture[str]
) -> None:
    held = archive.rows(capsys)[HELD]["id"]
    archive.cli(capsys, "hold", "set", held, "--reason", "dispute 17")
    archive.cli(capsys, "retention", "run")
    assert HELD in archive.rows(capsys)
    code, out, _ = archive.cli(capsys, "hold", "clear", held, "--reason", "settled")
    assert code == 0 and f"released {held}" in out
    archive.cli(capsys, "retention", "run")
    assert HELD not in archive.rows(capsys)
    events = [(r["event"], r.get("reason")) for r in archive.audit() if r["event"][:5] == "hold."]
    assert events == [("hold.set", "dispute 17"), ("hold.cleared", "settled")]


def test_mifid_is_deleted_once_its_five_years_have_passed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ctx = new_archive(tmp_path, capsys, CONFIG)
    ctx.replay(capsys, capture(tmp_path / "old.pcap", make_call(T_2020, 1, "+4420", "+4930555")))
    row = ctx.rows(capsys)[MIFID]
    expires = parse_rfc3339_ns(row["expires"])
    assert row["expires"] == "2025-05-20T18:40:02.005000Z"  # end + 5 years
    code, out, _ = ctx.cli(capsys, "retention", "run", "--now", rfc3339_ns(expires - 1, digits=9))
    assert code == 0 and "deleted 0, kept 0" in out
    assert MIFID in ctx.rows(capsys)  # one nanosecond before: still kept
    code, out, _ = ctx.cli(capsys, "erase", "--number", "+4930555")
    assert code == 0
    assert "kept under a legal obligation" not in out  # expired: erasure may delete it now
    assert MIFID not in ctx.rows(capsys)


def test_numbers_never_reach_the_audit_trail(
    archive: Archive, capsys: pytest.CaptureFixture[str]
) -> None:
    archive.cli(capsys, "search", "--number", "+4930555100")
    archive.cli(capsys, "erase", "--number", "+442070000002")
    archive.cli(capsys, "hold", "set", "--number", "+4930223", "--reason", "r")
    text = (archive.root / "audit" / "audit.jsonl").read_text()
    assert "+4420" not in text and "+4930" not in text


def test_extend_within_the_class_limit_only(
    archive: Archive, capsys: pytest.CaptureFixture[str]
) -> None:
    row = archive.rows(capsys)[MIFID]
    cfg = ["--config", str(archive.config)]
    code, out, _ = archive.cli(
        capsys, "retention", "extend", row["id"], "--until", "2031-01-01", "--reason", "FCA", *cfg
    )
    assert code == 1 and "REFUSED: beyond what class 'mifid' allows (2030-11-14T22:13:22Z)" in out
    code, out, _ = archive.cli(
        capsys, "retention", "extend", row["id"], "--until", "2030-01-01", "--reason", "FCA", *cfg
    )
    assert code == 0 and "extended" in out
    assert archive.rows(capsys)[MIFID]["expires"] == "2030-01-01T00:00:00.000000Z"
    code, out, _ = archive.cli(
        capsys, "retention", "extend", row["id"], "--until", "2029-01-01", "--reason", "x", *cfg
    )
    assert code == 1 and "never shortened" in out


def test_unconfigured_recorder_warns_and_keeps_30_days(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    ctx = new_archive(tmp_path, capsys, None)
    ctx.replay(capsys, capture(tmp_path / "c.pcap", make_call(T_2023, 1, "+4420", "+4930")))
    assert "no recording policy is configured" in caplog.text
    row = ctx.rows(capsys)["call-1@test"]
    assert (row["purpose"], row["retention_class"]) == ("unspecified", "default")
    end = datetime.fromisoformat(row["end"].replace("Z", "+00:00"))
    assert row["expires"] == (end + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    started = next(r for r in ctx.audit() if r["event"] == "replay.started")
    assert started["policy"]["configured"] is False
    assert datetime.now(UTC) > end  # sanity: the capture is in the past
