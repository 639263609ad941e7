"""The consumer lag exporter against a real broker: committed, uncommitted, caught up."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from prometheus_client import REGISTRY

from processors.config import single_broker
from processors.kafka.topics import ensure_topics
from processors.ops import lag

pytestmark = pytest.mark.integration


async def test_exporter_sets_the_gauge_per_group_topic_partition(kafka, topic_prefix) -> None:
    settings = single_broker(
        kafka_bootstrap=kafka.bootstrap, topic_prefix=topic_prefix, partitions=2
    )
    topic = settings.topic("lagged")
    await ensure_topics(settings, [topic])
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await producer.start()
    try:
        for _ in range(10):
            await producer.send_and_wait(topic, b"x", partition=0)
        for _ in range(3):
            await producer.send_and_wait(topic, b"y", partition=1)
    finally:
        await producer.stop()
    group = f"{topic_prefix}lag-group"
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        await consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(4, "")})
    finally:
        await consumer.stop()

    exporter = lag.LagExporter(settings, [lag.Group(group, (topic, settings.topic("absent")))])
    try:
        found = await exporter.refresh()
    finally:
        await exporter.close()
    # partition 0: 10 written, 4 committed; partition 1: never committed, counts from start
    assert found == {(group, topic, 0): 6, (group, topic, 1): 3}
    value = REGISTRY.get_sample_value(
        "msgstatus_consumer_lag", {"group": group, "topic": topic, "partition": "0"}
    )
    assert value == 6
