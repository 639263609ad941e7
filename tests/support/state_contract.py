"""The backend contract: one input, a model of what it must give, the backends' results.

The input is raw `/v1/events` records with fixed receive times, all in raw partition 0,
so every run reads them in the same order. The *model* runs the pure pipeline
(normalize, ordering, emitter) over dicts: what any backend, any number of workers and
any crash must publish and keep. A run's `message.status` events are compared with the
model's byte for byte, except what is the time of a run (the CloudEvent `time` and
`data.emitted_at`: the transitions record's timestamp; a `delivery_unknown`'s
`observed_at`: the watermark that fired it). Final states are compared without the
offsets and timestamps they carry (receipts' and outputs' source offsets depend on how
records were batched, not on the decisions).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from bench.processes import Process
from processors.config import Settings, single_broker
from processors.kafka import raw
from processors.kafka.topics import all_topics, ensure_topics
from processors.providers import REGISTRY
from processors.providers.base import WebhookRequest
from processors.store.state.redis import partition_keys
from processors.stream.emission import Emitter, Policy
from processors.stream.fasttable import ScanDict
from processors.stream.normalize import normalize
from processors.stream.ordering import Rules, order_record
from support.processes import base_env

PARTITIONS = 4
AFTER = 3600.0  # no deadline of a normal message comes due during a test
TABLES = ("ordering", "emitter")
JOURNEYS = [
    ["accepted", "sent", "delivered", "read"],
    ["sent", "delivered"],
    ["queued", "sent", "failed"],
    ["sent", "undelivered", "delivered"],
    ["sent", "delivered", "clicked", "read"],
    ["accepted", "rejected"],
    ["sent", "read"],
]


@dataclass
class Workload:
    t0: float
    bodies: list[dict[str, Any]]  # one /v1/events body per raw record, in log order
    messages: list[str]
    controls: list[str]  # only an old `sent`: each must get delivery_unknown
    records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = field(default_factory=list)


def workload(run: str, messages: int = 120, controls: int = 8, seed: int = 17) -> Workload:
    """Shuffled, duplicated statuses of `messages` messages plus `controls` stuck in sent."""
    rng = random.Random(seed)
    t0 = time.time()
    bodies: list[dict[str, Any]] = []
    names = [f"{run}m{i}" for i in range(messages)]
    for i, mid in enumerate(names):
        for j, status in enumerate(rng.choice(JOURNEYS)):
            body = {
                "provider": "crm",
                "provider_message_id": mid,
                "channel": "sms",
                "status": status,
                "occurred_at": t0 + i * 0.01 + j,
            }
            bodies += [body] * (2 if rng.random() < 0.5 else 1)  # duplicates
    stuck = [f"{run}c{i}" for i in range(controls)]
    for mid in stuck:
        old = {"provider": "crm", "provider_message_id": mid, "channel": "sms", "status": "sent"}
        bodies.append({**old, "occurred_at": t0 - 2 * AFTER})
    rng.shuffle(bodies)
    work = Workload(t0, bodies, names, stuck)
    for i, body in enumerate(bodies):
        request = WebhookRequest(
            "events",
            "POST",
            "http://127.0.0.1/v1/events",
            {"content-type": "application/json"},
            orjson.dumps([body]),
            t0 + i * 0.001,
        )
        record = raw.encode("raw.events", request, ())
        work.records.append((record.key, record.value, list(record.headers)))
    return work


def settings_for(bootstrap: str, prefix: str) -> Settings:
    return single_broker(kafka_bootstrap=bootstrap, topic_prefix=prefix, partitions=PARTITIONS)


async def produce(bootstrap: str, prefix: str, records: list[Any]) -> None:
    settings = settings_for(bootstrap, prefix)
    await ensure_topics(settings, all_topics(settings, REGISTRY))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for key, value, headers in records:  # one partition: one order for every run
            await producer.send(
                settings.topic("raw.events"), value, key=key, headers=headers, partition=0
            )
        await producer.flush()
    finally:
        await producer.stop()


# --- the model ------------------------------------------------------------------------


@dataclass
class Model:
    events: dict[str, list[dict[str, Any]]]
    states: dict[str, dict[int, dict[str, Any]]]  # table -> partition -> normalized keys


def model(work: Workload) -> Model:
    rules = Rules(retention=30 * 86400.0, marker_retention=365 * 86400.0)
    policy = Policy(after=AFTER, grace=1.0)
    tables = {name: [ScanDict() for _ in range(PARTITIONS)] for name in TABLES}
    events: dict[str, list[dict[str, Any]]] = defaultdict(list)
    src = 0
    for _key, value, headers in work.records:
        result = normalize(value, headers, PARTITIONS, "raw.events:0:0")
        assert not result.dead, result.dead
        for partition, batch in sorted(result.by_partition.items()):
            src += 1
            items = order_record(tables["ordering"][partition], batch, src, rules)
            emitter = Emitter(tables["emitter"][partition], policy)
            for message_key, ce in emitter.on_transitions(items, src, 0.0).events:
                events[message_key].append(comparable(ce))
    for partition in range(PARTITIONS):
        emitter = Emitter(tables["emitter"][partition], policy)
        bound = time.time()
        for message_key, ce in emitter.on_marker(bound, 10**9, bound).events:
            events[message_key].append(comparable(ce))
    states = {
        name: {p: normalized(dict(tables[name][p]), name) for p in range(PARTITIONS)}
        for name in TABLES
    }
    return Model(dict(events), states)


def comparable(ce: dict[str, Any]) -> dict[str, Any]:
    """An event without what only the time of its run decides."""
    data = dict(ce["data"])
    data.pop("emitted_at")
    if data["status"] == "delivery_unknown":
        data.pop("observed_at")
    return {**{k: v for k, v in ce.items() if k != "time"}, "data": data}


def normalized(values: dict[str, bytes | None], table: str) -> dict[str, Any]:
    """Message states without source offsets and times; index entries; `~pending`."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        if key.startswith(("~d:", "~x:", "~y:")):
            out[key] = ""
        elif key == "~pending":
            out[key] = int(value)
        elif key.startswith("~"):
            continue  # watermark state, fired markers: a matter of timing
        elif table == "ordering":
            state = orjson.loads(value)
            state["r"] = {k: r[1:] for k, r in state["r"].items()}
            out[key] = state
        else:
            state = orjson.loads(value)
            outs = state.get("out", {})
            state["out"] = {
                k: ([o[1], o[2], o[4]] if k == "du" else [o[1], o[2]]) for k, o in outs.items()
            }
            out[key] = state
    return out


