"""Subcommands of the compliance controls: retention, hold, erase, search, keys, control.
(`export --subject` is `export_subject_command`, called by `recorder export`.)"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from recorder.cli import print_json
from recorder.config import load_config
from recorder.errors import RecorderError
from recorder.runtime.archive import Archive
from recorder.runtime.timefmt import parse_rfc3339_ns, rfc3339_ns


def register(sub: Any, common: Any) -> None:
    """Add this area's subcommands to the `recorder` parser (see cli.Common)."""
    p = sub.add_parser("retention", help="delete what has expired; extend a retention")
    acts = p.add_subparsers(dest="retention_action", required=True)
    run = acts.add_parser("run", help="delete every expired recording (audited)")
    common.archive_arg(run)
    common.actor_arg(run)
    run.add_argument("--config", type=Path, help="YAML config (retention classes)")
    run.add_argument("--now", metavar="RFC3339", help="an earlier time to act as now (audited)")
    run.add_argument("--dry-run", action="store_true", help="only say what would go")
    ext = acts.add_parser("extend", help="keep recordings longer (e.g. an authority's request)")
    ext.add_argument("recording_ids", nargs="*")
    ext.add_argument("--number", help="every recording of this number")
    ext.add_argument("--until", required=True, metavar="RFC3339")
    ext.add_argument("--reason", required=True)
    ext.add_argument("--config", type=Path, help="YAML config (retention classes)")
    common.archive_arg(ext)
    common.actor_arg(ext)

    p = sub.add_parser("hold", help="set or clear a legal hold (held recordings are kept)")
    p.add_argument("hold_action", choices=("set", "clear", "list"))
    p.add_argument("recording_ids", nargs="*")
    p.add_argument("--number", help="every recording of this number")
    p.add_argument("--reason", default="", help="why (required to set or clear)")
    common.archive_arg(p)
    common.actor_arg(p)

    p = sub.add_parser("erase", help="erasure request: delete a subject's recordings")
    p.add_argument("--number", required=True)
    p.add_argument("--reference", default="", help="the request's case reference (audited)")
    p.add_argument("--dry-run", action="store_true")
    common.archive_arg(p)
    common.actor_arg(p)

    p = sub.add_parser("search", help="find recordings by number, time and purpose (audited)")
    p.add_argument("--number")
    p.add_argument("--from", dest="start_from", metavar="RFC3339", help="started at or after")
    p.add_argument("--to", dest="start_to", metavar="RFC3339", help="started before")
    p.add_argument("--purpose")
    p.add_argument("--json", action="store_true")
    common.archive_arg(p)
    common.actor_arg(p)

    p = sub.add_parser("keys", help="master key rotation: rotate, rewrap, retire, list")
    p.add_argument("keys_action", choices=("rotate", "rewrap", "retire", "list"))
    p.add_argument("--import", dest="import_file", type=Path, help="rotate: key file to bring in")
    common.archive_arg(p)
    common.key_arg(p)
    common.actor_arg(p)

    p = sub.add_parser("control", help="pause/resume/stop a live call's recording (PCI DSS)")
    p.add_argument("control_action", choices=("pause", "resume", "stop"))
    p.add_argument("--call-id")
    p.add_argument("--number")
    p.add_argument("--reason", default="")
    p.add_argument("--socket", type=Path, required=True)
    p.add_argument("--token-file", type=Path, required=True)


def _time(text: str | None, flag: str) -> int | None:
    if text is None:
        return None
    if len(text) == 10:  # a date: its midnight UTC
        text += "T00:00:00Z"
    try:
        return parse_rfc3339_ns(text)
    except ValueError:
        raise RecorderError(f"{flag} {text!r} is not an RFC 3339 UTC time") from None


