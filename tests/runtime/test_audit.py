"""The audit trail: exact bytes, the hash chain, tamper detection, torn tails, concurrency."""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import os
from pathlib import Path
from typing import Any

import pytest

from recorder.errors import ArchiveError
from recorder.runtime.audit import (
    GENESIS,
    AuditTrail,
    audit_path,
    canonical_bytes,
    line_hash,
    record_mac,
    verify_audit,
)
from recorder.runtime.timefmt import parse_rfc3339_ns

TS = 1_704_164_645_123_456_789  # 2024-01-02T03:04:05.123456789Z
MAC_KEY = b"k" * 32


def _trail(archive: Path, n: int, *, mac_key: bytes | None = None) -> Path:
    path = audit_path(archive)
    with AuditTrail(path, "tester", host="box", mac_key=mac_key) as trail:
        for i in range(1, n + 1):
            trail.append("recording.opened", ts_ns=TS + i, sync=False, recording_id=f"r{i}")
    return path


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _write(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


def _failures(path: Path, **kw: Any) -> list[str]:
    return verify_audit(path.parent, **kw).failures


def test_first_record_exact_bytes(tmp_path: Path) -> None:
    path = audit_path(tmp_path)
    with AuditTrail(path, "tester", host="box") as trail:
        record = trail.append("recording.closed", ts_ns=TS, recording_id="r1", size=5, x=None)
    expected = (
        '{"actor":"tester","event":"recording.closed","host":"box","outcome":"ok",'
        f'"pid":{os.getpid()},"prev":"{GENESIS}","recording_id":"r1","seq":1,"size":5,'
        '"ts":"2024-01-02T03:04:05.123456789Z","v":1,"x":null}\n'
    )
    assert path.read_text() == expected
    assert canonical_bytes(record) + b"\n" == expected.encode()
    assert path == tmp_path / "audit" / "audit.jsonl"
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_each_prev_is_the_hash_of_the_line_before(tmp_path: Path) -> None:
    path = _trail(tmp_path, 3)
    lines = [json.loads(line) for line in _lines(path)]
    raw = path.read_bytes().split(b"\n")
    assert [r["seq"] for r in lines] == [1, 2, 3]
    assert lines[1]["prev"] == hashlib.sha256(raw[0]).hexdigest()
    assert lines[2]["prev"] == line_hash(raw[1])


def test_default_timestamp_is_now_in_nanoseconds(tmp_path: Path) -> None:
    import time

    before = time.time_ns()
    with AuditTrail(audit_path(tmp_path), "tester") as trail:
        record = trail.append("verify")
    after = time.time_ns()
    assert isinstance(record["ts"], str)
    assert before <= parse_rfc3339_ns(record["ts"]) <= after
    assert record["host"]


def test_good_trail_verifies(tmp_path: Path) -> None:
    path = _trail(tmp_path, 6)
    report = verify_audit(path.parent)
    assert report.ok
    assert report.failures == []
    assert report.files == [path]
    assert [r["recording_id"] for r in report.records] == [f"r{i}" for i in range(1, 7)]
    assert verify_audit(path).ok  # a file works as well as its folder


def test_reopen_continues_the_chain(tmp_path: Path) -> None:
    path = _trail(tmp_path, 2)
    with AuditTrail(path, "other", host="box") as trail:
        record = trail.append("export", path="x.wav")
    assert record["seq"] == 3
    assert record["prev"] == line_hash(_lines(path)[1].rstrip(b"\n"))
    assert verify_audit(path).ok


def test_deleted_line(tmp_path: Path) -> None:
    path = _trail(tmp_path, 6)
    lines = _lines(path)
    _write(path, lines[:2] + lines[3:])
    assert _failures(path) == [
        "line 3: seq 4 after 2 (line deleted or reordered)",
        "line 3: hash chain broken (prev does not match line 2)",
    ]


def test_deleted_first_line(tmp_path: Path) -> None:
    path = _trail(tmp_path, 3)
    _write(path, _lines(path)[1:])
    assert _failures(path) == [
        "line 1: seq 2 at start (expected 1)",
        "line 1: hash chain broken (first prev is not 64 zeros)",
    ]


def test_edited_field_kept_canonical(tmp_path: Path) -> None:
    path = _trail(tmp_path, 6)
    lines = _lines(path)
    lines[2] = lines[2].replace(b'"recording_id":"r3"', b'"recording_id":"r9"')
    _write(path, lines)
    assert _failures(path) == ["line 4: hash chain broken (prev does not match line 3)"]


def test_edited_field_not_canonical(tmp_path: Path) -> None:
    path = _trail(tmp_path, 6)
    lines = _lines(path)
    lines[2] = lines[2].replace(b'"seq":3', b'"seq": 3')
    _write(path, lines)
    assert _failures(path) == [
        "line 3: not canonical (edited)",
        "line 4: hash chain broken (prev does not match line 3)",
    ]


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        (b"garbage\n", "not valid JSON"),
        (b"\n", "not valid JSON"),
        (b'"just a string"\n', "not a JSON object"),
        (b'{"\xff":1}\n', "not valid UTF-8"),
        (b'{"seq":3.0}\n', "not canonical (edited)"),
        (b'{"seq":NaN}\n', "not canonical (edited)"),
        (b'{"seq":3}\n', "missing field actor"),
    ],
)
def test_unreadable_line(tmp_path: Path, bad: bytes, problem: str) -> None:
    path = _trail(tmp_path, 6)
    lines = _lines(path)
    lines[2] = bad
    _write(path, lines)
    assert _failures(path) == [
        f"line 3: {problem}",
        "line 4: hash chain broken (prev does not match line 3)",
    ]