# --- what a run published and kept -----------------------------------------------------


async def committed(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    except KafkaError:
        return {}
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in offsets.items()}


async def ends(bootstrap: str, topics: list[str]) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
        return await consumer.end_offsets(tps)
    finally:
        await consumer.stop()


async def wait_processed(bootstrap: str, prefix: str, timeout: float, alive: Any) -> None:
    """Until the worker group committed everything written so far to its inputs, after
    the normalize group committed every raw record."""
    settings = settings_for(bootstrap, prefix)
    deadline = time.monotonic() + timeout
    stages = [
        (f"{prefix}msgstatus-normalize", [settings.topic("raw.events")]),
        (
            f"{prefix}msgstatus",
            [settings.topic("status.canonical"), settings.topic("status.transitions")],
        ),
    ]
    for group, topics in stages:
        target = {tp: n for tp, n in (await ends(bootstrap, topics)).items() if n > 0}
        while True:
            done = await committed(bootstrap, group)
            if all(done.get(tp, -1) >= n for tp, n in target.items()):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{group} did not process {topics} in {timeout:.0f} s")
            alive()
            await asyncio.sleep(0.5)


async def behind(consumer: AIOKafkaConsumer, last: dict[TopicPartition, int]) -> bool:
    return any([await consumer.position(tp) < n for tp, n in last.items()])


async def end_offsets(consumer: AIOKafkaConsumer, topic: str) -> dict[TopicPartition, int]:
    """Every partition's end; a broker busy moving leaders may answer 0 for a while (the
    workloads here write to every partition), so ask until each has records."""
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    deadline = time.monotonic() + 30
    while True:
        last = await consumer.end_offsets(tps)
        if all(n > 0 for n in last.values()) or time.monotonic() > deadline:
            return last
        await asyncio.sleep(0.5)


