"""What each `recorder` subcommand does; cli.py only parses arguments."""

from __future__ import annotations

import argparse
import sys

from recorder.cli import print_json
from recorder.config import load_config
from recorder.errors import RecorderError
from recorder.runtime.archive import Archive
from recorder.runtime.audit import AuditTrail
from recorder.runtime.fdlimit import raise_open_files_limit
from recorder.runtime.keyfile import generate_master_key, load_key_ring, write_key_file
from recorder.runtime.replay import ReplaySummary, replay
from recorder.runtime.runner import tune_gc


def cmd_keygen(args: argparse.Namespace, actor: str) -> int:
    key = generate_master_key()
    write_key_file(args.path, key)
    if args.archive is not None:
        archive = Archive(args.archive)
        archive.create()
        trail = AuditTrail(archive.audit_path, actor)
        trail.append("key.generated", kid=key.kid)
        trail.close()
    print(key.kid)
    return 0


def cmd_replay(args: argparse.Namespace, actor: str) -> int:
    if args.dev_key and not args.key.exists():
        args.key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = generate_master_key()
        write_key_file(args.key, key)
        print(f"generated a DEVELOPMENT master key {args.key} (kid {key.kid})", file=sys.stderr)
    ring = load_key_ring(args.key)  # a key file, or a key directory (current + older keys)
    config = load_config(args.config)
    tune_gc()
    _, caveat = raise_open_files_limit()
    if caveat is not None:
        print(f"warning: {caveat}", file=sys.stderr)
    summary = replay(
        list(args.captures),
        args.archive,
        ring.current,
        actor,
        config=config,
        recovery_keys=ring.keys,
    )
    _print_summary(summary, args.archive)
    return 0


def _print_summary(s: ReplaySummary, archive: object) -> None:
    out = sys.stdout
    print(f"captures read     {s.files} ({s.frames} frames)", file=out)
    for name in s.truncated_files:
        print(f"  truncated: {name} (read up to the cut)", file=out)
    if s.skipped_packets:
        print(
            f"  skipped: {s.skipped_packets} packet(s) with no usable time or interface", file=out
        )
    print(f"SIP messages      {s.sip_messages}", file=out)
    print(f"RTP packets       {s.rtp_packets} (+{s.rtcp_packets} RTCP ignored)", file=out)
    print(f"calls seen        {s.calls_seen}", file=out)
    print(f"calls recorded    {s.recorded}  -> {archive}", file=out)
    if s.index_writes_waiting:
        print(
            f"  index writes waiting: {s.index_writes_waiting} (the index stayed locked: "
            "made at the next start on this archive)",
            file=out,
        )
    if s.recovered:
        print(f"recovered         {s.recovered} recording(s) left open by a crash", file=out)
    if s.failed:
        print(f"FAILED            {s.failed} recording(s) could not be written", file=out)
    skipped = sum(s.not_recorded.values())
    print(f"calls not recorded {skipped}", file=out)
    for outcome, count in sorted(s.not_recorded.items()):
        print(f"  {outcome:<22} {count}", file=out)
    dropped = sum(s.drops.values())
    print(f"packets dropped   {dropped}", file=out)
    for (layer, reason), count in sorted(s.drops.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {layer}/{reason:<24} {count}", file=out)
    if s.internal_errors:
        print(f"INTERNAL ERRORS   {s.internal_errors} frame(s) skipped (see log)", file=out)


def cmd_list(args: argparse.Namespace, actor: str) -> int:
    from recorder.scale.backends import backends_for

    archive = Archive(args.archive)
    backends = backends_for(archive)  # RECORDER_CONFIG may name a shared index
    backends.require()
    index = backends.open_index()
    try:
        if args.calls:
            calls = [c.to_public_dict() for c in index.list_calls()]
            if args.json:
                print_json(calls)
            else:
                for c in calls:
                    print(f"{c['first_seen']}  {c['outcome']:<13} {c['reason']}  {c['call_id']}")
            return 0
        rows = [r.to_public_dict() for r in index.list_recordings()]
    finally:
        index.close()
    if args.json:
        print_json(rows)
        return 0
    for r in rows:
        state = "complete" if r["complete"] else "INCOMPLETE"
        print(
            f"{r['id']}  {r['start']}  {r['duration_s']:>8.2f}s  {r['caller']} -> {r['callee']}"
            f"  {','.join(r['codecs'])}  {state}"
        )
    return 0


def cmd_export(args: argparse.Namespace, actor: str) -> int:
    from recorder.runtime.export import export_wav

    if args.subject is not None:
        from recorder.compliance.commands import export_subject_command

        return export_subject_command(args, actor)
    if args.recording_id is None:
        raise RecorderError("name a recording id or --subject NUMBER")
    masters = load_key_ring(args.key).keys
    info = export_wav(Archive(args.archive), masters, args.recording_id, args.output, actor)
    print(f"wrote {args.output}: {info}")
    return 0


def cmd_verify(args: argparse.Namespace, actor: str) -> int:
    from recorder.runtime.verify import verify_archive

    masters = load_key_ring(args.key).keys
    report = verify_archive(Archive(args.archive), masters, actor)
    for line in report.failures:
        print(f"FAIL {line}")
    for line in report.notes:
        print(f"note {line}")
    verdict = "OK" if report.ok else "FAILED"
    print(
        f"{verdict}: {report.recordings_ok}/{report.recordings} recordings authentic, "
        f"audit trail {report.audit_records} records "
        f"{'intact' if report.audit_ok else 'BROKEN'}"
    )
    return 0 if report.ok else 1
