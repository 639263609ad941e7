"""PartitionWriters against a fake producer that behaves like aiokafka's accumulator.

`send_batch` here waits, like aiokafka's, while the partition still holds a batch the
broker has not taken (the test releases it), and keeps aiokafka's real BatchBuilder, so
the records asserted are the bytes the broker would get.
"""

from __future__ import annotations

import asyncio

from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch

from processors.stream.writers import PartitionWriters


class FakeProducer:
    def __init__(self, batch_size: int = 16 * 1024) -> None:
        self.batch_size = batch_size
        self.sent: list[tuple[str, int, BatchBuilder, asyncio.Future]] = []
        self.gates: dict[tuple[str, int], asyncio.Event] = {}
        self.refuse: BaseException | None = None

    def block(self, topic: str, partition: int) -> asyncio.Event:
        gate = self.gates[(topic, partition)] = asyncio.Event()
        return gate

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_size, 0)

    async def send_batch(self, builder: BatchBuilder, topic: str, *, partition: int):
        if self.refuse is not None:
            raise self.refuse
        gate = self.gates.get((topic, partition))
        if gate is not None:
            await gate.wait()
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        self.sent.append((topic, partition, builder, future))
        return future

    def records(self, topic: str, partition: int) -> list[tuple[bytes, bytes | None]]:
        return [
            (r.key, r.value)
            for t, p, builder, _ in self.sent
            if (t, p) == (topic, partition)
            for r in DefaultRecordBatch(builder._build())
        ]

    def batches(self, topic: str, partition: int) -> int:
        return sum(1 for t, p, _, _ in self.sent if (t, p) == (topic, partition))


def _records(prefix: str, n: int, size: int = 10) -> list[tuple[bytes, bytes | None]]:
    return [(f"{prefix}{i}".encode(), b"v" * size) for i in range(n)]


def _writers(fake: FakeProducer, errors: list[BaseException] | None = None, limit: int = 1000):
    return PartitionWriters(lambda: fake, (errors if errors is not None else []).append, limit)


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_records_reach_each_partition_in_order_and_batches_are_counted():
    fake = FakeProducer(batch_size=2048)
    writers = _writers(fake)
    counted: list[int] = []
    first, second = _records("a", 300), _records("b", 5)
    await writers.append("t", 0, first[:150], lambda fut, n: counted.append(n))
    await writers.append("t", 0, first[150:], lambda fut, n: counted.append(n))
    await writers.append("t", 1, second)
    await writers.drain()
    assert fake.records("t", 0) == first
    assert fake.records("t", 1) == second
    assert sum(counted) == 300 and fake.batches("t", 0) == len(counted) > 1
    assert writers.queued == 0


async def test_append_does_not_wait_for_the_partitions_previous_batch():
    fake = FakeProducer()
    writers = _writers(fake)
    gate = fake.block("t", 0)
    await writers.append("t", 0, _records("a", 3))
    await _settle()  # the writer is now stuck in send_batch
    for i in range(5):  # an agent appending while the partition is busy never waits
        await asyncio.wait_for(writers.append("t", 0, _records(f"n{i}-", 2)), 0.1)
    assert writers.queued == 13
    gate.set()
    await writers.drain()
    # what queued meanwhile went out merged, not as five more batches
    assert fake.batches("t", 0) == 2
    assert [k for k, _ in fake.records("t", 0)][:4] == [b"a0", b"a1", b"a2", b"n0-0"]


async def test_drain_waits_for_earlier_records_only():
    fake = FakeProducer()
    writers = _writers(fake)
    gate0 = fake.block("t", 0)
    await writers.append("t", 0, _records("a", 2))
    drained = asyncio.create_task(writers.drain())
    await _settle()
    assert not drained.done()  # partition 0's records are not in the producer yet
    gate1 = fake.block("t", 1)
    await writers.append("t", 1, _records("late", 2))  # after the drain began
    gate0.set()
    await asyncio.wait_for(drained, 1)  # does not wait for partition 1
    assert fake.records("t", 1) == []
    gate1.set()
    await writers.drain()
    assert len(fake.records("t", 1)) == 2


async def test_append_waits_when_too_much_is_queued():
    fake = FakeProducer()
    writers = _writers(fake, limit=10)
    gate = fake.block("t", 0)
    await writers.append("t", 0, _records("a", 10))
    blocked = asyncio.create_task(writers.append("t", 1, _records("b", 1)))
    await _settle()
    assert not blocked.done()
    gate.set()
    await asyncio.wait_for(blocked, 1)
    await writers.drain()
    assert len(fake.records("t", 1)) == 1


async def test_a_failed_hand_over_is_reported():
    fake = FakeProducer()
    errors: list[BaseException] = []
    writers = _writers(fake, errors)
    fake.refuse = RuntimeError("producer closed")
    await writers.append("t", 0, _records("a", 1))
    await _settle()
    assert len(errors) == 1 and "producer closed" in str(errors[0])