def test_reordered_lines(tmp_path: Path) -> None:
    path = _trail(tmp_path, 6)
    lines = _lines(path)
    lines[2], lines[3] = lines[3], lines[2]
    _write(path, lines)
    assert _failures(path) == [
        "line 3: seq 4 after 2 (line deleted or reordered)",
        "line 3: hash chain broken (prev does not match line 2)",
        "line 4: seq 3 after 4 (line inserted or reordered)",
        "line 4: hash chain broken (prev does not match line 3)",
        "line 5: seq 5 after 3 (line deleted or reordered)",
        "line 5: hash chain broken (prev does not match line 4)",
    ]


def test_inserted_line_even_when_forged_to_fit(tmp_path: Path) -> None:
    path = _trail(tmp_path, 6)
    lines = _lines(path)
    forged = json.loads(lines[2])
    forged["recording_id"] = "forged"
    _write(path, [*lines[:2], canonical_bytes(forged) + b"\n", *lines[2:]])
    assert _failures(path) == [
        "line 4: seq 3 after 3 (line inserted or reordered)",
        "line 4: hash chain broken (prev does not match line 3)",
    ]


def test_torn_tail_is_reported_then_cut_and_recorded(tmp_path: Path) -> None:
    path = _trail(tmp_path, 6)
    data = path.read_bytes()
    torn = data[: len(data) - 10]
    path.write_bytes(torn)
    tail = torn[torn.rindex(b"\n") + 1 :]
    assert _failures(path) == [f"line 6: torn write (no newline at end, {len(tail)} bytes)"]

    AuditTrail(path, "restarted", host="box").close()  # recovery happens at open
    report = verify_audit(path)
    assert report.ok, report.failures
    last = report.records[-1]
    assert (last["seq"], last["event"], last["actor"]) == (6, "audit.recovered", "restarted")
    assert last["discarded_bytes"] == len(tail)
    assert last["discarded_sha256"] == hashlib.sha256(tail).hexdigest()
    assert last["reason"] == "torn tail"
    assert [r["recording_id"] for r in report.records[:5]] == ["r1", "r2", "r3", "r4", "r5"]


def test_torn_only_line_restarts_from_genesis(tmp_path: Path) -> None:
    path = audit_path(tmp_path)
    path.parent.mkdir()
    path.write_bytes(b'{"half a rec')
    with AuditTrail(path, "tester") as trail:
        trail.append("verify")
    report = verify_audit(path)
    assert report.ok
    assert [(r["seq"], r["event"]) for r in report.records] == [
        (1, "audit.recovered"),
        (2, "verify"),
    ]
    assert report.records[0]["prev"] == GENESIS
    assert report.records[0]["discarded_bytes"] == 12


