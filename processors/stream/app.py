"""The Faust app: topics, tables and the three agents wired to the pure logic.

Agents are `async for` loops that call normalize/ordering/emission functions; all
decisions live there. What this module adds is the discipline that makes a crash, a
rebalance or a zombie harmless (docs/architecture.md, "Crash consistency"):

- every record is admitted by `Progress` (in order, once) under an ownership token;
- its table writes are one atomic unit of the state backend (processors/store/state:
  a write-behind changelog unit with RocksDB, one compare-and-apply script with Redis),
  its outputs go through the partition writers or the producer with the token checked;
- input offsets are committed by `Progress` after the outputs are acknowledged, every
  second and at every revoke; a revoke lets the record in hand finish, flushes, commits
  and only then lets Faust close the tables;
- the agents' producer holds its writes whenever the group lease lapsed (patches.py).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from pathlib import Path
from typing import Any

import faust
import orjson
from aiokafka import AIOKafkaProducer
from mode import CrashingSupervisor

from processors import dependencies, providers
from processors.config import Settings
from processors.kafka import client as kafka_client
from processors.kafka.topics import (
    CANONICAL,
    CONVERSATIONS,
    DEADLETTER,
    POLL_REQUESTS,
    STATUS,
    TRANSITIONS,
    partition_for,
    raw_topic,
)
from processors.kafka.writer import Unit
from processors.model import FAILURES
from processors.ops import lag
from processors.store.projector import Projector
from processors.store.readmodel import ReadModel
from processors.store.state import Undecidable, Wiring, open_backend
from processors.stream import deadlines, faults, fence, markers, metrics, patches
from processors.stream.emission import Emitter, Policy
from processors.stream.fence import Fenced, Lease, Ownership, Token
from processors.stream.normalize import pack_events
from processors.stream.normalizer import Normalizer
from processors.stream.ordering import Rules, on_marker, order_record
from processors.stream.progress import Progress
from processors.stream.watermarks import expand_record
from processors.stream.watermarks import on_marker as conversation_marker
from processors.stream.writers import PartitionWriters

log = logging.getLogger(__name__)

NOISY_LOGGERS = ("faust", "mode", "aiokafka", "kafka", "rocksdict", "asyncio")
# What the worker's producers may send in one request: table units up to writers.py's
# MAX_UNIT_BYTES travel as one record batch (the internal topics allow 8 MiB records).
MAX_REQUEST_BYTES = 8 * 1024 * 1024
COMMIT_INTERVAL = 1.0


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


def on_sent(fut: asyncio.Future) -> None:
    """A flush waits for sends to finish, not to succeed: a send that failed for good
    must stop the worker before its input offset can be committed."""
    if fut.cancelled():
        return
    exc = fut.exception()
    if exc is None:
        return
    if isinstance(exc, Fenced):
        metrics.FENCED_WRITES.inc()
        return
    log.critical("a Kafka write failed, stopping the worker: %r", exc)
    logging.shutdown()
    os._exit(70)  # crash-only: the input is redelivered on restart


def on_write_error(exc: BaseException) -> None:
    logging.shutdown()
    os._exit(70)  # records that never reached the producer: same as a failed send


def stage_dead_letter(stage: str, msg: Any, value: bytes, exc: BaseException) -> bytes:
    """A record a stage could not process (a bug or a record no stage can write): kept
    with its bytes so it can be looked at and redriven, instead of stopping the partition."""
    kept = value[: 512 * 1024]
    return orjson.dumps(
        {
            "id": f"{msg.topic}:{msg.partition}:{msg.offset}",
            "reason": f"{stage} stage error {type(exc).__name__}: {str(exc)[:500]}",
            "category": "stage_error",
            "provider": None,
            "source": f"{msg.topic}:{msg.partition}:{msg.offset}",
            "body_b64": base64.b64encode(kept).decode(),
            "body_bytes": len(value),
        }
    )


def policy_for(settings: Settings) -> Policy:
    return Policy(
        after=settings.delivery_unknown_after,
        disabled=settings.delivery_unknown_disabled,
        grace=settings.delivery_unknown_grace,
        ask=settings.delivery_unknown_ask,
        ask_timeout=settings.delivery_unknown_ask_timeout,
        retention=settings.state_retention,
        marker_retention=settings.state_marker_retention,
    )


def build(
    settings: Settings, read_model: ReadModel | None = None, mark_interval: float | None = None
) -> faust.App:
    patches.install()
    app_id = f"{settings.topic_prefix}{settings.app_id}"
    # Faust names RocksDB files by table only: keep each app's state apart.
    datadir = Path(settings.data_dir) / "faust" / app_id
    datadir.mkdir(parents=True, exist_ok=True)
    backend = open_backend(settings)  # MSGSTATUS_STATE_BACKEND: rocksdb or redis
    app = faust.App(
        app_id,
        **kafka_client.faust_kwargs(settings),
        store=backend.faust_store,
        datadir=str(datadir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        producer_acks=-1,
        # Canonical and transitions records carry up to 500 events (~100 KB): with
        # aiokafka's 16 KB default each is a batch of its own, and the next send to that
        # partition waits for the broker's answer to the previous one.
        producer_max_batch_size=settings.producer_batch_bytes,
        producer_max_request_size=MAX_REQUEST_BYTES,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=COMMIT_INTERVAL,
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
    setattr(app, patches.FETCH_WAIT_ATTR, settings.fetch_max_wait_ms)
    ownership = Ownership()
    lease = Lease(settings.session_timeout)
    fence.watch(app_id, lease)
    raw_names = [raw_topic(settings, name) for name in providers.REGISTRY]
    partitions = settings.partitions

    def internal(name: str) -> Any:
        # acks off: Faust neither tracks nor commits these offsets, Progress does.
        return app.topic(
            settings.topic(name),
            value_type=bytes,
            value_serializer="raw",
            key_serializer="raw",
            partitions=partitions,
            acks=False,
        )

    canonical, transitions, conversations = (
        internal(CANONICAL),
        internal(TRANSITIONS),
        internal(CONVERSATIONS),
    )
    policy = policy_for(settings)
    rules = Rules(
        retention=settings.state_retention, marker_retention=settings.state_marker_retention
    )
    writers = PartitionWriters(lambda: app.producer._ensure_producer(), on_write_error, ownership)

    async def flush() -> None:
        await writers.drain()
        await app.producer.flush()

    progress = Progress(app, ownership, lease, flush)
    wiring = Wiring(app, partitions, writers, ownership, lease)
    ordering_state = backend.table("ordering", wiring)
    emitter_state = backend.table("emitter", wiring)
    conversation_state = backend.table("conversations", wiring)
    tables_by_input = {
        settings.topic(CANONICAL): ordering_state,
        settings.topic(TRANSITIONS): emitter_state,
        settings.topic(CONVERSATIONS): conversation_state,
    }
    names = {
        "canonical": settings.topic(CANONICAL),
        "transitions": settings.topic(TRANSITIONS),
        "status": settings.topic(STATUS),
        "requests": settings.topic(POLL_REQUESTS),
        "deadletter": settings.topic(DEADLETTER),
    }

    async def send(
        topic: str, key: bytes, value: bytes, partition: int | None, token: Token | None
    ) -> None:
        """Append to the agents' producer without waiting for the broker: `Progress`
        flushes it before it commits the input offsets (at-least-once)."""
        if not ownership.live(token):
            metrics.FENCED_WRITES.inc()
            return
        fut = await app.producer._ensure_producer().send(topic, value, key=key, partition=partition)
        fut.add_done_callback(on_sent)

    async def dead_letter(
        stage: str, msg: Any, value: bytes, exc: BaseException, token: Token
    ) -> None:
        log.error(
            "%s: record %s:%s:%s dead-lettered: %r",
            stage,
            msg.topic,
            msg.partition,
            msg.offset,
            exc,
        )
        metrics.DEADLETTERS.labels("-", "stage_error").inc()
        key = f"{msg.topic}:{msg.partition}:{msg.offset}".encode()
        await send(names["deadletter"], key, stage_dead_letter(stage, msg, value, exc), None, token)

    # --- Messenger watermarks (processors/stream/watermarks.py) ------------------------
    # The conversation agent, keyed by conversation with its own table, expands each
    # watermark over the outbound messages registered for that conversation into
    # canonical events, sent to status.canonical on their message's partition.
    @app.agent(conversations, concurrency=1)
    async def conversation_agent(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            token = await progress.admit("conversations", msg.tp, msg.offset)
            if token is None:
                continue

            def expand(batch: Any, event: Any = event, msg: Any = msg) -> list[Any]:
                outputs: list[tuple[bytes, bytes, int]] = []
                body = orjson.loads(event.value)
                if markers.is_marker(event.key):
                    bound = conversation_marker(batch, body["wm"], settings.state_retention)
                    if bound is not None:
                        value = orjson.dumps(markers.conversation_marker(msg.partition, bound))
                        outputs = [(markers.KEY, value, p) for p in range(partitions)]
                    return outputs
                produced = expand_record(
                    batch,
                    body.get("registrations", []),
                    body.get("watermarks", []),
                    msg.offset,
                    settings.state_retention,
                )
                by_partition: dict[int, list[dict[str, Any]]] = {}
                for ev in produced:
                    key = f"{ev['provider']}:{ev['provider_message_id']}"
                    by_partition.setdefault(partition_for(key, partitions), []).append(ev)
                for partition, events in by_partition.items():
                    first = f"{events[0]['provider']}:{events[0]['provider_message_id']}"
                    for value in pack_events(events):  # bounded in bytes, like normalize's
                        outputs.append((first.encode(), value, partition))
                return outputs

            try:
                outputs = await conversation_state.transact(
                    token, msg.partition, expand, markers.is_marker(event.key)
                )
            except Undecidable as exc:  # a record no rule can take: a dead letter, not a stop
                await dead_letter("conversations", msg, event.value, exc.__cause__ or exc, token)
                progress.done("conversations", token, msg.offset)
                continue
            except Fenced:  # revoked while in hand: its next owner processes it
                progress.done("conversations", token, msg.offset)
                continue
            faults.point("state-applied", "conversations")
            for key, value, partition in outputs:
                await send(names["canonical"], key, value, partition, token)
            progress.done("conversations", token, msg.offset)

    # --- end Messenger watermarks ------------------------------------------------------

    @app.agent(canonical, concurrency=1)
    async def ordering_agent(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            token = await progress.admit("ordering", msg.tp, msg.offset)
            if token is None:
                continue

            def order(batch: Any, event: Any = event, msg: Any = msg) -> tuple[Any, ...]:
                body = orjson.loads(event.value)
                if markers.is_marker(event.key):
                    bound = on_marker(batch, body["wm"], rules)
                    value = None if bound is None else orjson.dumps(markers.bound_marker(bound))
                    return None, markers.KEY, value
                items = order_record(batch, body["events"], msg.offset, rules)
                return items, event.key or b"", orjson.dumps({"items": items})

            try:
                items, key, value = await ordering_state.transact(
                    token, msg.partition, order, markers.is_marker(event.key)
                )
            except Undecidable as exc:  # a record no rule can take: a dead letter, not a stop
                await dead_letter("ordering", msg, event.value, exc.__cause__ or exc, token)
                progress.done("ordering", token, msg.offset)
                continue
            except Fenced:  # revoked while in hand: its next owner processes it
                progress.done("ordering", token, msg.offset)
                continue
            faults.point("state-applied", "ordering")
            if value is not None:
                await send(names["transitions"], key, value, msg.partition, token)
            if items:
                counts: dict[str, int] = {}
                for it in items:
                    counts[it["o"]] = counts.get(it["o"], 0) + 1
                for outcome, n in counts.items():
                    metrics.OUTCOMES.labels(outcome).inc(n)
            progress.done("ordering", token, msg.offset)

    @app.agent(transitions, concurrency=1)
    async def emitter_agent(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            token = await progress.admit("emitter", msg.tp, msg.offset)
            if token is None:
                continue

            def emit(batch: Any, event: Any = event, msg: Any = msg) -> tuple[Any, int]:
                return decide(event, msg, batch), deadlines.pending(batch)

            try:
                out, pending = await emitter_state.transact(
                    token, msg.partition, emit, markers.is_marker(event.key)
                )
            except Undecidable as exc:  # a record no rule can take: a dead letter, not a stop
                await dead_letter("emitter", msg, event.value, exc.__cause__ or exc, token)
                progress.done("emitter", token, msg.offset)
                continue
            except Fenced:  # revoked while in hand: its next owner processes it
                progress.done("emitter", token, msg.offset)
                continue
            faults.point("state-applied", "emitter")
            await publish(out, msg, token, pending)
            progress.done("emitter", token, msg.offset)

    def decide(event: Any, msg: Any, batch: Any) -> Any:
        body = orjson.loads(event.value)
        ts = float(msg.timestamp)  # the record's own time: a redelivery emits the same bytes
        logic = Emitter(batch, policy)
        if markers.is_marker(event.key):
            bound = float(body["wm"]["bound"])
            metrics.WATERMARK_LAG.labels(str(msg.partition)).set(max(0.0, time.time() - bound))
            return logic.on_marker(bound, msg.offset, ts)
        return logic.on_transitions(body["items"], msg.offset, ts)

    def count_emitted(events: list[tuple[str, dict[str, Any]]]) -> None:
        counts: dict[tuple[str, str], int] = {}
        for _, ce in events:
            data = ce["data"]
            label = (data["status"], data["provider"])
            counts[label] = counts.get(label, 0) + 1
            if data["status"] in FAILURES and data.get("error"):
                category = data["error"].get("category") or "unknown"
                metrics.FAILURES.labels(data["provider"], data["status"], category).inc()
            elif data["status"] in FAILURES:
                metrics.FAILURES.labels(data["provider"], data["status"], "unknown").inc()
        for (status_word, provider), n in counts.items():
            metrics.EMITTED.labels(status_word, provider).inc(n)

    async def publish(out: Any, msg: Any, token: Token, pending: int) -> None:
        if out.events:
            records = [(key.encode(), orjson.dumps(ce)) for key, ce in out.events]
            unit = Unit(records, token, atomic=False, kind="output")
            await writers.append(names["status"], msg.partition, unit)
            count_emitted([e for e in out.events if e[1]["id"] not in out.repeats])
        if out.requests:
            records = [(key.encode(), orjson.dumps(req)) for key, req in out.requests]
            unit = Unit(records, token, atomic=False, kind="output")
            await writers.append(names["requests"], msg.partition, unit)
            metrics.ASKED.inc(out.asked)
        if out.fired:
            metrics.DELIVERY_UNKNOWN.inc(out.fired)
        if out.repeated:
            metrics.REEMITTED.inc(out.repeated)
        for seconds in out.latencies:
            metrics.END_TO_END.observe(max(0.0, seconds))
        metrics.PENDING_DEADLINES.labels(str(msg.partition)).set(pending)

    # --- rebalances: let the record in hand finish, flush, commit, fence ---------------
    input_topics = set(tables_by_input)
    original_revoked = app._on_partitions_revoked
    original_assigned = app._on_partitions_assigned

    async def quiesce(tps: set[Any]) -> None:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + settings.session_timeout * 0.5
        while lease.valid():
            idle = asyncio.ensure_future(progress.idle())
            done, _ = await asyncio.wait([idle], timeout=0.2)
            if done:
                break
            idle.cancel()
            if loop.time() > give_up:
                log.warning("revoke: a record is still in hand after %.1f s", give_up)
                break
        faults.point("revoke-waiting")
        if lease.valid():
            await progress.commit(tps)
        else:
            failed = patches.fail_held(app.producer._ensure_producer())
            log.warning("revoke after the group lease lapsed: %d held batches dropped", failed)

    async def on_partitions_revoked(revoked: set[Any], then: Any = original_revoked) -> None:
        ours = {tp for tp in revoked if tp.topic in input_topics}
        if ours:
            metrics.REBALANCES.inc()
            ownership.start_revoke(ours)
            try:
                await quiesce(ours)
            except Exception as exc:  # the next owner repeats what was not committed
                log.warning("revoke: flush or commit failed: %r", exc)
            ownership.revoke(ours)
            writers.discard()
            progress.forget(ours)
            for topic, state in tables_by_input.items():
                state.forget({tp.partition for tp in ours if tp.topic == topic})
        if then is not None:
            await then(revoked)

    async def learn(tps: set[Any]) -> None:
        delay = 0.2
        while tps & ownership.owned:
            try:
                await progress.learn_starts(tps & ownership.owned)
                return
            except Exception as exc:
                log.warning("assignment: reading committed offsets failed (%r), retrying", exc)
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)

    learning: set[asyncio.Future] = set()

    async def on_partitions_assigned(assigned: set[Any], generation_id: int = 0) -> None:
        ours = {tp for tp in assigned if tp.topic in input_topics}
        gone = ownership.owned - ours
        if gone:  # taken away without a revoke callback: fence them all the same
            ownership.revoke(gone)
            writers.discard()
            progress.forget(gone)
        new = ours - ownership.owned
        for topic, state in tables_by_input.items():  # the generation fences Redis writes
            state.assigned({tp.partition for tp in new if tp.topic == topic}, generation_id)
        ownership.assign(new)
        progress.assigning(new)
        await original_assigned(assigned, generation_id)
        if new:
            learning.add(asyncio.ensure_future(learn(new)))
            learning.difference_update({t for t in learning if t.done()})

    original_stop_consumer = app._stop_consumer

    async def stop_consumer() -> None:
        """A clean stop commits what is done first (Faust's own stop closes the tables
        without committing our offsets): a restart then repeats nothing."""
        owned = ownership.owned
        if owned:
            await on_partitions_revoked(owned, then=None)
        await original_stop_consumer()

    app._on_partitions_revoked = on_partitions_revoked  # type: ignore[method-assign]
    app._on_partitions_assigned = on_partitions_assigned  # type: ignore[method-assign]
    app._stop_consumer = stop_consumer  # type: ignore[method-assign]

    # --- the normalize stage: its own consumer group and its own producer --------------
    normalizer_producer: dict[str, AIOKafkaProducer] = {}

    async def normalize_send(
        topic: str, key: bytes, value: bytes, partition: int | None
    ) -> asyncio.Future:
        fut = await normalizer_producer["p"].send(topic, value, key=key, partition=partition)
        fut.add_done_callback(on_sent)
        return fut

    normalizer = Normalizer(
        settings,
        f"{app_id}-normalize",
        raw_names,
        normalize_send,
        mark_interval=mark_interval
        or settings.watermark_interval
        or max(0.2, min(1.0, settings.delivery_unknown_after / 30)),
    )

    @app.task
    async def normalize_stage() -> None:
        # Its own producer: never held by the agents' lease (a normalize zombie's writes
        # are duplicates and true markers, both harmless), never failed by a revoke.
        producer = AIOKafkaProducer(
            **kafka_client.client_kwargs(settings),
            acks="all",
            enable_idempotence=True,
            max_batch_size=settings.producer_batch_bytes,
            max_request_size=MAX_REQUEST_BYTES,
            request_timeout_ms=1_200_000,
        )
        await producer.start()
        normalizer_producer["p"] = producer
        try:
            await normalizer.run()
        finally:
            await producer.stop()

    @app.task
    async def consumer_lag() -> None:
        await lag.run(settings, lag.worker_groups(settings))

    @app.timer(interval=5.0)
    async def dependency_health() -> None:
        async def kafka_up() -> bool:
            producer = normalizer_producer.get("p")
            return producer is not None and bool(await producer.client.force_metadata_update())

        probes: dict[str, dependencies.Probe] = {dependencies.KAFKA: kafka_up}
        if settings.state_backend == "redis":
            probes[dependencies.REDIS] = backend.ping  # type: ignore[assignment]
        elif read_model is not None:
            probes[dependencies.REDIS] = read_model.ping
        await dependencies.check(probes)

    @app.task
    async def guard_producer() -> None:
        patches.attach_lease(app.producer._ensure_producer(), lease)

    @app.task
    async def commit_progress() -> None:
        await progress.run(COMMIT_INTERVAL)

    @app.timer(interval=10.0)
    async def state_sizes() -> None:
        for topic, state in tables_by_input.items():
            owned = {tp.partition for tp in ownership.owned if tp.topic == topic}
            total = await state.size(owned)
            if total is not None:
                metrics.STATE_KEYS.labels(state.name).set(total)

    if read_model is not None:
        # Redis is fed from message.status and status.transitions by a consumer of its
        # own (processors/store/projector.py): it waits out a Redis outage, drops nothing.
        projector = Projector(settings, read_model)

        @app.task
        async def read_model_projector() -> None:
            await projector.run()

    @app.task
    async def set_log_levels() -> None:
        quiet_logging(settings.log_level)

    app.msgstatus = {  # type: ignore[attr-defined]  # for tests and tools
        "progress": progress,
        "ownership": ownership,
        "lease": lease,
        "writers": writers,
        "normalizer": normalizer,
        "state": backend,
    }
    return app
