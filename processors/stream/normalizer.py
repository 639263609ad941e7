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
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from processors.config import Settings
from processors.stream import metrics
from processors.stream.normalize import encode_dead_letter, normalize, pack_events

log = logging.getLogger(__name__)

# Keeps a canonical record, and the transitions record the ordering agent makes of it
# (events plus outcomes), well under Kafka's 1 MB default message size.
MAX_EVENTS_PER_RECORD = 500
LINGER = 0.05  # seconds a small fetch waits to grow: bounds the latency it adds
# Batches whose writes and commit may be pending while the next one is processed: waiting
# for them idled the stage ~1/3 of its time (an acks=all round trip, then a commit).
IN_FLIGHT = 2

# (topic, key, value, partition) -> the write's future (resolved when acknowledged)
Send = Callable[[str, bytes, bytes, int | None], Awaitable[asyncio.Future]]


class Normalizer:
    def __init__(
        self,
        settings: Settings,
        group_id: str,
        topics: list[str],
        send: Send,
        watermark: Any,
        batch: int = 5000,
    ) -> None:
        self.settings = settings
        self.group_id = group_id
        self.topics = topics
        self.send = send
        self.watermark = watermark
        self.batch = batch
        self.consumer: AIOKafkaConsumer | None = None
        self._committed: dict[Any, int] = {}  # per assigned partition, for the watermark

    def inputs(self) -> list[tuple[Any, int | None, int | None]]:
        """(partition, end offset, committed) of every raw partition this worker reads."""
        consumer = self.consumer
        if consumer is None:
            return [("raw:not-started", None, None)]
        out: list[tuple[Any, int | None, int | None]] = []
        for tp in consumer.assignment():
            try:
                end = consumer.highwater(tp)
            except (AssertionError, KafkaError):
                end = None
            if tp not in self._committed:
                end = None  # its starting point is not known yet: hold the checks
            out.append((tp, end, self._committed.get(tp)))
        return out

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

    async def _learn_assignment(self, consumer: AIOKafkaConsumer) -> None:
        """Where each newly assigned partition starts, so one that has nothing new
        (processed by a previous owner) does not hold the watermark back forever."""
        assigned = consumer.assignment()
        for tp in [tp for tp in self._committed if tp not in assigned]:
            del self._committed[tp]
        for tp in assigned:
            if tp not in self._committed:
                self._committed[tp] = await consumer.committed(tp) or 0

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 << 20,
            session_timeout_ms=int(self.settings.session_timeout * 1000),
            heartbeat_interval_ms=int(max(0.5, self.settings.session_timeout / 10) * 1000),
        )
        await consumer.start()
        self.consumer = consumer
        commits: deque[asyncio.Task[None]] = deque()
        try:
            while True:
                records = await consumer.getmany(timeout_ms=200, max_records=self.batch)
                records = await self._linger(consumer, records)
                await self._learn_assignment(consumer)
                while commits and commits[0].done():
                    await commits.popleft()  # surfaces a failed commit
                if not records:
                    continue
                written, seen = await self._process(records)
                offsets = {tp: recs[-1].offset + 1 for tp, recs in records.items()}
                previous = commits[-1] if commits else None
                commits.append(
                    asyncio.ensure_future(self._commit(consumer, written, seen, offsets, previous))
                )
                while len(commits) > IN_FLIGHT:
                    await commits.popleft()
        finally:
            for task in commits:  # not committed: redelivered to whoever reads next
                task.cancel()
            self.consumer = None
            await consumer.stop()

    async def _commit(
        self,
        consumer: AIOKafkaConsumer,
        written: list[asyncio.Future],
        seen: dict[Any, tuple[int, float | None]],
        offsets: dict[Any, int],
        previous: asyncio.Task[None] | None,
    ) -> None:
        """Commit a batch once what it wrote is acknowledged and the batch before it is
        committed. A write that failed stops the worker (`on_sent`) before this runs.

        Only then does the deadline watermark learn the batch's receive times: a
        `delivered` still on its way to `status.canonical` must hold the checks back."""
        if previous is not None:
            await asyncio.wait([previous])
        if written:
            await asyncio.wait(written)
        for tp, (offset, observed_at) in seen.items():
            self.watermark.processed(tp, offset, observed_at)
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # A rebalance moved partitions away: their next reader starts at the last
            # commit and repeats this batch, which every later stage absorbs.
            log.warning("normalize: offsets not committed after a rebalance: %s", exc)
            return
        self._committed.update(offsets)

    async def _process(
        self, records: dict[Any, list[Any]]
    ) -> tuple[list[asyncio.Future], dict[Any, tuple[int, float | None]]]:
        """Write the batch's outputs; return their futures and, per partition, the last
        offset with the latest receive time seen (for the watermark)."""
        settings = self.settings
        written: list[asyncio.Future] = []
        seen: dict[Any, tuple[int, float | None]] = {}
        raw_prefix = len(settings.topic("raw."))
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
                if result.observed_at is not None or tp not in seen:
                    seen[tp] = (record.offset, result.observed_at)
                else:
                    seen[tp] = (record.offset, seen[tp][1])
                for partition, evs in result.by_partition.items():
                    grouped.setdefault(partition, []).extend(evs)
                for partition, facts in result.conversations.items():  # Messenger watermarks
                    first = (facts["registrations"] or facts["watermarks"])[0]["conversation"]
                    written.append(
                        await self.send(
                            settings.topic("status.conversations"),
                            first.encode(),
                            orjson.dumps(facts),
                            partition,
                        )
                    )
                events += result.events
                for dead in result.dead:
                    metrics.DEADLETTERS.labels(provider).inc()
                    written.append(
                        await self.send(
                            settings.topic("status.deadletter"),
                            dead["id"].encode(),
                            encode_dead_letter(dead),
                            None,
                        )
                    )
            if events:
                metrics.NORMALIZED.labels(provider).inc(events)
        canonical = settings.topic("status.canonical")
        for partition, evs in grouped.items():
            first = f"{evs[0]['provider']}:{evs[0]['provider_message_id']}"
            for value in pack_events(evs):
                written.append(await self.send(canonical, first.encode(), value, partition))
        return written, seen
