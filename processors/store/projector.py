"""The read-model projector: `message.status` and `status.transitions` into Redis.

A consumer of its own (group `<prefix><app_id>-readmodel`) in every worker started with
a read model. It takes the documents and applied history entries (with their sequence)
from `message.status`, the other outcomes (stale, duplicate, conflict, ignored) from
`status.transitions` (watermark markers skipped), and writes each fetch to Redis in one
idempotent script that also records the next offset of every partition it covers
(readmodel.py). Then it commits to Kafka (for lag monitoring only).

Redis, not Kafka, says where to read: on every assignment, and whenever Redis was down,
each partition is sought to the offset Redis holds (the log start where it holds none).
A batch is written only if Redis still holds the offsets it was read after, and the
offsets are compared every CHECK_EVERY seconds. So a Redis that restarted empty, or from
an older snapshot, is rebuilt from where its data ends; one that was only unreachable
loses nothing: the projector pauses its partitions, waits with a capped backoff, and
catches up. `message.status` never waits for Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition
from prometheus_client import Counter, Gauge

from processors.config import Settings
from processors.kafka import client as kafka_client
from processors.kafka.topics import STATUS, TRANSITIONS
from processors.model import ENGAGEMENT, parse_time, rfc3339
from processors.store.readmodel import Batch, OffsetsMoved, ReadModel, ReadModelUnavailable
from processors.stream import markers
from processors.stream.metrics import READ_MODEL_DROPPED
from processors.transitions import APPLIED

log = logging.getLogger(__name__)

LAG = Gauge(
    "msgstatus_read_model_lag",
    "Records of the read model's inputs not yet written to Redis (owned partitions)",
    ["topic"],
)
RESETS = Counter(
    "msgstatus_read_model_resets_total",
    "Partitions re-read because Redis held less than the read model had written "
    "(Redis restarted empty or from an older snapshot)",
)
PROJECTED = Counter(
    "msgstatus_read_model_records_total", "Input records written to the read model", ["topic"]
)

MAX_RECORDS = 5000
BACKOFF_START = 0.2
BACKOFF_MAX = 10.0
LAG_EVERY = 5.0
CHECK_EVERY = 10.0  # seconds between comparisons of Redis's offsets with ours


def group_id(settings: Settings) -> str:
    return f"{settings.topic_prefix}{settings.app_id}-readmodel"


def partition_name(tp: TopicPartition) -> str:
    return f"{tp.topic}:{tp.partition}"


def _score(observed: str | float | None) -> float:
    """The receive time in whole milliseconds: the resolution `message.status` shows, so
    entries from both topics sort on equal terms."""
    moment = parse_time(observed)
    if moment is None or not math.isfinite(moment):
        return 0.0
    return math.floor(moment * 1000) / 1000


def _member(entry: dict[str, Any]) -> bytes:
    return orjson.dumps(entry, option=orjson.OPT_SORT_KEYS)


def from_status(batch: Batch, value: bytes, record_time: float) -> None:
    """One `message.status` CloudEvent: the message's document and its applied entry."""
    data = orjson.loads(value)["data"]
    key = data["message_key"]
    status = data["status"]
    sequence = int(data["sequence"])
    writes = batch.message(key)
    writes.newest = max(writes.newest, record_time)
    if writes.doc is None or writes.doc["sequence"] <= sequence:
        writes.doc = {
            "message_key": key,
            "provider": data["provider"],
            "provider_message_id": data["provider_message_id"],
            "channel": data["channel"],
            "account": data["account"],
            # an engagement event (opened, clicked, ...) does not change the status
            "status": data["previous_status"] if status in ENGAGEMENT else status,
            "sequence": sequence,
            "error": data["error"],
            "updated_at": data["emitted_at"],
        }
    score = _score(data["observed_at"])
    entry = {
        "status": status,
        "provider_status": data["provider_status"],
        "occurred_at": data["occurred_at"],
        "observed_at": data["observed_at"],
        "outcome": APPLIED,
        "sequence": sequence,
        "observed_ts": score,
    }
    writes.history[_member(entry)] = score


