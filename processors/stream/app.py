"""The Faust app: topics, tables and the three agents wired to the pure logic.

Agents are `async for` loops that call normalize/ordering/emission functions; all
decisions live there. State changes happen only while an event is being processed
(Faust's rule), so the deadline timer sends check records instead of touching tables.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import faust
import orjson
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode import CrashingSupervisor

from processors import kafka_client, providers
from processors.config import Settings
from processors.store.readmodel import ReadModel, ReadModelUnavailable
from processors.stream import deadlines, metrics, restore
from processors.stream.emission import Emitter, Policy
from processors.stream.fasttable import FastTable
from processors.stream.normalizer import Normalizer
from processors.stream.ordering import order_record
from processors.stream.watermarks import expand_record
from processors.stream.writers import PartitionWriters
from processors.topics import (
    CANONICAL,
    CONVERSATIONS,
    STATUS,
    TRANSITIONS,
    partition_for,
    raw_topic,
)

log = logging.getLogger(__name__)

# Faust enables idempotence only inside transactions; we run at-least-once and want
# acks=all writes that cannot be duplicated or reordered by producer retries.
faust_aiokafka.Producer._settings_extra = lambda self: {"enable_idempotence": True}  # type: ignore[method-assign]


class _NoReadOffsets(dict):
    """Disables Faust's fetch-side read-offset filter (faust-streaming 0.15.x).

    After a rebalance Faust seeks to the committed offset, but a fetch of the old
    generation that is still in flight then overwrites the read offset; the refetched
    records below it are silently dropped as "already read", and the gap logic even acks
    some of them. We saw records committed that no agent ever processed (tests/integration/
    test_worker_crash.py). Our topics have no transactions or compaction, so there are no
    real gaps, and every agent is idempotent, so delivering a record twice is harmless.
    """

    def __getitem__(self, key: Any) -> None:
        return None

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def update(self, *args: Any, **kwargs: Any) -> None:
        pass


_original_consumer_init = faust_consumer.Consumer.__init__


def _consumer_init(self: Any, *args: Any, **kwargs: Any) -> None:
    _original_consumer_init(self, *args, **kwargs)
    self._read_offset = _NoReadOffsets()


faust_consumer.Consumer.__init__ = _consumer_init  # type: ignore[method-assign]

# Faust builds its consumer with fetch_max_wait_ms=1500: a fetch for partitions that
# have nothing new waits at the broker up to 1.5 s, and while it is in flight aiokafka
# cannot fetch the partitions whose records the agents just finished. Each hop between
# the worker's own stages then waited for it (the ordering agent waited for input two
# thirds of the time while records were ready). MSGSTATUS_FETCH_MAX_WAIT_MS sets it; an
# idle worker then fetches that often (measured: ~3 % of a core more for the worker and
# ~6 % for the broker at 20 ms than at 1500 ms).
FETCH_WAIT_ATTR = "msgstatus_fetch_max_wait_ms"


def _create_worker_consumer(self: Any, transport: Any) -> Any:
    consumer = _original_worker_consumer(self, transport)
    wait = getattr(self.app, FETCH_WAIT_ATTR, None)
    if wait is not None:
        consumer._fetch_max_wait_ms = wait  # read when the consumer starts
    return consumer


_original_worker_consumer = faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer
faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer  # type: ignore[method-assign]

# Table recovery copies changelog bytes in bulk before Faust's per-event path runs.
restore.install()

NOISY_LOGGERS = ("faust", "mode", "aiokafka", "kafka", "rocksdict", "asyncio")


def quiet_logging(level: str) -> None:
    """Faust leaves the root logger at DEBUG; building discarded records costs ~12 %."""
    numeric = (
        logging.getLevelName(level)
        if isinstance(logging.getLevelName(level), int)
        else logging.WARNING
    )
    logging.getLogger().setLevel(numeric)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))


class Watermark:
    """How far in receive time every upstream input of this worker is known complete.

    A deadline may fire only when nothing received before it can still be on its way.
    For each raw and canonical partition this worker reads, it remembers the offset and
    receive time (`observed_at`) of the last record processed; a partition that still has
    unread records holds the watermark at that receive time, and one whose end is not
    known yet (start-up, table recovery) holds every check back. So a `delivered` that
    waits upstream (a restart, a backlog, a replay of last week's log, raw partitions
    read at different speeds) is never overtaken by its own `delivery_unknown`; live,
    the watermark is the wall clock.
    """

    def __init__(self) -> None:
        self._done: dict[Any, tuple[int, float]] = {}  # tp -> (offset, observed_at)

    def processed(self, tp: Any, offset: int, observed_at: float | None) -> None:
        if observed_at is None:
            previous = self._done.get(tp)
            observed_at = previous[1] if previous else 0.0
        self._done[tp] = (offset, observed_at)

    def now(self, wall: float, inputs: list[tuple[Any, int | None, int | None]]) -> float | None:
        """`inputs`: (tp, end offset, committed offset) per upstream partition."""
        low = wall
        for tp, end, committed in inputs:
            if end is None:
                return None
            done = self._done.get(tp)
            position = max(done[0] + 1 if done else 0, committed or 0)
            if position >= end:
                continue
            if done is None:
                return None
            low = min(low, done[1])
        return low


class RawTable(MutableMapping[str, bytes]):
    """A Faust table of raw bytes keys and values, addressed with str keys.

    `key_type=bytes` is what makes Faust use the raw codec end to end (store, changelog
    and recovery); this adapter keeps the `.encode()` out of the pure logic.
    """

    def __init__(self, table: Any) -> None:
        self.table = table

    def __getitem__(self, key: str) -> bytes:
        return self.table[key.encode()]

    def get(self, key: str, default: Any = None) -> Any:
        return self.table.get(key.encode(), default)

    def __setitem__(self, key: str, value: bytes) -> None:
        self.table[key.encode()] = value

    def __delitem__(self, key: str) -> None:
        del self.table[key.encode()]

    def __iter__(self) -> Iterator[str]:  # walks every key: for tools, never hot paths
        return (k.decode() for k in self.table)

    def __len__(self) -> int:
        return len(self.table)


def on_sent(fut: asyncio.Future) -> None:
    """A flush waits for sends to finish, not to succeed: a send that failed for good
    must stop the worker before its input offset can be committed."""
    if not fut.cancelled() and fut.exception() is not None:
        log.critical("a Kafka write failed, stopping the worker: %r", fut.exception())
        os._exit(70)  # crash-only: the input is redelivered on restart


def on_batch_sent(fut: asyncio.Future, count: int) -> None:
    fut.add_done_callback(on_sent)


def on_write_error(exc: BaseException) -> None:
    os._exit(70)  # records that never reached the producer: same as a failed send


def flush_writers_first(app: faust.App, writers: PartitionWriters) -> None:
    """Faust's commit (and its rebalance and shutdown paths) await its producer's flush
    before committing offsets; records still queued in a partition writer must be in
    that producer by then."""
    producer = app.producer
    flush = producer.flush

    async def flush_with_writers() -> None:
        await writers.drain()
        await flush()

    producer.flush = flush_with_writers  # type: ignore[method-assign]


def _end_offset(app: faust.App, tp: Any) -> int | None:
    """The partition's end as last fetched; None while unknown (e.g. mid-rebalance)."""
    try:
        return app.consumer.highwater(tp)
    except Exception:
        return None


