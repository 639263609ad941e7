"""`msgstatus replay`: append retained raw records to their topic again, workers running.

What it is for: a provider mapping or parser changed and old receipts should be read
again, or a range must be re-derived after an incident. Every stage is idempotent: a
copy of a record msgstatus already processed is a `duplicate` and emits nothing, so
replaying twice emits nothing; only what a changed mapping now reads differently can
produce new statuses, under the usual transition rules. Copies keep their original
receive time, so `delivery_unknown` deadlines are judged in that time.

The range is chosen by Kafka record timestamps (when the gateway or poller wrote the
record): `--since`/`--until`, or `--from-offset N` in every partition; the end is the
log end when the command starts, so its own copies are never read again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from processors.config import Settings
from processors.kafka.offsets import copy, partitions, read_range
from processors.kafka.topics import raw_topic
from processors.ops.kafka import OpsError, connect
from processors.ops.progress import Progress


class UsageError(ValueError):
    """Bad flags (exit status 2)."""


def parse_instant(text: str) -> float:
    """RFC 3339 (`2026-11-20T00:00:00Z`, offsets allowed) -> epoch seconds."""
    try:
        moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"not an RFC 3339 time: {text!r}") from None
    if moment.tzinfo is None:
        raise UsageError(f"time without a zone (add Z or +00:00): {text!r}")
    return moment.timestamp()


@dataclass(frozen=True)
class Selection:
    topics: list[str]
    since: float | None = None  # epoch seconds, inclusive
    until: float | None = None  # epoch seconds, exclusive
    from_offset: int | None = None

    def wants(self, timestamp_ms: int) -> bool:
        ts = timestamp_ms / 1000
        if self.since is not None and ts < self.since:
            return False
        return self.until is None or ts < self.until


def selection(
    settings: Settings,
    registry: dict[str, Any],
    provider: list[str] | None,
    everything: bool,
    since: str | None,
    until: str | None,
    from_offset: int | None,
) -> Selection:
    """Validate the flags of DESIGN.md section 10 into what to read."""
    if bool(provider) == everything:
        raise UsageError("give --provider NAME (repeatable) or --all, not both")
    names = sorted(registry) if everything else list(dict.fromkeys(provider or []))
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise UsageError(
            f"unknown provider(s) {', '.join(unknown)}; known: {', '.join(sorted(registry))}"
        )
    if from_offset is not None and (since is not None or from_offset < 0):
        raise UsageError("--from-offset takes a non-negative offset and excludes --since")
    start = parse_instant(since) if since else None
    stop = parse_instant(until) if until else None
    if start is not None and stop is not None and stop <= start:
        raise UsageError("--until must be later than --since")
    return Selection([raw_topic(settings, n) for n in names], start, stop, from_offset)


@dataclass
class Summary:
    dry_run: bool
    topics: dict[str, int] = field(default_factory=dict)  # topic -> records (to be) copied

    @property
    def records(self) -> int:
        return sum(self.topics.values())

    def to_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "records": self.records, "topics": self.topics}


async def replay(settings: Settings, chosen: Selection, dry_run: bool) -> Summary:
    consumer, producer = await connect(settings, produce=not dry_run)
    summary = Summary(dry_run, {t: 0 for t in chosen.topics})
    try:
        tps = await partitions(consumer, chosen.topics)
        ends = await consumer.end_offsets(tps)
        firsts = await consumer.beginning_offsets(tps)
        if chosen.from_offset is not None:
            starts = {tp: max(firsts[tp], chosen.from_offset) for tp in tps}
        elif chosen.since is not None:
            found = await consumer.offsets_for_times({tp: int(chosen.since * 1000) for tp in tps})
            starts = {tp: found[tp].offset if found[tp] else ends[tp] for tp in tps}
        else:
            starts = dict(firsts)
        pending = []
        # the offset range is known up front; --since/--until may skip some of it
        progress = Progress(
            "replay (dry run)" if dry_run else "replay",
            sum(max(0, ends[tp] - starts[tp]) for tp in tps),
        )
        async for record in read_range(consumer, starts, ends):
            progress.advance()
            if not chosen.wants(record.timestamp):
                continue
            summary.topics[record.topic] += 1
            if producer is not None:
                pending.append(await copy(producer, record))
                if len(pending) >= 5000:
                    await asyncio.gather(*pending)
                    pending.clear()
        await asyncio.gather(*pending)
        progress.finish(f"done: {summary.records:,} {'counted' if dry_run else 'copied'}")
    finally:
        if producer is not None:
            await producer.stop()
        await consumer.stop()
    return summary


__all__ = ["OpsError", "Selection", "Summary", "UsageError", "replay", "selection"]
