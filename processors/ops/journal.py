"""The rebuild journal: which rebuild runs, and whether one is switching over.

A compacted one-partition topic `<prefix>status.rebuilds` holds one record per rebuild
(key = its number), rewritten at each phase:

- `building`: the shadow generation is being built; the live pipeline is untouched.
- `switching`: the live workers are stopped and the switch writes the live tables and
  publishes corrections. A worker refuses to start while the latest rebuild is in this
  phase (its state would be half old, half new), and `msgstatus rebuild` resumes it.
- `done`, `failed`: finished (a failed rebuild wrote nothing live).

The journal also numbers rebuilds (the next is one above the highest recorded), so a
correction's `rebuild` names one run for good.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from processors.config import Settings
from processors.kafka import client as kafka_client
from processors.kafka.topics import REBUILDS

BUILDING, SWITCHING, DONE, FAILED = "building", "switching", "done", "failed"


def topic(settings: Settings) -> str:
    return settings.topic(REBUILDS)


async def read(settings: Settings, timeout: float = 30.0) -> dict[int, dict[str, Any]]:
    """The latest record of every rebuild; {} when no rebuild ever ran."""
    consumer = AIOKafkaConsumer(
        **kafka_client.client_kwargs(settings),
        enable_auto_commit=False,
        request_timeout_ms=int(timeout * 1000),
    )
    await consumer.start()
    found: dict[int, dict[str, Any]] = {}
    try:
        await consumer._client.force_metadata_update()
        if not consumer.partitions_for_topic(topic(settings)):
            return found
        tp = TopicPartition(topic(settings), 0)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        await consumer.seek_to_beginning(tp)
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            for record in batch.get(tp, []):
                if record.offset >= end or record.value is None:
                    continue
                entry = orjson.loads(record.value)
                found[int(entry["rebuild"])] = entry
    finally:
        await consumer.stop()
    return found


def latest(entries: dict[int, dict[str, Any]]) -> dict[str, Any] | None:
    return entries[max(entries)] if entries else None


def next_number(entries: dict[int, dict[str, Any]]) -> int:
    return max(entries, default=0) + 1


async def ensure(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(**kafka_client.client_kwargs(settings))
    await admin.start()
    try:
        if topic(settings) in await admin.list_topics():
            return
        new = NewTopic(
            topic(settings),
            num_partitions=1,
            replication_factor=settings.replication_factor,
            topic_configs={
                "cleanup.policy": "compact",
                "min.insync.replicas": str(settings.min_insync_replicas),
            },
        )
        response = await admin.create_topics([new])
        for name, code, *_ in response.topic_errors:
            if code not in (0, TopicAlreadyExistsError.errno):
                raise RuntimeError(f"cannot create {name} (error code {code})")
    finally:
        await admin.close()


async def write(settings: Settings, number: int, phase: str, **details: Any) -> dict[str, Any]:
    """Record `phase` for rebuild `number` (acknowledged by every in-sync replica)."""
    entry = {
        "rebuild": number,
        "phase": phase,
        "at": time.time(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        **details,
    }
    await ensure(settings)
    producer = AIOKafkaProducer(
        **kafka_client.client_kwargs(settings), acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        await producer.send_and_wait(
            topic(settings), orjson.dumps(entry), key=str(number).encode(), partition=0
        )
    finally:
        await producer.stop()
    return entry


async def switching(settings: Settings) -> dict[str, Any] | None:
    """The rebuild that is switching over now, if any (what a worker checks at start)."""
    entry = latest(await read(settings))
    return entry if entry is not None and entry.get("phase") == SWITCHING else None
