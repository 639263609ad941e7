"""One batching writer per (topic, partition), shared by the gateway and the worker.

aiokafka's per-message `send()` costs a task, two timers, a future and the partitioner
per record (about a fifth of the gateway's CPU per webhook), and its `send_batch` waits
while the partition still holds a batch the sender has not taken: a caller that awaited
it waited about one broker round trip per record. Timed in the worker, the ordering and
emitter agents spent more time in those waits than in their own logic, and a gateway
with one writer for every partition waited for those drains one partition after another
(the end-to-end p99 at 2,000 webhooks/s rose from ~0.3 s to ~0.5-0.9 s). So callers
`append` and go on; one task per partition hands what queued up to aiokafka in order as
whole record batches (`create_batch` / `send_batch`), merging whatever queued meanwhile
into the next batches, while the other partitions go on.

A *unit* is what one caller writes to one partition at once: one raw record for the
gateway, one input record's table writes (or outputs) for the worker. An atomic unit is
never split across two Kafka record batches: a batch is appended to the log whole or not
at all, so after any crash the log holds each unit completely or not at all. A unit
larger than the producer's batch size gets a batch of its own sized for it (up to
MAX_UNIT_BYTES; the internal topics allow 8 MiB records).

A unit carries an ownership token (checked against `ownership.live()` when queued and
again when handed over: a unit whose partition was revoked meanwhile is dropped) and
hears its outcome: `acked(offset)` with the log offset of its last record once the broker
has its batch, or `failed(exc)` when the batch failed for good. A failure the owner's
`Watch` calls benign (the worker's Fenced: a write dropped on purpose) is neither.

`drain()` returns once everything appended before it was called is in aiokafka's hands,
so a producer flush after it covers it: the worker's commit and revoke paths await both
before committing input offsets (at-least-once).

`Router` adds what keyed records need (the gateway's raw records): rounds that group
whatever was submitted since the last one by the partition a keyed `send()` would pick.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder

log = logging.getLogger(__name__)

# (key, value) or (key, value, headers)
Record = tuple[bytes | None, bytes | None] | tuple[bytes | None, bytes | None, Sequence[Any]]
TP = tuple[str, int]
# the broker's limit for the internal topics (processors/kafka/topics.py) minus batch overhead
MAX_UNIT_BYTES = 8 * 1024 * 1024 - 64 * 1024
RECORD_OVERHEAD = 32  # per-record framing in a v2 batch, generous


@dataclass(slots=True)
class Unit:
    records: list[Record]
    token: Any = None
    # called with the log offset of the unit's last record once the broker has it
    on_acked: Callable[[int], None] | None = None
    atomic: bool = True
    kind: str = "changelog"  # the Watch's label: changelog | output | raw
    label: str | None = None  # the table (fault injection qualifier)

    @property
    def size(self) -> int:
        return sum(len(r[0] or b"") + len(r[1] or b"") + RECORD_OVERHEAD for r in self.records)

    def wanted(self) -> bool:
        """False once nobody waits for the unit any more: it is not written then."""
        return True

    def acked(self, offset: int) -> None:
        if self.on_acked is not None:
            self.on_acked(offset)

    def failed(self, exc: BaseException) -> None:
        """Its batch failed for good (the writer's `on_error` hears of it too)."""


@dataclass(slots=True)
class Batch:
    builder: Any
    units: list[tuple[Unit, int]]  # (unit, index of its last record in the batch)
    kind: str = "changelog"
    label: str | None = None
    count: int = 0


class Ownership(Protocol):
    def live(self, token: Any) -> bool: ...


class Everyone:
    """No fencing: every unit may be written."""

    def live(self, token: Any) -> bool:
        return True


class Watch:
    """What an owner wants to see of its writes besides each unit's outcome (metrics,
    fault points). Silent by default."""

    def handed(self, batch: Batch) -> None:
        """`send_batch` took the batch (not acknowledged yet)."""

    def acked(self, batch: Batch, seconds: float) -> None:
        """The broker acknowledged the batch, `seconds` after it was handed over."""

    def dropped(self, records: int) -> None:
        """Records of units no longer live, dropped instead of written."""

    def benign(self, exc: BaseException, batch: Batch) -> bool:
        """True for a batch failure that is no error (its units hear nothing)."""
        return False


def _append(builder: Any, record: Record) -> bool:
    """Add `record` to an aiokafka BatchBuilder; False when the batch is full."""
    if len(record) == 2:
        added = builder.append(key=record[0], value=record[1], timestamp=None)
    else:
        added = builder.append(key=record[0], value=record[1], timestamp=None, headers=record[2])
    return added is not None


class PartitionWriters:
    def __init__(
        self,
        producer: Callable[[], Any],
        on_error: Callable[[BaseException], None],
        ownership: Ownership | None = None,
        limit: int | None = 200_000,
        watch: Watch | None = None,
    ) -> None:
        self._producer = producer
        self._on_error = on_error  # a failed hand-over or batch, after its units heard it
        self._ownership = ownership or Everyone()
        self._limit = sys.maxsize if limit is None else limit  # queued records before
        self._watch = watch or Watch()  # `append` waits (backpressure)
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

    def _live(self, unit: Unit) -> bool:
        return self._ownership.live(unit.token) and unit.wanted()

    async def append(self, topic: str, partition: int, unit: Unit) -> None:
        """Queue one unit for (topic, partition); dropped if it is no longer live."""
        if not unit.records:
            return
        while self._count >= self._limit:
            self._room.clear()
            await self._room.wait()
        if not self._live(unit):
            self._watch.dropped(len(unit.records))
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
        """Drop every queued unit that is no longer live (after a revoke)."""
        dropped = 0
        for tp, units in self._queued.items():
            keep = [u for u in units if self._live(u)]
            for unit in units:
                if not self._live(unit):
                    dropped += len(unit.records)
                    self._count -= len(unit.records)
                    self._handed[tp] = self._handed.get(tp, 0) + 1
            self._queued[tp] = keep
        if dropped:
            self._watch.dropped(dropped)
            self._room.set()
            self._notify()
        return dropped

    async def close(self) -> list[Unit]:
        """Stop every partition's task; returns the units never handed over (a unit whose
        hand-over was interrupted has heard `failed` already)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        left = [unit for units in self._queued.values() for unit in units]
        self._queued.clear()
        self._count = 0
        self._room.set()
        return left

    def _notify(self) -> None:
        if self._progress is not None and not self._progress.done():
            self._progress.set_result(None)

    def _batches(self, units: list[Unit]) -> list[Batch]:
        producer = self._producer()
        batches: list[Batch] = []
        current: Batch | None = None
        for unit in units:
            # an atomic unit goes whole into one batch: start a new one if it may not fit
            if (
                unit.atomic
                and current is not None
                and current.count
                and current.builder.size() + unit.size > producer._message_accumulator._batch_size
            ):
                batches.append(current)
                current = None
            if current is None:
                need = unit.size if unit.atomic else 0
                current = Batch(self._builder(producer, need), [], unit.kind, unit.label)
            for record in unit.records:
                if not _append(current.builder, record):
                    if unit.atomic:  # sized for it above: cannot happen unless over the limit
                        raise ValueError(
                            f"a table unit of {unit.size} bytes exceeds the {MAX_UNIT_BYTES} "
                            "byte limit of one record batch"
                        )
                    batches.append(current)  # full: an empty batch takes any record
                    current = Batch(self._builder(producer, 0), [], unit.kind, unit.label)
                    if not _append(current.builder, record):
                        raise ValueError("a record larger than the producer's batch size")
                current.count += 1
            current.units.append((unit, current.count - 1))
        if current is not None and current.count:
            batches.append(current)
        return batches

    @staticmethod
    def _builder(producer: Any, need: int) -> Any:
        if need:
            accumulator = producer._message_accumulator
            if need + 1024 > accumulator._batch_size:
                if need > MAX_UNIT_BYTES:
                    raise ValueError(f"a table unit of {need} bytes exceeds {MAX_UNIT_BYTES} bytes")
                return BatchBuilder(
                    need + 64 * 1024, accumulator._compression_type, is_transactional=False
                )
        return producer.create_batch()

    async def _write(self, tp: TP) -> None:
        topic, partition = tp
        try:
            while True:
                units = self._queued.pop(tp, None)
                if not units:
                    return
                live = [u for u in units if self._live(u)]
                if len(live) != len(units):
                    self._watch.dropped(sum(len(u.records) for u in units if not self._live(u)))
                try:
                    await self._send(topic, partition, live)
                finally:
                    self._handed[tp] = self._handed.get(tp, 0) + len(units)
                    self._count -= sum(len(u.records) for u in units)
                    if self._count < self._limit:
                        self._room.set()
                    self._notify()
        finally:
            del self._tasks[tp]

    async def _send(self, topic: str, partition: int, units: list[Unit]) -> None:
        producer = self._producer()
        batches = self._batches(units)
        for index, batch in enumerate(batches):
            batch.builder.close()  # complete: no send() record may join it
            handed_at = time.monotonic()
            try:
                fut = await producer.send_batch(batch.builder, topic, partition=partition)
            except BaseException as exc:  # this batch and the rest of the round are lost
                for lost in batches[index:]:
                    for unit, _ in lost.units:
                        unit.failed(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                self._on_error(exc)
                return
            fut.add_done_callback(lambda f, b=batch, t=handed_at: self._settle(f, b, t))
            self._watch.handed(batch)

    def _settle(self, fut: asyncio.Future, batch: Batch, handed_at: float) -> None:
        """Per batch: the broker's answer, applied to each unit it carried."""
        if fut.cancelled():
            for unit, _ in batch.units:
                unit.failed(asyncio.CancelledError())
            return
        exc = fut.exception()
        if exc is not None:
            if self._watch.benign(exc, batch):
                return
            for unit, _ in batch.units:
                unit.failed(exc)
            self._on_error(exc)
            return
        self._watch.acked(batch, time.monotonic() - handed_at)
        base = fut.result().offset
        for unit, last in batch.units:
            unit.acked(base + last)

    def _check(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:  # a bug or an impossible unit (over MAX_UNIT_BYTES)
            log.critical("handing records to Kafka failed: %r", exc)
            self._on_error(exc)


async def _timer(seconds: float) -> None:
    """Sleep on a real timer even for 0 (asyncio.sleep(0) resumes before the next poll)."""
    loop = asyncio.get_running_loop()
    fired: asyncio.Future[None] = loop.create_future()
    loop.call_later(seconds, _resolve, fired)
    await fired


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Router:
    """Keyed units to their partitions' writers, in rounds.

    `submit` only queues; one task takes everything queued since its last round, looks
    up each topic's partitions once and appends each unit to the partition aiokafka's
    own partitioner picks for its key (so a retried body, same key, lands where a keyed
    `send()` would have put it). A round starts `linger` seconds after the first unit
    queued for it; 0 is one turn of the event loop: a zero-delay timer fires after the
    loop's next poll of its sockets, so every request read in that poll joins the round
    (measured in the gateway: 1 ms idled it ~12 % and tripled p99; uvloop rounds timers
    to whole ms). Rounds also grow by themselves: while Kafka handles one produce
    request, the next round's units queue up.
    """

    def __init__(
        self, writers: PartitionWriters, producer: Callable[[], Any], linger: float = 0.0
    ) -> None:
        self._writers = writers
        self._producer = producer
        self._linger = linger
        self._partitioner = DefaultPartitioner()
        self._queued: list[tuple[str, Unit]] = []
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._rounds(), name="kafka-router")

    def submit(self, topic: str, unit: Unit) -> None:
        """Queue a unit for `topic`, routed by its first record's key."""
        self._queued.append((topic, unit))
        self._wakeup.set()

    async def stop(self, timeout: float) -> list[Unit]:
        """Route what is queued and wait (up to `timeout` s) until the writers hold it;
        returns the units never routed."""
        self._stopping = True
        self._wakeup.set()
        task, self._task = self._task, None
        if task is not None:
            await asyncio.wait({task}, timeout=timeout)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        left = [unit for _, unit in self._queued]
        self._queued = []
        return left

    async def _rounds(self) -> None:
        while not self._stopping or self._queued:
            await self._wakeup.wait()
            if not self._stopping:
                await _timer(self._linger)
            self._wakeup.clear()
            queued, self._queued = self._queued, []
            await self._route(queued)
        await self._writers.drain()

    async def _route(self, queued: list[tuple[str, Unit]]) -> None:
        try:
            groups = await self._group(queued)
        except Exception as exc:  # no metadata for a topic (Kafka down), ...
            for _, unit in queued:
                unit.failed(exc)
            return
        for (topic, partition), units in groups.items():
            for unit in units:
                await self._writers.append(topic, partition, unit)

    async def _group(self, queued: list[tuple[str, Unit]]) -> dict[TP, list[Unit]]:
        groups: dict[TP, list[Unit]] = defaultdict(list)
        partitions: dict[str, list[int]] = {}
        producer = self._producer()
        for topic, unit in queued:
            if not unit.wanted():  # already answered: do not write it late
                continue
            parts = partitions.get(topic)
            if parts is None:
                found = await producer.partitions_for(topic)
                parts = partitions[topic] = sorted(found)
            groups[topic, self._partitioner(unit.records[0][0], parts, parts)].append(unit)
        return groups
