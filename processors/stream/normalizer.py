"""The normalize stage: raw topics -> `status.canonical`, in batches.

Normalizing keeps no state, so it does not need Faust's per-message machinery: in a
profile of the worker, Faust's consumer plumbing for the raw topics (a task and an Event
per record, acking, the conductor) took more time than parsing itself. This stage
runs inside the worker as one aiokafka consumer (its own consumer group) reading a few
thousand raw records at a time and writing one canonical record per target partition
and batch through the worker's producer. A batch's offsets are committed only after
every record it wrote is acknowledged (at least once; every later stage is idempotent),
but the stage does not wait for that: it goes on with the next batch while up to
IN_FLIGHT earlier ones wait for their acknowledgements and commits, in order.

After each batch, and every MARK_INTERVAL when idle, it writes watermark markers
(markers.py) into every partition of `status.canonical` and `status.conversations`: for
each raw partition it owns, the receive time up to which that partition is complete
(caught up: the time of the fetch that showed its end; behind: the latest receive time
processed). They go through the same producer as the data, so they follow it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from processors.config import Settings
from processors.kafka import client as kafka_client
from processors.kafka.topics import CANONICAL, CONVERSATIONS, DEADLETTER, raw_topic
from processors.stream import faults, markers, metrics
from processors.stream.normalize import encode_dead_letter, normalize, pack_events

log = logging.getLogger(__name__)

# Keeps a canonical record, and the transitions record the ordering agent makes of it
# (events plus outcomes), well under Kafka's 1 MB default message size.
MAX_EVENTS_PER_RECORD = 500
LINGER = 0.05  # seconds a small fetch waits to grow: bounds the latency it adds
# Batches whose writes and commit may be pending while the next one is processed: waiting
# for them idled the stage ~1/3 of its time (an acks=all round trip, then a commit).
IN_FLIGHT = 2
MARK_INTERVAL = 1.0  # seconds between watermark markers (more often when configured)

# (topic, key, value, partition) -> the write's future (resolved when acknowledged)
Send = Callable[[str, bytes, bytes, int | None], Awaitable[asyncio.Future]]


class Normalizer:
    def __init__(
        self,
        settings: Settings,
        group_id: str,
        topics: list[str],
        send: Send,
        batch: int = 5000,
        mark_interval: float = MARK_INTERVAL,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.group_id = group_id
        self.topics = topics
        self.send = send
        self.batch = batch
        self.mark_interval = mark_interval
        self.client_options = client_options or {}
        self.consumer: AIOKafkaConsumer | None = None
        self._seen: dict[Any, float] = {}  # latest receive time processed, per partition
        self._last_mark = 0.0
        self.markers_sent = 0

    async def _marks(self, consumer: AIOKafkaConsumer) -> dict[str, float]:
        """Raw partition -> receive time up to which it is complete, for those we own."""
        marks: dict[str, float] = {}
        for tp in consumer.assignment():
            name = f"{tp.topic}:{tp.partition}"
            try:
                end = consumer.highwater(tp)
                polled = consumer.last_poll_timestamp(tp)
                position = await consumer.position(tp)
            except (AssertionError, KafkaError):
                continue
            if end is not None and polled and position >= end:
                marks[name] = max(polled / 1000.0, self._seen.get(tp, 0.0))
            elif tp in self._seen:
                marks[name] = self._seen[tp]
        return marks

    async def send_markers(self, consumer: AIOKafkaConsumer) -> None:
        """Tell every canonical and conversations partition how far our raw partitions are
        complete; written after the data handed over before it."""
        topics: dict[str, int] = {}
        for topic in self.topics:
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                return  # metadata not there yet: no claim rather than a wrong one
            topics[topic] = len(parts)
        marks = await self._marks(consumer)
        if not marks:
            return
        partitions = self.settings.partitions
        value = orjson.dumps(markers.raw_marker(marks, topics, partitions))
        for name in (CANONICAL, CONVERSATIONS):
            topic = self.settings.topic(name)
            for partition in range(partitions):
                fut = await self.send(topic, markers.KEY, value, partition)
                del fut  # failures stop the worker (on_sent); markers need no commit
        self.markers_sent += 1

    async def _linger(
        self, consumer: AIOKafkaConsumer, records: dict[Any, list[Any]]
    ) -> dict[Any, list[Any]]:
        """Live traffic arrives a few records per fetch; every canonical record costs the
        ordering and emitter agents Faust's per-record overhead, so a small fetch waits
        LINGER seconds for more (measured: ~5 raw records per canonical record at 2k/s
        without it, and a saturated worker)."""
        count = sum(len(recs) for recs in records.values())
        if not count or count >= self.batch // 10:
            return records
        await asyncio.sleep(LINGER)
        more = await consumer.getmany(timeout_ms=0, max_records=self.batch - count)
        for tp, recs in more.items():
            records.setdefault(tp, []).extend(recs)
        return records

    def _forget_unassigned(self, consumer: AIOKafkaConsumer) -> None:
        assigned = consumer.assignment()
        for tp in [tp for tp in self._seen if tp not in assigned]:
            del self._seen[tp]

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            *self.topics,
            **kafka_client.client_kwargs(self.settings),
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 << 20,
            session_timeout_ms=int(self.settings.session_timeout * 1000),
            heartbeat_interval_ms=int(max(0.5, self.settings.session_timeout / 10) * 1000),
            **self.client_options,
        )
        await consumer.start()
        self.consumer = consumer
        commits: deque[asyncio.Task[None]] = deque()
        try:
            while True:
                records = await consumer.getmany(timeout_ms=200, max_records=self.batch)
                records = await self._linger(consumer, records)
                self._forget_unassigned(consumer)
                while commits and commits[0].done():
                    await commits.popleft()  # surfaces a failed commit
                if not records:
                    await self._maybe_mark(consumer)
                    continue
                written, seen = await self._process(records)
                for tp, moment in seen.items():
                    if moment is not None and moment > self._seen.get(tp, 0.0):
                        self._seen[tp] = moment
                await self._maybe_mark(consumer)
                offsets = {tp: recs[-1].offset + 1 for tp, recs in records.items()}
                previous = commits[-1] if commits else None
                commits.append(
                    asyncio.ensure_future(self._commit(consumer, written, offsets, previous))
                )
                while len(commits) > IN_FLIGHT:
                    await commits.popleft()
        finally:
            if commits:  # a clean stop lets acknowledged batches commit (fewer repeats)
                await asyncio.wait(list(commits), timeout=5)
            for task in commits:  # not committed: redelivered to whoever reads next
                task.cancel()
            self.consumer = None
            await consumer.stop()

    async def _commit(
        self,
        consumer: AIOKafkaConsumer,
        written: list[asyncio.Future],
        offsets: dict[Any, int],
        previous: asyncio.Task[None] | None,
    ) -> None:
        """Commit a batch once what it wrote is acknowledged and the batch before it is
        committed. A write that failed stops the worker (`on_sent`) before this runs."""
        if previous is not None:
            await asyncio.wait([previous])
        if written:
            await asyncio.wait(written)
        faults.point("normalize-before-commit")
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # A rebalance moved partitions away: their next reader starts at the last
            # commit and repeats this batch, which every later stage absorbs.
            log.warning("normalize: offsets not committed after a rebalance: %s", exc)
            return

    async def _maybe_mark(self, consumer: AIOKafkaConsumer) -> None:
        now = time.monotonic()
        if now - self._last_mark >= self.mark_interval:
            self._last_mark = now
            await self.send_markers(consumer)

    async def _process(
        self, records: dict[Any, list[Any]]
    ) -> tuple[list[asyncio.Future], dict[Any, float | None]]:
        """Write the batch's outputs; return their futures and, per partition, the latest
        receive time seen (for the watermark markers)."""
        settings = self.settings
        written: list[asyncio.Future] = []
        seen: dict[Any, float | None] = {}
        raw_prefix = len(raw_topic(settings, ""))
        grouped: dict[int, list[dict[str, Any]]] = {}
        for tp, recs in records.items():
            provider = tp.topic[raw_prefix:]
            events = 0
            for record in recs:
                result = normalize(
                    record.value,
                    record.headers or [],
                    settings.partitions,
                    f"{tp.topic}:{tp.partition}:{record.offset}",
                )
                if result.observed_at is not None:
                    seen[tp] = max(result.observed_at, seen.get(tp) or 0.0)
                for partition, evs in result.by_partition.items():
                    grouped.setdefault(partition, []).extend(evs)
                for partition, facts in result.conversations.items():  # Messenger watermarks
                    first = (facts["registrations"] or facts["watermarks"])[0]["conversation"]
                    written.append(
                        await self.send(
                            settings.topic(CONVERSATIONS),
                            first.encode(),
                            orjson.dumps(facts),
                            partition,
                        )
                    )
                events += result.events
                for dead in result.dead:
                    metrics.DEADLETTERS.labels(
                        provider, dead.get("category") or "unparseable"
                    ).inc()
                    written.append(
                        await self.send(
                            settings.topic(DEADLETTER),
                            dead["id"].encode(),
                            encode_dead_letter(dead),
                            None,
                        )
                    )
            if events:
                metrics.NORMALIZED.labels(provider).inc(events)
        canonical = settings.topic(CANONICAL)
        for partition, evs in grouped.items():
            first = f"{evs[0]['provider']}:{evs[0]['provider_message_id']}"
            for value in pack_events(evs):
                written.append(await self.send(canonical, first.encode(), value, partition))
        return written, seen