def from_transitions(batch: Batch, value: bytes, record_time: float) -> None:
    """One `status.transitions` record: a history entry per outcome that was not applied
    (applied ones come from `message.status`, with their sequence)."""
    for item in orjson.loads(value)["items"]:
        if item["o"] == APPLIED:
            continue
        event = item["ev"]
        key = f"{event['provider']}:{event['provider_message_id']}"
        observed = float(event["observed_at"])
        entry = {
            "status": event["status"],
            "provider_status": event.get("provider_status"),
            "occurred_at": rfc3339(event.get("occurred_at")),
            "observed_at": rfc3339(observed),
            "outcome": item["o"],
            "observed_ts": observed,  # full precision: two receipts in one ms stay two
        }
        writes = batch.message(key)
        writes.newest = max(writes.newest, record_time)
        writes.history[_member(entry)] = _score(observed)


def build(
    records: Mapping[TopicPartition, list[Any]], status_topic: str, owned: set[TopicPartition]
) -> tuple[Batch, int]:
    """The Redis writes of one fetch, and how many records could not be read at all.

    Offsets are recorded only for partitions this consumer still owns: a batch held
    through a rebalance must not move back the offset the new owner wrote.
    """
    batch = Batch()
    unreadable = 0
    for tp, items in records.items():
        convert = from_status if tp.topic == status_topic else from_transitions
        for record in items:
            if markers.is_marker(record.key):
                continue
            try:
                convert(batch, record.value, record.timestamp / 1000.0)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                unreadable += 1
                log.error(
                    "read model: record %s:%s:%s cannot be read, skipped: %r",
                    tp.topic,
                    tp.partition,
                    record.offset,
                    exc,
                )
        if items and tp in owned:
            batch.offsets[partition_name(tp)] = items[-1].offset + 1
    return batch, unreadable


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, projector: Projector) -> None:
        self.projector = projector

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        for tp in revoked:
            self.projector.expected.pop(tp, None)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self.projector.resync = True  # read new partitions from where Redis says


