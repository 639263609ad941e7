"""The switch-over of `msgstatus rebuild`, one partition at a time.

Every message lives in one partition number across `message.status`, the changelogs
and the internal topics (all keyed by message_key, same partitioner), so a partition
of each generation is compared and switched on its own, holding one partition's
messages in memory at a time.

For partition p, with every live worker stopped:

1. compare: read p of the live and the shadow `message.status` and of both
   generations' `ordering` and `emitter` changelogs (the last value per key), and judge
   each in-scope message (corrections.py);
2. plan: write what the switch will do for p (table values, correction events) to the
   shadow's plan topic, then a `planned` mark;
3. apply: append the new table values to the live changelogs (the stopped workers'
   recovery reads them into RocksDB at the next start, like any changelog record), then
   publish the corrections on the live `message.status`, then update the read model;
   then an `applied` mark.

A switch interrupted anywhere is resumed by running `msgstatus rebuild` again: planned
partitions are applied again from their plan (the same bytes: a correction published
twice has the same id), the others are compared afresh. The live state is never
compared after part of its partition was written.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from processors.config import Settings
from processors.kafka.offsets import read_range
from processors.kafka.topics import STATUS, changelog_topic
from processors.ops import corrections as c
from processors.ops.progress import Progress
from processors.store.readmodel import ReadModel, ReadModelUnavailable
from processors.stream import faults

log = logging.getLogger(__name__)

PLAN = "status.rebuildplan"  # under the shadow's prefix: deleted with it
PENDING_KEY = "~pending"
HORIZON_MARGIN = 60.0  # seconds of receive-time skew between gateways


@dataclass(frozen=True)
class Scope:
    """Which messages a rebuild may change: all, or those of some providers."""

    providers: frozenset[str] | None = None

    def wants(self, key: str) -> bool:
        return self.providers is None or key.partition(":")[0] in self.providers


@dataclass
class Tally:
    """What the rebuild found (the summary on stdout)."""

    examples_limit: int = 20
    kinds: Counter[str] = field(default_factory=Counter)
    changed: dict[str, Counter[str]] = field(default_factory=dict)  # provider -> transitions
    corrections: Counter[str] = field(default_factory=Counter)  # status -> events
    examples: list[dict[str, Any]] = field(default_factory=list)

    def add(self, verdict: c.Verdict) -> None:
        self.kinds[verdict.kind] += 1
        if verdict.kind not in (c.CHANGED, c.NEW):
            return
        provider = verdict.key.partition(":")[0]
        live = c.final_status_of(verdict.live) or "(none)"
        rebuilt = c.final_status_of(verdict.rebuilt) or "(none)"
        self.changed.setdefault(provider, Counter())[f"{live} -> {rebuilt}"] += 1
        for event in verdict.events:
            self.corrections[event["data"]["status"]] += 1
        if len(self.examples) < self.examples_limit:
            self.examples.append(
                {
                    "message_key": verdict.key,
                    "kind": verdict.kind,
                    "live": verdict.live,
                    "rebuilt": verdict.rebuilt,
                    "corrections": [
                        [e["data"]["sequence"], e["data"]["status"]] for e in verdict.events
                    ],
                }
            )

    def to_dict(self) -> dict[str, Any]:
        kinds = (c.UNCHANGED, c.CHANGED, c.NEW, c.MISSING, c.INCOMPLETE)
        return {
            "messages": {
                "compared": sum(self.kinds.values()),
                **{kind: self.kinds.get(kind, 0) for kind in kinds},
            },
            "changed": {p: dict(sorted(n.items())) for p, n in sorted(self.changed.items())},
            "corrections": {
                "events": sum(self.corrections.values()),
                "by_status": dict(sorted(self.corrections.items())),
            },
            "examples": self.examples,
        }


@dataclass
class Generation:
    """The topics of one generation that the switch reads."""

    status: str
    ordering: str
    emitter: str

    @classmethod
    def of(cls, settings: Settings) -> Generation:
        return cls(
            settings.topic(STATUS),
            changelog_topic(settings, "ordering"),
            changelog_topic(settings, "emitter"),
        )

    def topics(self) -> list[str]:
        return [self.status, self.ordering, self.emitter]


class Reader:
    """Reads whole partitions (up to the end found when asked) with one consumer."""

    def __init__(self, consumer: AIOKafkaConsumer, progress: Progress | None = None) -> None:
        self.consumer = consumer
        self.progress = progress

    async def records(self, topics: list[str], partition: int) -> AsyncIterator[Any]:
        """Partition `partition` of every topic, read together (one fetch loop)."""
        tps = [TopicPartition(topic, partition) for topic in topics]
        starts = await self.consumer.beginning_offsets(tps)
        ends = await self.consumer.end_offsets(tps)
        async for record in read_range(self.consumer, starts, ends):
            if self.progress is not None:
                self.progress.advance()
            yield record


@dataclass
class Snapshot:
    """One partition of one generation: its messages' events and table values."""

    events: dict[str, c.Published] = field(default_factory=dict)
    ordering: dict[str, bytes] = field(default_factory=dict)
    emitter: dict[str, bytes] = field(default_factory=dict)