def cmd_retention(args: argparse.Namespace, actor: str) -> int:
    from recorder.compliance.retention import build_expiry_rule, resolve_now, run_retention
    from recorder.scale.backends import config_for

    archive = Archive(args.archive)
    # --config, else the node's config named by RECORDER_CONFIG, else every default
    config = load_config(args.config) if args.config else config_for(archive) or load_config(None)
    if args.retention_action == "extend":
        return _extend(args, actor, archive, build_expiry_rule(config))
    now, given = resolve_now(args.now)
    report = run_retention(archive, config, actor, now, clock_given=given, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    print(
        f"retention at {rfc3339_ns(now, digits=0)}: {verb} {len(report.deleted)}, "
        f"kept {len(report.kept)}, calls purged {report.calls_purged}"
    )
    for rid in report.deleted:
        print(f"  {verb} {rid}")
    for rid, why in report.kept.items():
        print(f"  kept {rid}: {why}")
    return 0


def _extend(args: argparse.Namespace, actor: str, archive: Archive, classes: Any) -> int:
    from recorder.compliance.retention import extend_retention
    from recorder.runtime.audit import AuditTrail
    from recorder.scale.backends import CommandStores, bind, ship_trail

    until = _time(args.until, "--until")
    assert until is not None
    if args.config is not None:
        bind(archive, load_config(args.config))  # its index, keys and bucket too
    refused = 0
    with (
        CommandStores(archive, keys=False) as stores,
        AuditTrail(archive.audit_path, actor) as audit,
    ):
        index = stores.index
        rows = [index.get(rid) for rid in args.recording_ids]
        if args.number:
            rows += index.find_recordings(number=args.number)
        if not rows:
            raise RecorderError("name recordings by id or --number")
        for row in rows:
            if row is None:
                raise RecorderError("no such recording in the index")
            why = extend_retention(index, audit, classes, row, until, args.reason, stores.sync)
            print(f"{row.id}: {'extended' if why is None else 'REFUSED: ' + why}")
            refused += why is not None
    ship_trail(archive)
    return 1 if refused else 0


def cmd_hold(args: argparse.Namespace, actor: str) -> int:
    from recorder.compliance.subject import set_holds
    from recorder.scale.backends import CommandStores

    archive = Archive(args.archive)
    if args.hold_action == "list":
        with CommandStores(archive, keys=False) as stores:
            for hold in stores.index.holds():
                print(
                    f"{hold.recording_id}  since {rfc3339_ns(hold.set_ns, digits=0)}"
                    f"  by {hold.actor}: {hold.reason}"
                )
        return 0
    if not args.recording_ids and not args.number:
        raise RecorderError("name recordings by id or --number")
    changed = set_holds(
        archive,
        args.recording_ids,
        args.number,
        args.reason,
        actor,
        clear=args.hold_action == "clear",
    )
    for rid in changed:
        print(f"{'released' if args.hold_action == 'clear' else 'held'} {rid}")
    if not changed:
        print("no recording changed")
    return 0


def cmd_erase(args: argparse.Namespace, actor: str) -> int:
    from recorder.compliance.subject import erase

    report = erase(Archive(args.archive), args.number, actor, args.reference, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    for rid in report.deleted:
        print(f"{verb} {rid}")
    for rid, why in report.kept.items():
        print(f"kept {rid}: {why}")
    print(
        f"{verb} {len(report.deleted)}, kept {len(report.kept)}, "
        f"entries of calls not recorded removed {report.calls_removed}"
    )
    return 0


def cmd_search(args: argparse.Namespace, actor: str) -> int:
    from recorder.compliance.subject import Criteria, search

    criteria = Criteria(
        number=args.number,
        start_from_ns=_time(args.start_from, "--from"),
        start_to_ns=_time(args.start_to, "--to"),
        purpose=args.purpose,
    )
    rows = [r.to_public_dict() for r in search(Archive(args.archive), criteria, actor)]
    if args.json:
        print_json(rows)
        return 0
    for r in rows:
        print(
            f"{r['id']}  {r['start']}  {r['caller']} -> {r['callee']}  {r['purpose']}"
            f"  {r['retention_class']}  expires {r['expires']}"
        )
    return 0


def cmd_keys(args: argparse.Namespace, actor: str) -> int:
    from recorder.compliance import keys
    from recorder.runtime.keyfile import load_key_ring
    from recorder.scale.backends import kids_in_use

    archive = Archive(args.archive)
    if args.keys_action == "rotate":
        print(keys.rotate(archive, args.key, actor, args.import_file))
        return 0
    if args.keys_action == "rewrap":
        report = keys.rewrap(archive, load_key_ring(args.key), actor)
        for kid, count in sorted(report.rewrapped.items()):
            print(f"re-wrapped {count} file key(s) from {kid}")
        for rid, why in report.failed.items():
            print(f"FAILED {rid}: {why}")
        return 1 if report.failed else 0
    if args.keys_action == "retire":
        retired = keys.retire(archive, args.key, actor)
        print("\n".join(f"retired {kid}" for kid in retired) or "nothing to retire")
        return 0
    ring = load_key_ring(args.key)
    in_use = kids_in_use(archive)
    for kid in sorted(set(ring.keys) | set(in_use)):
        mark = "current" if kid == ring.current.kid else "loaded" if kid in ring.keys else "MISSING"
        print(f"{kid}  {mark:<8} wraps {in_use.get(kid, 0)} file key(s)")
    return 0


def cmd_control(args: argparse.Namespace, actor: str) -> int:
    from recorder.compliance.control import read_token, send_request

    if not (args.call_id or args.number):
        raise RecorderError("name the call by --call-id or --number")
    request = {
        "token": read_token(args.token_file).decode(),
        "action": args.control_action,
        "reason": args.reason or actor,
    }
    if args.call_id:
        request["call_id"] = args.call_id
    if args.number:
        request["number"] = args.number
    try:
        reply = send_request(args.socket, request)
    except OSError as exc:
        raise RecorderError(f"cannot reach the recorder at {args.socket}: {exc}") from None
    print(reply, file=sys.stdout)
    return 0 if reply.get("ok") else 1


def export_subject_command(args: argparse.Namespace, actor: str) -> int:
    """`recorder export --subject N -o DIR`: the subject's recordings and a manifest."""
    from recorder.compliance.subject import export_subject
    from recorder.runtime.keyfile import load_key_ring

    if args.recording_id:
        raise RecorderError("give a recording id or --subject, not both")
    ring = load_key_ring(args.key)
    manifest = export_subject(Archive(args.archive), ring.keys, args.subject, args.output, actor)
    print(f"wrote {len(manifest['recordings'])} recording(s) and manifest.json to {args.output}")
    return 0