def test_deleting_whole_last_lines_needs_an_anchor(tmp_path: Path) -> None:
    """Documented limit: the chain alone cannot see lines cut from the end."""
    path = _trail(tmp_path, 6)
    _write(path, _lines(path)[:4])
    assert verify_audit(path).ok


def test_last_line_not_a_record_refuses_to_append(tmp_path: Path) -> None:
    path = _trail(tmp_path, 2)
    with path.open("ab") as f:
        f.write(b"junk\n")
    with pytest.raises(ArchiveError) as info:
        AuditTrail(path, "tester")
    assert str(info.value) == f"audit trail {path}: last line is not a record; run verify"


def test_long_records_span_tail_chunks(tmp_path: Path) -> None:
    path = audit_path(tmp_path)
    with AuditTrail(path, "tester") as trail:
        trail.append("export", path="p" * 10_000)
        trail.append("export", path="q" * 9_000)
        third = trail.append("export")
    assert third["seq"] == 3
    assert verify_audit(path).ok


def test_wire_strings_stay_one_valid_line(tmp_path: Path) -> None:
    path = audit_path(tmp_path)
    with AuditTrail(path, "tester") as trail:
        trail.append("call.not_recorded", call_id="a\nb\u2028c\x00\udcffé", tags=["x", 1, True])
    lines = _lines(path)
    assert len(lines) == 1
    report = verify_audit(path)
    assert report.ok
    assert report.records[0]["call_id"] == "a\nb\u2028c\x00\\udcffé"
    assert report.records[0]["tags"] == ["x", 1, True]


@pytest.mark.parametrize(
    ("args", "fields", "error"),
    [
        (("export",), {"size": 1.5}, TypeError),
        (("export",), {"items": [1, 2.0]}, TypeError),
        (("export",), {"blob": b"raw"}, TypeError),
        (("export",), {"seq": 7}, ValueError),
        (("export",), {"prev": "x"}, ValueError),
        (("Bad Event",), {}, ValueError),
        (("",), {}, ValueError),
    ],
)
def test_invalid_appends_are_refused(
    tmp_path: Path, args: tuple[str], fields: dict[str, Any], error: type[Exception]
) -> None:
    with AuditTrail(audit_path(tmp_path), "tester") as trail, pytest.raises(error):
        trail.append(*args, **fields)
    assert audit_path(tmp_path).read_bytes() == b""


def test_outcome_must_be_ok_or_failure(tmp_path: Path) -> None:
    with AuditTrail(audit_path(tmp_path), "tester") as trail:
        assert trail.append("export", outcome="failure")["outcome"] == "failure"
        with pytest.raises(ValueError, match="outcome"):
            trail.append("export", outcome="maybe")


def test_closed_trail_refuses(tmp_path: Path) -> None:
    trail = AuditTrail(audit_path(tmp_path), "tester")
    trail.close()
    trail.close()
    with pytest.raises(ValueError, match="closed"):
        trail.append("export")


def test_mac_detects_a_rechained_rewrite(tmp_path: Path) -> None:
    path = _trail(tmp_path, 4, mac_key=MAC_KEY)
    assert verify_audit(path, mac_key=MAC_KEY).ok
    assert _failures(path, mac_key=b"x" * 32) == [
        f"line {i}: mac does not verify" for i in range(1, 5)
    ]
    # Someone with write access but not the key edits line 2 and recomputes the chain.
    records = [json.loads(line) for line in _lines(path)]
    records[1]["recording_id"] = "forged"
    prev = GENESIS
    for record in records:
        record["prev"] = prev
        prev = line_hash(canonical_bytes(record))
    _write(path, [canonical_bytes(r) + b"\n" for r in records])
    assert verify_audit(path).ok  # the chain alone cannot see it
    assert _failures(path, mac_key=MAC_KEY) == [  # line 2's content, 3 and 4's prev changed
        f"line {i}: mac does not verify" for i in (2, 3, 4)
    ]