async def snapshots(
    reader: Reader, live: Generation, shadow: Generation, partition: int, scope: Scope
) -> tuple[Snapshot, Snapshot]:
    """Both generations' partition, the in-scope messages only (plus the live emitter's
    `~pending` count); table values are the last per key, deleted keys left out."""
    old, new = Snapshot(), Snapshot()
    tables: dict[str, dict[str, bytes | None]] = {}
    route: dict[str, tuple[Snapshot, str]] = {}
    for generation, snap in ((live, old), (shadow, new)):
        route[generation.status] = (snap, "events")
        route[generation.ordering] = (snap, "ordering")
        route[generation.emitter] = (snap, "emitter")
    async for record in reader.records(list(route), partition):
        if record.key is None:
            continue
        snap, kind = route[record.topic]
        key = record.key.decode()
        if kind == "events":
            if record.value is not None and scope.wants(key):
                snap.events.setdefault(key, c.Published()).add(orjson.loads(record.value))
        elif (key == PENDING_KEY and snap is old) or (not key.startswith("~") and scope.wants(key)):
            tables.setdefault(record.topic, {})[key] = record.value
    for generation, snap in ((live, old), (shadow, new)):
        for kind in ("ordering", "emitter"):
            found = tables.get(getattr(generation, kind), {})
            setattr(snap, kind, {k: v for k, v in found.items() if v is not None})
    return old, new


async def horizon(consumer: AIOKafkaConsumer, raw: list[TopicPartition]) -> float | None:
    """The receive time before which raw records may have left (retention): the latest
    first-retained record over the partitions that lost records; None if none did."""
    starts = await consumer.beginning_offsets(raw)
    latest: float | None = None
    for tp, start in starts.items():
        if start <= 0:
            continue
        async for record in read_range(consumer, {tp: start}, {tp: start + 1}):
            moment = record.timestamp / 1000.0
            latest = moment if latest is None else max(latest, moment)
    return None if latest is None else latest + HORIZON_MARGIN


@dataclass
class PartitionPlan:
    partition: int
    entries: list[dict[str, Any]] = field(default_factory=list)
    pending: int | None = None  # the live emitter's new `~pending` count, when it changes


async def compare(
    reader: Reader,
    live: Generation,
    shadow: Generation,
    partition: int,
    scope: Scope,
    limit: float | None,
    rebuild: str,
    emitted_at: float,
    tally: Tally,
) -> PartitionPlan:
    """Judge every in-scope message of one partition and plan its switch."""
    old, new = await snapshots(reader, live, shadow, partition, scope)
    return plan_partition(partition, old, new, limit, rebuild, emitted_at, tally)


