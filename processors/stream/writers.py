"""Per-partition background writers for the worker's table units and batched outputs.

aiokafka keeps one produce request in flight per broker, and `send_batch` waits while the
partition still holds a batch the sender has not taken: an agent that awaited it waited
about one broker round trip per input record. Timed in the worker, the ordering and
emitter agents spent more time in those waits than in their own logic, while the loop
had nothing else to run. Agents now `append` and go on; one writer task per partition
hands the records to aiokafka in order, merging whatever queued up meanwhile into the
next batches.

A *unit* is what one input record writes to one partition. An atomic unit (a table's
changelog writes) is never split across two Kafka record batches: a batch is appended
to the log whole or not at all, so after any crash the changelog holds each input
record's writes completely or not at all, and a restore can never see half a record.
A unit larger than the producer's batch size gets a batch of its own sized for it (up
to MAX_UNIT_BYTES; the internal topics allow 8 MiB records).

Units carry the ownership token of the input record that made them: a unit whose
partition was revoked meanwhile is dropped instead of handed over (fence.py).

`drain()` returns once everything appended before it was called is in aiokafka's hands,
so a producer flush after it covers it: the worker's commit and revoke paths await both
before committing input offsets (at-least-once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka.producer.message_accumulator import BatchBuilder

from processors.stream import faults, metrics
from processors.stream.fence import Fenced, Ownership, Token

log = logging.getLogger(__name__)

Record = tuple[bytes, bytes | None]
TP = tuple[str, int]
# the broker's limit for the internal topics (processors/kafka/topics.py) minus batch overhead
MAX_UNIT_BYTES = 8 * 1024 * 1024 - 64 * 1024
RECORD_OVERHEAD = 32  # per-record framing in a v2 batch, generous


@dataclass(slots=True)
class Unit:
    records: list[Record]
    token: Token | None = None
    # called with the log offset of the unit's last record once the broker has it
    on_acked: Callable[[int], None] | None = None
    atomic: bool = True
    kind: str = "changelog"  # metrics label: changelog | output
    label: str | None = None  # the table (fault injection qualifier)

    @property
    def size(self) -> int:
        return sum(len(k or b"") + len(v or b"") + RECORD_OVERHEAD for k, v in self.records)


@dataclass(slots=True)
class _Batch:
    builder: Any
    units: list[tuple[Unit, int]]  # (unit, index of its last record in the batch)
    kind: str = "changelog"
    label: str | None = None
    count: int = 0


def _settle(fut: asyncio.Future, batch: _Batch, handed_at: float, on_error: Callable) -> None:
    """Per batch: the broker's answer, applied to each unit it carried."""
    if fut.cancelled():
        return
    exc = fut.exception()
    if exc is not None:
        if isinstance(exc, Fenced):
            metrics.FENCED_WRITES.inc(batch.count)
            return
        log.critical("a Kafka write failed, stopping the worker: %r", exc)
        on_error(exc)
        return
    metrics.SEND_SECONDS.labels(batch.kind).observe(time.monotonic() - handed_at)
    base = fut.result().offset
    for unit, last in batch.units:
        if unit.on_acked is not None:
            unit.on_acked(base + last)