def test_mac_missing(tmp_path: Path) -> None:
    path = _trail(tmp_path, 2)
    assert _failures(path, mac_key=MAC_KEY) == ["line 1: missing mac", "line 2: missing mac"]
    record = json.loads(_lines(_trail(tmp_path / "m", 1, mac_key=MAC_KEY))[0])
    assert record["mac"] == record_mac(MAC_KEY, record)


def test_several_files_chain_in_name_order(tmp_path: Path) -> None:
    path = _trail(tmp_path, 6)
    lines = _lines(path)
    rotated = path.parent / "audit-000001.jsonl"
    _write(rotated, lines[:3])
    _write(path, lines[3:])
    report = verify_audit(path.parent)
    assert report.ok
    assert report.files == [rotated, path]
    assert len(report.records) == 6
    _write(path, lines[4:])
    assert verify_audit(path.parent).failures == [
        "audit.jsonl line 1: seq 5 after 3 (line deleted or reordered)",
        "audit.jsonl line 1: hash chain broken (prev does not match audit-000001.jsonl line 3)",
    ]


def test_no_trail(tmp_path: Path) -> None:
    report = verify_audit(tmp_path / "audit")
    assert not report.ok
    assert report.failures == [f"no audit trail at {tmp_path / 'audit'}"]


def _append_many(path: str, actor: str, count: int, barrier: Any) -> None:
    with AuditTrail(Path(path), actor) as trail:
        barrier.wait(30)  # start together so the appends really interleave
        for i in range(count):
            trail.append("replay.started", n=i)


def test_two_processes_appending_keep_one_chain(tmp_path: Path) -> None:
    path = audit_path(tmp_path)
    AuditTrail(path, "setup").close()
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    workers = [
        ctx.Process(target=_append_many, args=(str(path), f"w{i}", 200, barrier)) for i in (1, 2)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    report = verify_audit(path)
    assert report.ok, report.failures[:5]
    assert [r["seq"] for r in report.records] == list(range(1, 401))
    for actor in ("w1", "w2"):
        assert [r["n"] for r in report.records if r["actor"] == actor] == list(range(200))
    actors = [r["actor"] for r in report.records]
    switches = sum(a != b for a, b in itertools.pairwise(actors))
    assert switches > 1, "the two writers did not overlap; the test proved nothing"


def test_forked_child_reopens_instead_of_sharing_the_lock(tmp_path: Path) -> None:
    path = audit_path(tmp_path)
    trail = AuditTrail(path, "parent")
    trail.append("recording.opened")
    pid = os.fork()
    if pid == 0:  # child: use the inherited object
        code = 1
        try:
            for i in range(100):
                trail.append("export", sync=False, n=i)
            code = 0
        finally:
            os._exit(code)
    for i in range(100):
        trail.append("verify", sync=False, n=i)
    _, status = os.waitpid(pid, 0)
    trail.close()
    assert os.waitstatus_to_exitcode(status) == 0
    report = verify_audit(path)
    assert report.ok, report.failures[:5]
    assert len(report.records) == 201
    assert len({r["pid"] for r in report.records}) == 2


def test_interleaved_writers_each_read_the_others_line(tmp_path: Path) -> None:
    """Each trail keeps the tail of its own last line; a line from another writer in between
    (the file grew) must be read back, or the chain would fork."""
    path = audit_path(tmp_path)
    one, two = AuditTrail(path, "one"), AuditTrail(path, "two")
    for i in range(5):
        one.append("export", sync=False, n=i)
        one.append("export", sync=False, n=i)
        two.append("verify", sync=False, n=i)
    one.close()
    two.close()
    report = verify_audit(path)
    assert report.ok, report.failures
    assert [r["seq"] for r in report.records] == list(range(1, 16))


def test_own_last_line_altered_in_place_is_not_chained_over(tmp_path: Path) -> None:
    """The next append chains to the line as this process wrote it, so an edit of the same
    size made between two appends breaks the chain where it was made."""
    path = audit_path(tmp_path)
    with AuditTrail(path, "tester") as trail:
        trail.append("export", sync=False, recording_id="aaaa")
        lines = _lines(path)
        _write(path, [lines[0].replace(b'"aaaa"', b'"bbbb"')])
        trail.append("export", sync=False, recording_id="cccc")
    assert _failures(path) == ["line 2: hash chain broken (prev does not match line 1)"]
