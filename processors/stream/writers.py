"""Per-partition background writers for the worker's batched outputs.

aiokafka keeps one produce request in flight per broker, and `send_batch` waits while the
partition still holds a batch the sender has not taken: an agent that awaited it waited
about one broker round trip per input record. Timed in the worker, the ordering and
emitter agents spent more time in those waits than in their own logic, while the loop
had nothing else to run. Agents now `append` and go on; one writer task per partition
hands the records to aiokafka in order, merging whatever queued up meanwhile into the
next batches.

`drain()` returns once everything appended before it was called is in aiokafka's hands,
so a producer flush after it covers it: the worker wraps Faust's producer flush (which
Faust's commit awaits before committing offsets) with it, keeping at-least-once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Record = tuple[bytes, bytes | None]
OnBatch = Callable[[asyncio.Future, int], None]  # (future of one batch, records in it)
TP = tuple[str, int]


async def send_many(
    producer: Any, topic: str, partition: int, records: list[tuple[bytes, bytes | None]]
) -> list[tuple[Any, int]]:
    """Append records to one partition as whole batches: one future per batch instead of
    one per record (aiokafka's per-message `send` was the largest cost per applied event).
    Returns (future, records in that batch); a future's result is the batch's base offset.
    """
    out: list[tuple[Any, int]] = []
    builder = producer.create_batch()
    count = 0
    for key, value in records:
        if builder.append(key=key, value=value, timestamp=None) is None:
            out.append((await producer.send_batch(builder, topic, partition=partition), count))
            builder = producer.create_batch()
            count = 0
            if builder.append(key=key, value=value, timestamp=None) is None:
                raise ValueError(f"record for {topic} too large for one batch")
        count += 1
    if count:
        out.append((await producer.send_batch(builder, topic, partition=partition), count))
    return out


class PartitionWriters:
    def __init__(
        self,
        producer: Callable[[], Any],
        on_error: Callable[[BaseException], None],
        limit: int = 200_000,
    ) -> None:
        self._producer = producer
        self._on_error = on_error  # a failed hand-over loses output: the worker must stop
        self._limit = limit  # queued records before `append` waits (backpressure)
        self._queued: dict[TP, list[Record]] = {}
        self._on_batch: dict[TP, OnBatch | None] = {}
        self._tasks: dict[TP, asyncio.Task[None]] = {}
        self._appended: dict[TP, int] = {}
        self._handed: dict[TP, int] = {}
        self._count = 0
        self._room = asyncio.Event()
        self._room.set()
        self._progress: asyncio.Future[None] | None = None

    @property
    def queued(self) -> int:
        return self._count

    async def append(
        self, topic: str, partition: int, records: list[Record], on_batch: OnBatch | None = None
    ) -> None:
        """Queue `records` for (topic, partition); `on_batch` sees each batch's future."""
        if not records:
            return
        while self._count >= self._limit:
            self._room.clear()
            await self._room.wait()
        tp = (topic, partition)
        self._queued.setdefault(tp, []).extend(records)
        self._on_batch[tp] = on_batch
        self._appended[tp] = self._appended.get(tp, 0) + len(records)
        self._count += len(records)
        if tp not in self._tasks:
            task = asyncio.get_running_loop().create_task(self._write(tp))
            self._tasks[tp] = task
            task.add_done_callback(self._check)

    async def drain(self) -> None:
        """Wait until what was appended before this call has been handed to aiokafka."""
        target = dict(self._appended)
        while any(self._handed.get(tp, 0) < n for tp, n in target.items()):
            if self._progress is None or self._progress.done():
                self._progress = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._progress)

    async def _write(self, tp: TP) -> None:
        topic, partition = tp
        try:
            while True:
                records = self._queued.pop(tp, None)
                if not records:
                    return
                on_batch = self._on_batch.get(tp)
                for fut, count in await send_many(self._producer(), topic, partition, records):
                    if on_batch is not None:
                        on_batch(fut, count)
                self._handed[tp] = self._handed.get(tp, 0) + len(records)
                self._count -= len(records)
                if self._count < self._limit:
                    self._room.set()
                if self._progress is not None and not self._progress.done():
                    self._progress.set_result(None)
        finally:
            del self._tasks[tp]

    def _check(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.critical("handing records to Kafka failed: %r", exc)
            self._on_error(exc)