class Projector:
    def __init__(
        self,
        settings: Settings,
        model: ReadModel,
        *,
        max_records: int = MAX_RECORDS,
        backoff_max: float = BACKOFF_MAX,
        check_every: float = CHECK_EVERY,
    ) -> None:
        self.settings = settings
        self.model = model
        self.max_records = max_records
        self.backoff_max = backoff_max
        self.check_every = check_every
        self.status_topic = settings.topic(STATUS)
        self.topics = [self.status_topic, settings.topic(TRANSITIONS)]
        # per owned partition, the offset Redis holds for it (None: nothing) as far as we
        # know; a batch is written only on top of exactly that
        self.expected: dict[TopicPartition, int | None] = {}
        self.resync = True  # positions must be read from Redis before the next write
        self.consumer: AIOKafkaConsumer | None = None
        self._checked = 0.0
        self._lag_at = 0.0

    def _new_consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            **kafka_client.client_kwargs(self.settings),
            group_id=group_id(self.settings),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(self.settings.session_timeout * 1000),
            heartbeat_interval_ms=int(max(0.5, self.settings.session_timeout / 10) * 1000),
        )

    async def run(self) -> None:
        """Project until cancelled; reconnects to Kafka and Redis by itself.

        The read model is secondary: whatever goes wrong here is logged and retried with
        a new consumer (from the offsets Redis holds), never a reason to stop the worker.
        """
        delay = BACKOFF_START
        while True:
            consumer = self._new_consumer()
            try:
                consumer.subscribe(self.topics, listener=_Rebalance(self))
                await consumer.start()
            except (KafkaError, OSError) as exc:
                log.warning("read model: Kafka not reachable (%r); retrying", exc)
                await consumer.stop()
                await asyncio.sleep(delay)
                delay = min(self.backoff_max, delay * 2)
                continue
            self.consumer = consumer
            self.expected.clear()
            self.resync = True
            try:
                await self._loop(consumer)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("read model: projector failed; starting it again")
                await asyncio.sleep(delay)
                delay = min(self.backoff_max, delay * 2)
            finally:
                self.consumer = None
                await consumer.stop()

    async def _loop(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            if self.resync:
                await self._resync(consumer)
            fetched = await consumer.getmany(timeout_ms=1000, max_records=self.max_records)
            if self.resync:  # partitions moved while fetching: these may be stale
                continue
            if fetched:
                await self.write(consumer, fetched)
            await self._check(consumer)
            await self._export_lag(consumer)

    async def write(
        self, consumer: AIOKafkaConsumer, fetched: dict[TopicPartition, list[Any]]
    ) -> None:
        """Write one fetch to Redis, then commit it. If Redis is down, or does not hold
        what this projector wrote before, nothing is written: the partitions are read
        again from the offsets Redis holds once it answers (`_resync`)."""
        owned = consumer.assignment()
        if any(tp not in self.expected for tp in owned):
            self.resync = True
            return
        batch, unreadable = build(fetched, self.status_topic, owned)
        batch.expected = {partition_name(tp): self.expected[tp] for tp in fetched if tp in owned}
        try:
            refused = await self.model.apply(batch, self.settings.state_retention, time.time())
        except ReadModelUnavailable as exc:
            log.warning("read model: cannot write now (%s); pausing until Redis answers", exc)
            self.resync = True
            return
        except OffsetsMoved:  # _resync says which partitions and counts them
            self.resync = True
            return
        dropped = unreadable + len(refused)
        if dropped:
            READ_MODEL_DROPPED.inc(dropped)
        commit = {}
        for tp, items in fetched.items():
            PROJECTED.labels(tp.topic).inc(len(items))
            if items and tp in owned:
                commit[tp] = self.expected[tp] = items[-1].offset + 1
        if commit:
            try:
                await consumer.commit(commit)
            except KafkaError as exc:  # Redis holds the positions; this is for lag monitoring
                log.info("read model: committing to Kafka failed (%r); Redis has the offsets", exc)

    async def _resync(self, consumer: AIOKafkaConsumer) -> None:
        """Seek every owned partition to the offset Redis holds (the log start where it
        holds none, or one the log does not have). While Redis or Kafka cannot answer,
        wait with a capped backoff, partitions paused, still polling so the group keeps
        this member."""
        delay = BACKOFF_START
        down_since: float | None = None
        while True:
            owned = consumer.assignment()
            consumer.pause(*owned)
            try:
                names = [partition_name(tp) for tp in owned]
                stored = await self.model.positions(names)
                starts = await consumer.beginning_offsets(list(owned)) if owned else {}
                ends = await consumer.end_offsets(list(owned)) if owned else {}
                break
            except (ReadModelUnavailable, KafkaError) as exc:
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning("read model: waiting for Redis (%s)", exc)
                with contextlib.suppress(KafkaError):
                    await consumer.getmany(timeout_ms=int(delay * 1000), max_records=1)
                await self._export_lag(consumer, force=True)
                delay = min(self.backoff_max, delay * 2)
        for tp in owned:
            held = stored[partition_name(tp)]
            known = self.expected.get(tp)
            # more than we knew is a write whose answer was lost: it went through
            if known is not None and (held is None or held < known):
                RESETS.inc()
                log.warning(
                    "read model: Redis holds %s up to offset %s, not %s: re-reading from there",
                    partition_name(tp),
                    held,
                    self.expected[tp],
                )
            want = held
            if want is None or not starts[tp] <= want <= ends[tp]:
                want = starts[tp]
            consumer.seek(tp, want)
            self.expected[tp] = held
        if consumer.assignment() == owned:
            consumer.resume(*owned)
            self.resync = False
        if down_since is not None:
            log.warning("read model: writing again after %.1f s", time.monotonic() - down_since)

    async def _check(self, consumer: AIOKafkaConsumer) -> None:
        """Now and then, compare the offsets Redis holds with ours: a Redis that restarted
        empty while this projector had nothing to write is rebuilt too."""
        now = time.monotonic()
        if now - self._checked < self.check_every:
            return
        self._checked = now
        owned = [tp for tp in consumer.assignment() if tp in self.expected]
        try:
            stored = await self.model.positions([partition_name(tp) for tp in owned])
        except ReadModelUnavailable:
            self.resync = True
            return
        if any(stored[partition_name(tp)] != self.expected[tp] for tp in owned):
            self.resync = True

    async def _export_lag(self, consumer: AIOKafkaConsumer, force: bool = False) -> None:
        """Records not in Redis yet, by topic (owned partitions)."""
        now = time.monotonic()
        if not force and now - self._lag_at < LAG_EVERY:
            return
        self._lag_at = now
        behind = dict.fromkeys(self.topics, 0)
        for tp in consumer.assignment():
            end = consumer.highwater(tp)
            if end is None:
                continue
            done = self.expected.get(tp)
            behind[tp.topic] = behind.get(tp.topic, 0) + max(0, end - (done or 0))
        for topic, count in behind.items():
            LAG.labels(topic).set(count)
