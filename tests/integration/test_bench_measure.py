"""The processor bench's measuring helpers, against the real broker.

A first version of the bench's output span (now `processors.kafka.offsets.span`) stopped
reading after a fraction of a multi-partition topic and so reported rates several times
too high; these tests pin what each helper measures on records and commits whose times
we set.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench import processor
from processors.config import single_broker
from processors.kafka import offsets
from processors.kafka.topics import ensure_topics

pytestmark = pytest.mark.integration


async def test_output_span_reads_every_partition_to_its_end(kafka, topic_prefix):
    topic = f"{topic_prefix}span"
    await ensure_topics(single_broker(kafka_bootstrap=kafka.bootstrap, partitions=4), [topic])
    base_ms = 1_700_000_000_000
    per_partition = 6000  # ~1.5 MB per partition: several fetches each
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, linger_ms=20)
    await producer.start()
    try:
        futures = []
        for i in range(per_partition):
            for partition in range(4):
                ts = base_ms + i * 10 + partition
                futures.append(
                    await producer.send(topic, b"x" * 250, partition=partition, timestamp_ms=ts)
                )
        await asyncio.gather(*futures)
    finally:
        await producer.stop()

    count, first, last = await offsets.span(kafka.bootstrap, topic)

    assert count == 4 * per_partition
    assert first == pytest.approx(base_ms / 1000, abs=1e-3)
    assert last == pytest.approx((base_ms + (per_partition - 1) * 10 + 3) / 1000, abs=1e-3)


async def test_committed_slope_measures_a_groups_commit_rate(kafka, topic_prefix):
    topic, group = f"{topic_prefix}slope", f"{topic_prefix}slope-group"
    await ensure_topics(single_broker(kafka_bootstrap=kafka.bootstrap, partitions=1), [topic])
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, linger_ms=20)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, b"r") for _ in range(4000)])
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    committed_at: list[float] = []

    async def commit_steadily() -> None:
        for done in range(250, 4001, 250):  # 250 records every 0.5 s: ~500/s for ~8 s
            await consumer.commit({tp: done})
            committed_at.append(time.monotonic())
            await asyncio.sleep(0.5)

    try:
        committer = asyncio.create_task(commit_steadily())
        done, rate = await processor.committed_slope(kafka.bootstrap, group, 4000, 60, alive)
        await committer
    finally:
        alive.kill()
        alive.wait()
        await consumer.stop()
    assert done == 4000
    # the rate the commits really had (a busy machine stretches the sleeps); the helper
    # samples every 0.5 s, so over ~8 s it may be off by some 15 %
    actual = 3750 / (committed_at[-1] - committed_at[0])
    assert 0.65 * actual < rate < 1.35 * actual, (rate, actual)