def plan_partition(
    partition: int,
    old: Snapshot,
    new: Snapshot,
    limit: float | None,
    rebuild: str,
    emitted_at: float,
    tally: Tally,
) -> PartitionPlan:
    """What the switch writes for one partition (pure): the rebuilt ordering state of
    every message it does not leave alone, and for changed ones the emitter state, the
    corrections and the read-model document."""
    plan = PartitionPlan(partition)
    pending = int(old.emitter.get(PENDING_KEY) or 0)
    delta = 0
    empty = c.Published()
    for key in sorted(set(old.events) | set(new.events) | set(new.ordering)):
        raw_emitter = old.emitter.get(key)
        old_emitter = orjson.loads(raw_emitter) if raw_emitter else None
        verdict = c.judge(
            key,
            old.events.get(key, empty),
            int((old_emitter or {}).get("seq", 0)),
            new.events.get(key, empty),
            limit,
            rebuild,
            emitted_at,
        )
        if verdict.events and key not in new.emitter:  # expired from the shadow's state
            log.warning("%s: no emitter state in the rebuilt generation; left as it is", key)
            verdict.kind, verdict.events = c.INCOMPLETE, []
        if verdict.live or verdict.rebuilt:
            tally.add(verdict)
        if verdict.kind in (c.MISSING, c.INCOMPLETE) or key not in new.ordering:
            continue  # left as it is
        value, index, keys = c.ordering_value(
            key, new.ordering[key], old.ordering.get(key), old_emitter
        )
        entry: dict[str, Any] = {"key": key, "ordering": value.decode(), "ordering_index": keys}
        if verdict.events:
            state = orjson.loads(new.emitter[key])
            emitter, emitter_keys = c.emitter_value(key, state, verdict.sequence, index)
            entry.update(
                emitter=emitter.decode(),
                emitter_index=emitter_keys,
                events=verdict.events,
                doc=c.read_model_doc(orjson.loads(emitter), verdict.events),
            )
            delta += (state.get("dl") is not None) - ((old_emitter or {}).get("dl") is not None)
        plan.entries.append(entry)
    if delta:
        plan.pending = max(0, pending + delta)
    return plan


class Plans:
    """The shadow's plan topic: what each partition's switch writes, and how far it got."""

    def __init__(self, topic: str, producer: AIOKafkaProducer, reader: Reader) -> None:
        self.topic = topic
        self.producer = producer
        self.reader = reader

    async def load(self, partition: int) -> tuple[str | None, PartitionPlan]:
        """(`planned` | `applied` | None, the plan written last)."""
        state: str | None = None
        plan = PartitionPlan(partition)
        async for record in self.reader.records([self.topic], partition):
            item = orjson.loads(record.value)
            kind = item["kind"]
            if kind == "begin":
                state, plan = None, PartitionPlan(partition)
            elif kind == "message":
                plan.entries.append(item["entry"])
            elif kind == "pending":
                plan.pending = item["value"]
            elif kind in ("planned", "applied"):
                state = kind
        return state, plan

    async def _send(self, partition: int, item: dict[str, Any]) -> asyncio.Future:
        return await self.producer.send(self.topic, orjson.dumps(item), partition=partition)

    async def save(self, plan: PartitionPlan) -> None:
        p = plan.partition
        sent = [await self._send(p, {"kind": "begin"})]
        for entry in plan.entries:
            sent.append(await self._send(p, {"kind": "message", "entry": entry}))
        if plan.pending is not None:
            sent.append(await self._send(p, {"kind": "pending", "value": plan.pending}))
        await asyncio.gather(*sent)
        await (await self._send(p, {"kind": "planned", "entries": len(plan.entries)}))

    async def done(self, partition: int) -> None:
        await (await self._send(partition, {"kind": "applied"}))


async def apply(
    producer: AIOKafkaProducer,
    live: Settings,
    plan: PartitionPlan,
    read_model: ReadModel | None,
) -> int:
    """Write one partition's plan to the live changelogs, then publish its corrections.
    Returns the number of events published."""
    p = plan.partition
    ordering, emitter = changelog_topic(live, "ordering"), changelog_topic(live, "emitter")
    sent = []

    async def put(topic: str, key: str, value: bytes) -> None:
        sent.append(await producer.send(topic, value, key=key.encode(), partition=p))

    for entry in plan.entries:
        await put(ordering, entry["key"], entry["ordering"].encode())
        for index_key in entry["ordering_index"]:
            await put(ordering, index_key, b"")
        if "emitter" in entry:
            await put(emitter, entry["key"], entry["emitter"].encode())
            for index_key in entry["emitter_index"]:
                await put(emitter, index_key, b"")
    if plan.pending is not None:
        await put(emitter, PENDING_KEY, str(plan.pending).encode())
    await asyncio.gather(*sent)
    sent.clear()
    faults.point("rebuild-applying")
    status = live.topic(STATUS)
    docs, notes = [], []
    for entry in plan.entries:
        for event in entry.get("events", ()):
            await put(status, entry["key"], orjson.dumps(event))
            notes.append((entry["key"], c.read_model_note(event)))
        if entry.get("doc"):
            docs.append(entry["doc"])
    await asyncio.gather(*sent)
    if read_model is not None and docs:
        try:
            await read_model.write(docs, notes)
        except ReadModelUnavailable as exc:
            log.warning("read model not updated for partition %d: %s", p, exc)
    return len(notes)
