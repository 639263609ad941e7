"""The operator commands' Kafka clients and their one failure type.

Reading ranges and copying records is processors/kafka/offsets.py's; what is added here
is what an operator sees: a Kafka that cannot be reached or a topic that does not exist
is a message and exit status 1, never a traceback.
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from processors.config import Settings
from processors.kafka import client as kafka_client
from processors.kafka.offsets import MissingTopic


class OpsError(Exception):
    """A failure to report to the operator (exit status 1)."""


# What the commands report as a failure (exit status 1) rather than as a bug.
FAILURES = (OpsError, MissingTopic)


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
