"""The `replay`, `redrive` and `rebuild` subcommands: flags, exit status, what goes to stdout.

Results are JSON on stdout, progress on stderr; exit 0 on success, 2 on bad usage, 1 on
failure (DESIGN.md section 10).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import orjson

from processors import providers
from processors.config import Settings
from processors.ops import rebuild, redrive, replay
from processors.ops.kafka import FAILURES


def add_parsers(sub: Any) -> None:
    r = sub.add_parser("replay", help="append retained raw records again (idempotent)")
    r.add_argument("--provider", action="append", help="a provider's raw topic (repeatable)")
    r.add_argument("--all", action="store_true", help="every provider's raw topic")
    r.add_argument("--since", help="RFC 3339; default: the earliest retained record")
    r.add_argument("--until", help="RFC 3339, exclusive")
    r.add_argument("--from-offset", type=int, help="start at this offset in every partition")
    r.add_argument("--dry-run", action="store_true", help="count, write nothing")
    d = sub.add_parser("redrive", help="re-feed the raw records behind dead letters")
    d.add_argument("--list", action="store_true", help="print the dead letters, write nothing")
    d.add_argument("--dry-run", action="store_true", help="say what would be re-fed")
    d.add_argument("--id", action="append", dest="ids", help="only this dead letter (repeatable)")
    b = sub.add_parser(
        "rebuild", help="recompute state from the raw topics, then switch over (see docs)"
    )
    b.add_argument("--provider", action="append", help="only this provider's messages (repeatable)")
    b.add_argument("--all", action="store_true", help="every message (the default)")
    b.add_argument("--dry-run", action="store_true", help="print what would change, write nothing")
    b.add_argument(
        "--examples", type=int, default=20, help="differing messages to print (default 20)"
    )
    b.add_argument(
        "--stop-timeout",
        type=float,
        default=3600.0,
        help="seconds to wait for the workers to be stopped before switching (default 3600)",
    )
    b.add_argument(
        "--no-read-model", action="store_true", help="do not update the Redis read model"
    )


def _print(payload: Any) -> None:
    sys.stdout.write(orjson.dumps(payload).decode() + "\n")


def _fail(message: str, status: int) -> int:
    print(f"msgstatus: {message}", file=sys.stderr)
    return status


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    try:
        chosen = replay.selection(
            settings,
            providers.REGISTRY,
            args.provider,
            args.all,
            args.since,
            args.until,
            args.from_offset,
        )
    except replay.UsageError as exc:
        return _fail(str(exc), 2)
    try:
        summary = asyncio.run(replay.replay(settings, chosen, args.dry_run))
    except FAILURES as exc:
        return _fail(str(exc), 1)
    _print(summary.to_dict())
    return 0


def cmd_redrive(settings: Settings, args: argparse.Namespace) -> int:
    if args.list and args.ids:
        return _fail("--list prints every dead letter; it takes no --id", 2)
    try:
        letters = asyncio.run(redrive.read_letters(settings))
    except FAILURES as exc:
        return _fail(str(exc), 1)
    if args.list:
        for letter in letters:
            _print({k: letter.get(k) for k in ("id", "reason", "provider", "source", "item")})
        print(f"{len(letters)} dead letters", file=sys.stderr)
        return 0
    chosen = redrive.plan(letters, args.ids)
    if chosen.missing_ids:
        return _fail(f"unknown dead-letter id(s): {', '.join(chosen.missing_ids)}", 1)
    sources = sorted(
        f"{tp.topic}:{tp.partition}:{off}" for tp, offs in chosen.sources.items() for off in offs
    )
    result: dict[str, Any] = {
        "dry_run": args.dry_run,
        "dead_letters": len(chosen.letters),
        "sources": sources,
        "without_source": chosen.unsourced,
    }
    if not args.dry_run and chosen.sources:
        try:
            result.update(asyncio.run(redrive.refeed(settings, chosen.sources)))
        except FAILURES as exc:
            return _fail(str(exc), 1)
    _print(result)
    if result.get("gone"):
        return _fail(f"{len(result['gone'])} source record(s) are gone (retention)", 1)
    return 0


def cmd_rebuild(settings: Settings, args: argparse.Namespace) -> int:
    try:
        req = rebuild.request(
            args.provider,
            args.all,
            args.dry_run,
            args.examples,
            args.stop_timeout,
            not args.no_read_model,
        )
    except rebuild.UsageError as exc:
        return _fail(str(exc), 2)
    try:
        summary = rebuild.main(settings, req)
    except FAILURES as exc:
        return _fail(str(exc), 1)
    _print(summary)
    return 0


def rebuild_switching(settings: Settings, loop: asyncio.AbstractEventLoop) -> bool:
    """For `msgstatus worker`: True (after saying why) while a rebuild switches over, when
    a worker must not start. Kafka unreachable: False, the worker reports that itself."""
    from processors.ops import journal

    try:
        busy = loop.run_until_complete(asyncio.wait_for(journal.switching(settings), 30))
    except Exception:
        return False
    if busy is None:
        return False
    print(
        f"msgstatus worker: rebuild {busy['rebuild']} is switching over the live state "
        f"(since {busy.get('at')}, pid {busy.get('pid')} on {busy.get('host')}); start the "
        "workers when it has finished (run `msgstatus rebuild` to finish an interrupted one)",
        file=sys.stderr,
    )
    return True
