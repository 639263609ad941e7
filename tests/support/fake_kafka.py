"""A producer that behaves like aiokafka's where the worker's writers touch it.

`send_batch` waits, like aiokafka's, while the test holds the partition's gate; it keeps
aiokafka's real BatchBuilder, so the records asserted are the bytes the broker would
get, and it assigns log offsets per partition like a broker.
"""

from __future__ import annotations

import asyncio

from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch


class _Accumulator:
    def __init__(self, batch_size: int) -> None:
        self._batch_size = batch_size
        self._compression_type = 0


class _Meta:
    def __init__(self, offset: int) -> None:
        self.offset = offset


class FakeProducer:
    def __init__(self, batch_size: int = 16 * 1024) -> None:
        self.batch_size = batch_size
        self._message_accumulator = _Accumulator(batch_size)
        self.sent: list[tuple[str, int, BatchBuilder, asyncio.Future]] = []
        self.gates: dict[tuple[str, int], asyncio.Event] = {}
        self.refuse: BaseException | None = None
        self.fail_with: BaseException | None = None
        self.ends: dict[tuple[str, int], int] = {}

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
        if self.fail_with is not None:
            future.set_exception(self.fail_with)
        else:
            base = self.ends.get((topic, partition), 0)
            count = len(list(DefaultRecordBatch(builder._build())))
            self.ends[(topic, partition)] = base + count
            future.set_result(_Meta(base))
        self.sent.append((topic, partition, builder, future))
        return future

    def records(self, topic: str, partition: int) -> list[tuple[bytes, bytes | None]]:
        return [r for batch in self.per_batch(topic, partition) for r in batch]

    def per_batch(self, topic: str, partition: int) -> list[list[tuple[bytes, bytes | None]]]:
        return [
            [(r.key, r.value) for r in DefaultRecordBatch(builder._buffer)]
            for t, p, builder, _ in self.sent
            if (t, p) == (topic, partition)
        ]

    def batches(self, topic: str, partition: int) -> int:
        return sum(1 for t, p, _, _ in self.sent if (t, p) == (topic, partition))
