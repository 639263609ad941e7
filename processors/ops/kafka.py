"""Reading fixed ranges of a topic and appending copies: what replay and redrive share.

Copies keep key, value and headers (the raw envelope: provider, URL, signature headers
and the original receive time), so the stream treats them exactly like the original;
every stage is idempotent, so a copy of something already processed emits nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from processors.config import Settings
from processors.kafka import client as kafka_client


class OpsError(Exception):
    """A failure to report to the operator (exit status 1)."""


async def connect(
    settings: Settings, produce: bool = True
) -> tuple[AIOKafkaConsumer, AIOKafkaProducer | None]:
    """A consumer, and a producer only when something will be written."""
    consumer = AIOKafkaConsumer(
        **kafka_client.client_kwargs(settings),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = (
        AIOKafkaProducer(
            **kafka_client.client_kwargs(settings),
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
        )
        if produce
        else None
    )
    try:
        await consumer.start()
        if producer is not None:
            await producer.start()
    except (KafkaError, OSError) as exc:
        await consumer.stop()
        if producer is not None:
            await producer.stop()
        where = kafka_client.describe(settings)
        raise OpsError(f"cannot reach Kafka at {where}: {type(exc).__name__}") from None
    return consumer, producer


async def partitions(consumer: AIOKafkaConsumer, topics: Iterable[str]) -> list[TopicPartition]:
    """Every partition of the topics; OpsError names a topic that does not exist."""
    await consumer._client.force_metadata_update()
    out = []
    for topic in topics:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            raise OpsError(f"topic {topic!r} does not exist")
        out += [TopicPartition(topic, p) for p in sorted(parts)]
    return out


async def read_range(
    consumer: AIOKafkaConsumer,
    starts: Mapping[TopicPartition, int],
    ends: Mapping[TopicPartition, int],
) -> AsyncIterator[Any]:
    """Records with start <= offset < end per partition (ends fixed by the caller, so
    copies appended meanwhile are not read again)."""
    todo = {tp: (start, ends[tp]) for tp, start in starts.items() if start < ends[tp]}
    if not todo:
        return
    consumer.assign(list(todo))
    for tp, (start, _) in todo.items():
        consumer.seek(tp, start)
    while todo:
        batch = await consumer.getmany(*todo, timeout_ms=1000, max_records=5000)
        for tp, records in batch.items():
            end = todo[tp][1]
            for record in records:
                if record.offset < end:
                    yield record
        for tp in list(todo):
            if await consumer.position(tp) >= todo[tp][1]:
                del todo[tp]


async def append(producer: AIOKafkaProducer, record: Any) -> Any:
    """Queue a copy of `record` on its own topic; returns the send future."""
    return await producer.send(
        record.topic, record.value, key=record.key, headers=list(record.headers or ())
    )
