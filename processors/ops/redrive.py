"""`msgstatus redrive`: dead letters back into the stream, once their cause is fixed.

A dead letter names the raw record it came from (`source` = topic:partition:offset).
Redriving appends a copy of that raw record to its topic, so the fixed parser reads it
again: the items of the record that had been fine are duplicates and emit nothing,
the ones that failed now apply (or are dead-lettered again, with a new id). Several
dead letters of one record redrive it once. A bad `/v1/events` item stays bad: its
sender has to send it again, corrected.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import TopicPartition

from processors.config import Settings
from processors.kafka.offsets import copy, partitions, read_range
from processors.kafka.topics import DEADLETTER
from processors.ops.kafka import OpsError, connect
from processors.ops.progress import Progress


def source_of(letter: dict[str, Any]) -> tuple[TopicPartition, int] | None:
    """`raw.events:0:42` -> (raw.events, 0) at offset 42; None when it names no record."""
    source = letter.get("source")
    if not isinstance(source, str):
        return None
    topic, _, rest = source.partition(":")
    partition, _, offset = rest.partition(":")
    if not topic or not partition.isdigit() or not offset.isdigit():
        return None
    return TopicPartition(topic, int(partition)), int(offset)


@dataclass
class Plan:
    letters: list[dict[str, Any]]
    missing_ids: list[str] = field(default_factory=list)
    # (topic, partition) -> offsets of raw records to re-feed
    sources: dict[TopicPartition, set[int]] = field(default_factory=dict)
    unsourced: list[str] = field(default_factory=list)  # ids whose source is unusable


def plan(letters: list[dict[str, Any]], ids: list[str] | None) -> Plan:
    """Which raw records to re-feed for the chosen dead letters (all when `ids` is None)."""
    by_id = {str(letter.get("id")): letter for letter in letters}
    chosen = letters if not ids else [by_id[i] for i in ids if i in by_id]
    result = Plan(chosen, missing_ids=[i for i in ids or [] if i not in by_id])
    for letter in chosen:
        found = source_of(letter)
        if found is None:
            result.unsourced.append(str(letter.get("id")))
            continue
        tp, offset = found
        result.sources.setdefault(tp, set()).add(offset)
    return result


async def read_letters(settings: Settings) -> list[dict[str, Any]]:
    consumer, _ = await connect(settings, produce=False)
    letters = []
    try:
        tps = await partitions(consumer, [settings.topic(DEADLETTER)])
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        progress = Progress("reading dead letters", sum(ends[tp] - starts[tp] for tp in tps))
        async for record in read_range(consumer, starts, ends):
            progress.advance()
            try:
                letters.append(orjson.loads(record.value))
            except orjson.JSONDecodeError:
                letters.append(
                    {
                        "id": record.key.decode(errors="replace") if record.key else None,
                        "reason": "unreadable dead letter",
                        "source": None,
                    }
                )
        progress.finish()
    finally:
        await consumer.stop()
    return letters


async def refeed(settings: Settings, sources: dict[TopicPartition, set[int]]) -> dict[str, Any]:
    """Append a copy of each named raw record; reports the ones retention already removed."""
    consumer, producer = await connect(settings)
    assert producer is not None
    copied, gone = 0, []
    try:
        existing = set(await partitions(consumer, {tp.topic for tp in sources}))
        for tp in sources:
            if tp not in existing:
                raise OpsError(f"{tp.topic} has no partition {tp.partition}")
        firsts = await consumer.beginning_offsets(list(sources))
        ends = await consumer.end_offsets(list(sources))
        pending = []
        progress = Progress("redrive", sum(len(offsets) for offsets in sources.values()))
        for tp, offsets in sources.items():
            for offset in sorted(offsets):
                progress.advance()
                if not firsts[tp] <= offset < ends[tp]:
                    gone.append(f"{tp.topic}:{tp.partition}:{offset}")
                    continue
                async for record in read_range(consumer, {tp: offset}, {tp: offset + 1}):
                    pending.append(await copy(producer, record))
                    copied += 1
        await asyncio.gather(*pending)
        progress.finish(f"done: {copied:,} re-fed, {len(gone):,} gone")
    finally:
        await producer.stop()
        await consumer.stop()
    return {"records": copied, "gone": gone}