async def published(bootstrap: str, topic: str) -> dict[str, list[dict[str, Any]]]:
    """Every event of `topic`, by message key, in log order."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        last = await end_offsets(consumer, topic)
        await consumer.seek_to_beginning(*tps)
        while await behind(consumer, last):
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for record in records:
                    event = orjson.loads(record.value)
                    by_key[event["data"]["message_key"]].append(event)
    finally:
        await consumer.stop()
    return dict(by_key)


async def changelog_states(bootstrap: str, prefix: str) -> dict[str, dict[int, dict[str, Any]]]:
    """The RocksDB backend's tables as a restore from their changelogs gives them."""
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for table in TABLES:
        topic = f"{prefix}msgstatus-{table}-changelog"
        # "earliest" from the start: a "latest" reset racing seek_to_beginning ended
        # reads at once (aiokafka answered the end as the position)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await consumer.start()
        values: dict[int, dict[str, bytes | None]] = {p: {} for p in range(PARTITIONS)}
        try:
            tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            consumer.assign(tps)
            last = await end_offsets(consumer, topic)
            await consumer.seek_to_beginning(*tps)
            while await behind(consumer, last):
                for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                    for record in records:
                        values[tp.partition][record.key.decode()] = record.value
        finally:
            await consumer.stop()
        out[table] = {p: normalized(v, table) for p, v in values.items()}
    return out


async def redis_states(url: str, prefix: str) -> dict[str, dict[int, dict[str, Any]]]:
    """The Redis backend's tables as Redis holds them."""
    client = aioredis.from_url(url)
    out: dict[str, dict[int, dict[str, Any]]] = {}
    try:
        for table in TABLES:
            out[table] = {}
            for partition in range(PARTITIONS):
                vkey, ikey, _ = partition_keys(prefix, table, partition)
                values: dict[str, bytes | None] = {
                    k.decode(): v.split(b":", 1)[1] for k, v in (await client.hgetall(vkey)).items()
                }
                for member in await client.zrange(ikey, 0, -1):
                    values[member.decode()] = b""
                out[table][partition] = normalized(values, table)
    finally:
        await client.aclose()
    return out


async def forget_redis(url: str, prefix: str) -> None:
    client = aioredis.from_url(url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.unlink(*keys)
    finally:
        await client.aclose()


def differences(model: Model, got: dict[str, list[dict[str, Any]]]) -> list[str]:
    """What a run published that the model does not say (repeats must be identical)."""
    problems: list[str] = []
    for key in sorted(set(model.events) | set(got)):
        want = model.events.get(key, [])
        by_seq: dict[int, dict[str, Any]] = {}
        for event in got.get(key, []):
            seen = by_seq.setdefault(event["data"]["sequence"], event)
            if seen != event:
                problems.append(
                    f"{key}: sequence {event['data']['sequence']} told twice, differently"
                )
        mine = [comparable(by_seq[s]) for s in sorted(by_seq)]
        if mine != want:
            problems.append(f"{key}: published {short(mine)}, the model says {short(want)}")
    return problems


def short(events: list[dict[str, Any]]) -> list[tuple[int, str]]:
    return [(e["data"]["sequence"], e["data"]["status"]) for e in events]


def state_differences(want: Model, got: dict[str, dict[int, dict[str, Any]]]) -> list[str]:
    problems: list[str] = []
    for table in TABLES:
        for partition in range(PARTITIONS):
            a, b = want.states[table][partition], got[table][partition]
            for key in sorted(set(a) | set(b)):
                if a.get(key) != b.get(key):
                    problems.append(
                        f"{table}[{partition}] {key}: {b.get(key)} != model {a.get(key)}"
                    )
    return problems


def worker_env(kafka, redis_server, prefix: str, tmp_path, backend: str) -> dict[str, str]:
    return base_env(
        kafka.bootstrap,
        prefix,
        tmp_path / "data",
        MSGSTATUS_STATE_BACKEND=backend,
        MSGSTATUS_REDIS_URL=redis_server.url,
        MSGSTATUS_DELIVERY_UNKNOWN_AFTER=str(AFTER),
        MSGSTATUS_DELIVERY_UNKNOWN_GRACE="1",
        MSGSTATUS_WATERMARK_INTERVAL="1",
        MSGSTATUS_SESSION_TIMEOUT="6",
    )


def watching(parts: list[Process]) -> Any:
    def alive() -> None:
        for part in parts:
            if part.proc is not None and part.proc.poll() not in (None, -9):
                raise AssertionError(f"a worker exited: {part.proc.returncode}\n{part.log_tail()}")

    return alive