def _raw_table(app: faust.App, name: str, partitions: int) -> RawTable:
    return RawTable(app.Table(name, key_type=bytes, value_type=bytes, partitions=partitions))


def build(
    settings: Settings, read_model: ReadModel | None = None, check_interval: float | None = None
) -> faust.App:
    app_id = f"{settings.topic_prefix}{settings.app_id}"
    # Faust names RocksDB files by table only: keep each app's state apart.
    datadir = Path(settings.data_dir) / "faust" / app_id
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id,
        **kafka_client.faust_kwargs(settings),
        store="rocksdb://",
        datadir=str(datadir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        producer_acks=-1,
        # Canonical and transitions records carry up to 500 events (~100 KB): with
        # aiokafka's 16 KB default each is a batch of its own, and the next send to that
        # partition waits for the broker's answer to the previous one.
        producer_max_batch_size=512 * 1024,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=max(0.5, settings.session_timeout / 10),
        web_enabled=False,
        autodiscover=False,
        table_standby_replicas=0,
        stream_wait_empty=False,
        # An agent that crashes must take the worker down (and its supervisor restarts
        # it) rather than leave a process that looks alive and processes nothing.
        agent_supervisor=CrashingSupervisor,
    )
    setattr(app, FETCH_WAIT_ATTR, settings.fetch_max_wait_ms)
    raw_names = [raw_topic(settings, name) for name in providers.REGISTRY]
    canonical = app.topic(
        settings.topic(CANONICAL),
        value_type=bytes,
        value_serializer="raw",
        key_serializer="raw",
        partitions=settings.partitions,
    )
    transitions = app.topic(
        settings.topic(TRANSITIONS),
        value_type=bytes,
        value_serializer="raw",
        key_serializer="raw",
        partitions=settings.partitions,
    )
    ordering_table = _raw_table(app, "ordering", settings.partitions)
    emitter_table = _raw_table(app, "emitter", settings.partitions)
    watermark = Watermark()
    policy = Policy(
        after=settings.delivery_unknown_after, disabled=settings.delivery_unknown_disabled
    )
    read_model_queue: asyncio.Queue[tuple[list, list]] = asyncio.Queue(maxsize=10_000)

    # --- Messenger watermarks (processors/stream/watermarks.py) ------------------------
    # The conversation agent, keyed by conversation with its own table, expands each
    # watermark over the outbound messages registered for that conversation into
    # canonical events, sent to status.canonical on their message's partition.
    conversations = app.topic(
        settings.topic(CONVERSATIONS),
        value_type=bytes,
        value_serializer="raw",
        key_serializer="raw",
        partitions=settings.partitions,
    )
    conversation_table = _raw_table(app, "conversations", settings.partitions)

    @app.agent(conversations, concurrency=1)
    async def conversation_agent(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            body = orjson.loads(event.value)
            marks = body.get("watermarks", [])
            seen = max((float(m["observed_at"]) for m in marks), default=None)
            watermark.processed(msg.tp, msg.offset, seen)
            produced = expand_record(
                conversation_table, body.get("registrations", []), marks, msg.offset
            )
            by_partition: dict[int, list[dict[str, Any]]] = {}
            for ev in produced:
                key = f"{ev['provider']}:{ev['provider_message_id']}"
                by_partition.setdefault(partition_for(key, settings.partitions), []).append(ev)
            for partition, events in by_partition.items():
                first = f"{events[0]['provider']}:{events[0]['provider_message_id']}"
                value = orjson.dumps({"events": events})
                await canonical.send(key=first.encode(), value=value, partition=partition)

    # --- end Messenger watermarks ------------------------------------------------------

    writers = PartitionWriters(lambda: app.producer._ensure_producer(), on_write_error)
    flush_writers_first(app, writers)
    fast_ordering = FastTable(ordering_table.table, writers, on_sent)
    fast_emitter = FastTable(emitter_table.table, writers, on_sent)
    transitions_name, status_name = settings.topic(TRANSITIONS), settings.topic(STATUS)

    async def send(
        topic: str, key: bytes, value: bytes, partition: int | None = None
    ) -> asyncio.Future:
        """Append to Faust's own producer without waiting for the broker: Faust flushes
        that producer before it commits the input offsets (at-least-once)."""
        fut = await app.producer._ensure_producer().send(topic, value, key=key, partition=partition)
        fut.add_done_callback(on_sent)
        return fut

    normalizer = Normalizer(
        settings,
        f"{app_id}-normalize",
        raw_names,
        send,
        watermark,
    )

    @app.task
    async def normalize_stage() -> None:
        await normalizer.run()

    @app.agent(canonical, concurrency=1)
    async def ordering_agent(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            events = orjson.loads(event.value)["events"]
            watermark.processed(msg.tp, msg.offset, max(float(e["observed_at"]) for e in events))
            batch = fast_ordering.begin(msg.partition)
            items = order_record(batch, events, msg.offset)
            await fast_ordering.write(msg.partition, batch)
            counts: dict[str, int] = {}
            for it in items:
                counts[it["o"]] = counts.get(it["o"], 0) + 1
            for outcome, n in counts.items():
                metrics.OUTCOMES.labels(outcome).inc(n)
            await send(
                transitions_name, event.key or b"", orjson.dumps({"items": items}), msg.partition
            )

    @app.agent(transitions, concurrency=1)
    async def emitter_agent(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            body = orjson.loads(event.value)
            wall = time.time()
            batch = fast_emitter.begin(msg.partition)
            logic = Emitter(batch, policy, history=read_model is not None)
            if "check" in body:
                out = logic.on_check(float(body["check"]), msg.offset, wall)
                if out.fired:
                    metrics.DELIVERY_UNKNOWN.inc(out.fired)
            else:
                out = logic.on_transitions(body["items"], msg.offset, wall)
            pending = deadlines.pending(batch)
            await fast_emitter.write(msg.partition, batch)
            if out.events:
                records = [(key.encode(), orjson.dumps(ce)) for key, ce in out.events]
                await writers.append(status_name, msg.partition, records, on_batch_sent)
            if out.events:
                counts: dict[str, int] = {}
                for _, ce in out.events:
                    counts[ce["data"]["status"]] = counts.get(ce["data"]["status"], 0) + 1
                for status_word, n in counts.items():
                    metrics.EMITTED.labels(status_word).inc(n)
            if out.repeated:
                metrics.REEMITTED.inc(out.repeated)
            metrics.PENDING_DEADLINES.labels(str(msg.partition)).set(pending)
            if read_model is not None and (out.docs or out.notes):
                try:
                    read_model_queue.put_nowait((list(out.docs.values()), out.notes))
                except asyncio.QueueFull:
                    metrics.READ_MODEL_DROPPED.inc()

    upstream_topics = {settings.topic(CANONICAL), settings.topic(CONVERSATIONS)}
    interval = check_interval or max(0.2, min(1.0, settings.delivery_unknown_after / 4))

    @app.timer(interval=interval)
    async def deadline_ticker() -> None:
        if settings.delivery_unknown_after <= 0:
            return
        assigned = app.consumer.assignment()
        upstream = [tp for tp in assigned if tp.topic in upstream_topics]
        inputs = [
            (tp, _end_offset(app, tp), app.consumer._committed_offset.get(tp)) for tp in upstream
        ]
        inputs += normalizer.inputs()
        now = watermark.now(time.time(), inputs)
        if now is None:
            return
        name = settings.topic(TRANSITIONS)
        for tp in assigned:
            if tp.topic == name:
                await send(name, b"~check", orjson.dumps({"check": now}), tp.partition)

    if read_model is not None:

        @app.task
        async def read_model_writer() -> None:
            while True:
                docs, notes = await read_model_queue.get()
                while not read_model_queue.empty() and len(docs) < 2000:
                    more_docs, more_notes = read_model_queue.get_nowait()
                    docs += more_docs
                    notes += more_notes
                try:
                    await read_model.write(docs, notes)
                except ReadModelUnavailable as exc:
                    metrics.READ_MODEL_DROPPED.inc(len(docs) + len(notes))
                    log.warning("read model write failed: %s", exc)

    @app.task
    async def set_log_levels() -> None:
        quiet_logging(settings.log_level)

    return app