class PartitionWriters:
    def __init__(
        self,
        producer: Callable[[], Any],
        on_error: Callable[[BaseException], None],
        ownership: Ownership | None = None,
        limit: int = 200_000,
    ) -> None:
        self._producer = producer
        self._on_error = on_error  # a failed hand-over loses output: the worker must stop
        self._ownership = ownership or Ownership()
        self._limit = limit  # queued records before `append` waits (backpressure)
        self._queued: dict[TP, list[Unit]] = {}
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

    async def append(self, topic: str, partition: int, unit: Unit) -> None:
        """Queue one unit for (topic, partition); dropped if its token is no longer live."""
        if not unit.records:
            return
        while self._count >= self._limit:
            self._room.clear()
            await self._room.wait()
        if not self._ownership.live(unit.token):
            metrics.FENCED_WRITES.inc(len(unit.records))
            return
        tp = (topic, partition)
        self._queued.setdefault(tp, []).append(unit)
        self._appended[tp] = self._appended.get(tp, 0) + 1
        self._count += len(unit.records)
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

    def discard(self) -> int:
        """Drop every queued unit whose token is no longer live (after a revoke)."""
        dropped = 0
        for tp, units in self._queued.items():
            keep = [u for u in units if self._ownership.live(u.token)]
            for unit in units:
                if not self._ownership.live(unit.token):
                    dropped += len(unit.records)
                    self._count -= len(unit.records)
                    self._handed[tp] = self._handed.get(tp, 0) + 1
            self._queued[tp] = keep
        if dropped:
            metrics.FENCED_WRITES.inc(dropped)
            self._room.set()
            self._notify()
        return dropped

    def _notify(self) -> None:
        if self._progress is not None and not self._progress.done():
            self._progress.set_result(None)

    def _batches(self, units: list[Unit]) -> list[_Batch]:
        producer = self._producer()
        batches: list[_Batch] = []
        current: _Batch | None = None
        for unit in units:
            # an atomic unit goes whole into one batch: start a new one if it may not fit
            limit = producer._message_accumulator._batch_size
            if (
                unit.atomic
                and current is not None
                and current.count
                and current.builder.size() + unit.size > limit
            ):
                batches.append(current)
                current = None
            if current is None:
                need = unit.size if unit.atomic else 0
                current = _Batch(self._builder(producer, need), [], unit.kind, unit.label)
            for key, value in unit.records:
                if current.builder.append(key=key, value=value, timestamp=None) is None:
                    if unit.atomic:  # sized for it above: cannot happen unless over the limit
                        raise ValueError(
                            f"a table unit of {unit.size} bytes exceeds the {MAX_UNIT_BYTES} "
                            "byte limit of one record batch"
                        )
                    batches.append(current)
                    current = _Batch(self._builder(producer, 0), [], unit.kind, unit.label)
                    if current.builder.append(key=key, value=value, timestamp=None) is None:
                        raise ValueError("a record larger than the producer's batch size")
                current.count += 1
            current.units.append((unit, current.count - 1))
        if current is not None and current.count:
            batches.append(current)
        return batches

    @staticmethod
    def _builder(producer: Any, need: int) -> Any:
        size = producer._message_accumulator._batch_size
        if need + 1024 > size:
            if need > MAX_UNIT_BYTES:
                raise ValueError(f"a table unit of {need} bytes exceeds {MAX_UNIT_BYTES} bytes")
            accumulator = producer._message_accumulator
            return BatchBuilder(
                need + 64 * 1024,
                accumulator._compression_type,
                is_transactional=False,
            )
        return producer.create_batch()

    async def _write(self, tp: TP) -> None:
        topic, partition = tp
        try:
            while True:
                units = self._queued.pop(tp, None)
                if not units:
                    return
                live = [u for u in units if self._ownership.live(u.token)]
                if len(live) != len(units):
                    metrics.FENCED_WRITES.inc(
                        sum(len(u.records) for u in units if not self._ownership.live(u.token))
                    )
                producer = self._producer()
                for batch in self._batches(live):
                    handed_at = time.monotonic()
                    fut = await producer.send_batch(batch.builder, topic, partition=partition)
                    fut.add_done_callback(
                        lambda f, b=batch, t=handed_at: _settle(f, b, t, self._on_error)
                    )
                    point = "changelog-handed" if batch.kind == "changelog" else "output-handed"
                    faults.point(point, batch.label)
                self._handed[tp] = self._handed.get(tp, 0) + len(units)
                self._count -= sum(len(u.records) for u in units)
                if self._count < self._limit:
                    self._room.set()
                self._notify()
        finally:
            del self._tasks[tp]

    def _check(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.critical("handing records to Kafka failed: %r", exc)
            self._on_error(exc)
