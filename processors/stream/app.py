"""The Faust app: topics, tables and the three agents wired to the pure logic.

Agents are `async for` loops that call normalize/ordering/emission functions; all
decisions live there. State changes happen only while an event is being processed
(Faust's rule), so the deadline timer sends check records instead of touching tables.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import faust
import orjson
from faust.transport.drivers import aiokafka as faust_aiokafka

from processors import providers
from processors.config import Settings
from processors.store.readmodel import ReadModel, ReadModelUnavailable
from processors.stream import deadlines, metrics
from processors.stream.emission import Emitter, Policy
from processors.stream.normalize import normalize
from processors.stream.ordering import order_record
from processors.topics import CANONICAL, DEADLETTER, STATUS, TRANSITIONS, raw_topic

log = logging.getLogger(__name__)

# Faust enables idempotence only inside transactions; we run at-least-once and want
# acks=all writes that cannot be duplicated or reordered by producer retries.
faust_aiokafka.Producer._settings_extra = lambda self: {"enable_idempotence": True}  # type: ignore[method-assign]

NOISY_LOGGERS = ("faust", "mode", "aiokafka", "kafka", "rocksdict", "asyncio")


def quiet_logging(level: str) -> None:
    """Faust leaves the root logger at DEBUG; building discarded records costs ~12 %."""
    numeric = logging.getLevelName(level) if isinstance(logging.getLevelName(level), int) else logging.WARNING
    logging.getLogger().setLevel(numeric)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))


class PartitionClock:
    """Per partition: how far the emitter's input is behind in event time.

    A check carries `now`: wall-clock time when the partition is live, the stream's own
    event time while it works through a backlog or replay (issue: replays must not fire
    delivery_unknown for messages whose delivered comes later in the same log).
    """

    def __init__(self, catchup_lag: float) -> None:
        self.catchup_lag = catchup_lag
        self._event_time: dict[int, float] = {}
        self._processed_at: dict[int, float] = {}

    def saw(self, partition: int, event_time: float, wall: float) -> None:
        if event_time > self._event_time.get(partition, 0.0):
            self._event_time[partition] = event_time
        self._processed_at[partition] = wall

    def now_for(self, partition: int, wall: float) -> float:
        busy = wall - self._processed_at.get(partition, 0.0) < 5.0
        watermark = self._event_time.get(partition)
        if busy and watermark is not None and wall - watermark > self.catchup_lag:
            return watermark
        return wall


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


def _raw_table(app: faust.App, name: str, partitions: int) -> RawTable:
    return RawTable(app.Table(name, key_type=bytes, value_type=bytes, partitions=partitions))


def build(settings: Settings, read_model: ReadModel | None = None, check_interval: float | None = None) -> faust.App:
    app_id = f"{settings.topic_prefix}{settings.app_id}"
    # Faust names RocksDB files by table only: keep each app's state apart.
    datadir = Path(settings.data_dir) / "faust" / app_id
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="rocksdb://",
        datadir=str(datadir),
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=max(0.5, settings.session_timeout / 10),
        web_enabled=False,
        autodiscover=False,
        table_standby_replicas=0,
        stream_wait_empty=False,
    )
    raw_names = [raw_topic(settings, name) for name in providers.REGISTRY]
    raw_in = app.topic(*raw_names, value_type=bytes, value_serializer="raw", key_serializer="raw")
    canonical = app.topic(settings.topic(CANONICAL), value_type=bytes, value_serializer="raw", key_serializer="raw", partitions=settings.partitions)
    transitions = app.topic(settings.topic(TRANSITIONS), value_type=bytes, value_serializer="raw", key_serializer="raw", partitions=settings.partitions)
    status = app.topic(settings.topic(STATUS), value_type=bytes, value_serializer="raw", key_serializer="raw", partitions=settings.partitions)
    deadletter = app.topic(settings.topic(DEADLETTER), value_type=bytes, value_serializer="raw", key_serializer="raw")
    ordering_table = _raw_table(app, "ordering", settings.partitions)
    emitter_table = _raw_table(app, "emitter", settings.partitions)
    clock = PartitionClock(catchup_lag=settings.catchup_lag)
    policy = Policy(after=settings.delivery_unknown_after, disabled=settings.delivery_unknown_disabled)
    emitter = Emitter(emitter_table, policy)
    read_model_queue: asyncio.Queue[tuple[list, list]] = asyncio.Queue(maxsize=10_000)

    @app.agent(raw_in)
    async def normalize_agent(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            result = normalize(event.value, msg.headers or [], settings.partitions, f"{msg.topic}:{msg.partition}:{msg.offset}")
            for partition, events in result.by_partition.items():
                first = f"{events[0]['provider']}:{events[0]['provider_message_id']}"
                await canonical.send(key=first.encode(), value=orjson.dumps({"events": events}), partition=partition)
            provider = msg.topic[len(settings.topic("raw.")) :]
            if result.events:
                metrics.NORMALIZED.labels(provider).inc(result.events)
            for dead in result.dead:
                metrics.DEADLETTERS.labels(provider).inc()
                await deadletter.send(key=dead["id"].encode(), value=orjson.dumps(dead))

    @app.agent(canonical, concurrency=1)
    async def ordering_agent(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            events = orjson.loads(event.value)["events"]
            items = order_record(ordering_table, events, msg.offset)
            for it in items:
                metrics.OUTCOMES.labels(it["o"]).inc()
            await transitions.send(key=event.key, value=orjson.dumps({"items": items}), partition=msg.partition)

    @app.agent(transitions, concurrency=1)
    async def emitter_agent(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            body = orjson.loads(event.value)
            wall = time.time()
            if "check" in body:
                out = emitter.on_check(float(body["check"]), msg.offset, wall)
                if out.fired:
                    metrics.DELIVERY_UNKNOWN.inc(out.fired)
            else:
                out = emitter.on_transitions(body["items"], msg.offset, wall)
                newest = max((it["ev"].get("occurred_at") or it["ev"]["observed_at"] for it in body["items"]), default=None)
                if newest is not None:
                    clock.saw(msg.partition, float(newest), wall)
            for key, ce in out.events:
                await status.send(key=key.encode(), value=orjson.dumps(ce), partition=msg.partition)
                metrics.EMITTED.labels(ce["data"]["status"]).inc()
            if out.repeated:
                metrics.REEMITTED.inc(out.repeated)
            metrics.PENDING_DEADLINES.labels(str(msg.partition)).set(deadlines.pending(emitter_table))
            if read_model is not None and (out.docs or out.notes):
                try:
                    read_model_queue.put_nowait((list(out.docs.values()), out.notes))
                except asyncio.QueueFull:
                    metrics.READ_MODEL_DROPPED.inc()

    interval = check_interval or max(0.2, min(1.0, settings.delivery_unknown_after / 4))

    @app.timer(interval=interval)
    async def deadline_ticker() -> None:
        if settings.delivery_unknown_after <= 0:
            return
        wall = time.time()
        name = settings.topic(TRANSITIONS)
        for tp in app.consumer.assignment():
            if tp.topic == name:
                now = clock.now_for(tp.partition, wall)
                await transitions.send(key=b"~check", value=orjson.dumps({"check": now}), partition=tp.partition)

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
