"""Durable writes to Kafka for the gateway and pollers.

acks=all with an idempotent producer and a bounded wait: an answer of 200 to a
provider means the record is in Kafka; anything else becomes a 503 the provider retries.

Writes are micro-batched: `publish()` only queues the record and waits for its own
acknowledgement, and one flusher task writes everything queued since its last round as
one aiokafka batch per partition (`create_batch` / `send_batch`). aiokafka's per-message
`send()` (a task, two timers, a future and the partitioner per record) was about a fifth
of the gateway's CPU per webhook; a batch costs that once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import defaultdict
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from processors.config import Settings
from processors.kafka import client as kafka_client
from processors.kafka.raw import RawRecord

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 1_048_576  # aiokafka's max_request_size; a larger record is refused
MAX_BATCH_BYTES = 256 * 1024
# How long the flusher waits for more records before a round. 0 is one turn of the event
# loop: a zero-delay timer fires after the loop's next poll of its sockets, so every
# request read in that poll joins the round (measured: 1 ms idled the gateway ~12 % and
# tripled p99; uvloop rounds timers to whole ms). Batches also grow by themselves: while
# Kafka handles one produce request, the next round's records queue up.
LINGER_SECONDS = 0.0
# Deadlines are kept per window of this many seconds (one timer per window, not per
# record), so a request may be answered 503 up to this much before produce_timeout.
DEADLINE_GRANULARITY = 0.01


class KafkaUnavailable(Exception):
    """Kafka did not acknowledge in time; the caller answers 503 with Retry-After."""


class RawSink(Protocol):
    async def publish(self, record: RawRecord) -> None: ...

    async def ready(self) -> bool: ...


Waiter = asyncio.Future[None]


class Deadlines:
    """Fails every waiter still pending `timeout` seconds after it was added.

    Waiters that arrive within `granularity` of each other share one timer: one
    `call_later` per window instead of one per request (asyncio.wait_for per request
    cost a task, a timer and a callback).
    """

    def __init__(self, timeout: float, granularity: float = DEADLINE_GRANULARITY) -> None:
        self._timeout = timeout
        self._granularity = granularity
        self._window: list[Waiter] = []
        self._window_ends = float("-inf")

    def add(self, waiter: Waiter, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        if now >= self._window_ends:
            self._window = []
            self._window_ends = now + self._granularity
            loop.call_at(now + self._timeout, self._expire, self._window)
        self._window.append(waiter)

    def _expire(self, window: list[Waiter]) -> None:
        reason = f"Kafka did not acknowledge within {self._timeout:g} s"
        for waiter in window:
            if not waiter.done():
                waiter.set_exception(KafkaUnavailable(reason))
        window.clear()


def _reason(exc: BaseException) -> str:
    return f"Kafka did not acknowledge: {type(exc).__name__}"


def _settle(waiters: list[Waiter], written: asyncio.Future) -> None:
    """Done callback of one batch: its outcome becomes every one of its waiters'."""
    exc = asyncio.CancelledError() if written.cancelled() else written.exception()
    for waiter in waiters:
        if waiter.done():  # timed out, or its request went away
            continue
        if exc is None:
            waiter.set_result(None)
        else:  # one exception object per waiter: each request raises its own
            waiter.set_exception(KafkaUnavailable(_reason(exc)))


def _fail(waiters: list[Waiter], reason: str) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_exception(KafkaUnavailable(reason))


async def _timer(seconds: float) -> None:
    """Sleep on a real timer even for 0 (asyncio.sleep(0) resumes before the next poll)."""
    loop = asyncio.get_running_loop()
    fired: asyncio.Future[None] = loop.create_future()
    loop.call_later(seconds, _resolve, fired)
    await fired


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _append(builder: Any, record: RawRecord) -> bool:
    """Add `record` to an aiokafka BatchBuilder; False when the batch is full."""
    added = builder.append(
        timestamp=None, key=record.key, value=record.value, headers=record.headers
    )
    return added is not None


class KafkaRawSink:
    """acks=all, idempotent, micro-batched writes; `publish()` returns once Kafka
    acknowledged that record's batch, and raises KafkaUnavailable on an error or after
    MSGSTATUS_PRODUCE_TIMEOUT."""

    def __init__(self, settings: Settings, linger: float = LINGER_SECONDS) -> None:
        self._settings = settings
        self._timeout = settings.produce_timeout
        self._linger = linger
        self._producer = self._new_producer()
        self._partitioner = DefaultPartitioner()
        self._started = False
        self._stopping = False
        self._queued: list[tuple[RawRecord, Waiter]] = []
        self._wakeup = asyncio.Event()
        self._deadlines = Deadlines(self._timeout)
        self._flusher: asyncio.Task[None] | None = None
        self._backlog: dict[tuple[str, int], list[tuple[RawRecord, Waiter]]] = {}
        self._writers: dict[tuple[str, int], asyncio.Task[None]] = {}

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            **kafka_client.client_kwargs(self._settings),
            acks="all",
            enable_idempotence=True,
            linger_ms=1,
            request_timeout_ms=int(max(self._timeout, 1.0) * 1000),
            max_batch_size=MAX_BATCH_BYTES,
            max_request_size=MAX_REQUEST_BYTES,
        )

    async def start(self) -> None:
        await self._producer.start()
        self._started = True
        self._flusher = asyncio.create_task(self._flush_forever(), name="raw-sink-flusher")

    async def start_when_reachable(self, pause: float = 1.0) -> None:
        """Keep trying until Kafka answers; until then every publish is a 503."""
        while not self._started:
            try:
                await self.start()
            except (KafkaError, OSError) as exc:
                log.warning("Kafka not reachable yet (%s); retrying", type(exc).__name__)
                await self._producer.stop()
                self._producer = self._new_producer()
                await asyncio.sleep(pause)

    async def stop(self) -> None:
        """Refuse new records, write the queued ones (bounded wait), stop the producer."""
        if not self._started:
            return
        self._started = False
        self._stopping = True
        self._wakeup.set()
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            # its last rounds are bounded by the producer's request timeout
            await asyncio.wait({flusher}, timeout=self._timeout + 1)
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)
        writers = list(self._writers.values())
        for writer in writers:
            writer.cancel()
        await asyncio.gather(*writers, return_exceptions=True)
        _fail([waiter for _, waiter in self._queued], "gateway stopping")
        for items in self._backlog.values():
            _fail([waiter for _, waiter in items], "gateway stopping")
        self._queued, self._backlog = [], {}
        await self._producer.stop()  # flushes: settles every submitted batch

    async def publish(self, record: RawRecord) -> None:
        """Return once Kafka acknowledged `record`; KafkaUnavailable otherwise."""
        if not self._started:
            raise KafkaUnavailable("stopping" if self._stopping else "not connected to Kafka yet")
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(
            record.key, record.value, record.headers
        )
        if size > MAX_REQUEST_BYTES:  # aiokafka's send() refused these too
            raise KafkaUnavailable(f"record of {size} bytes exceeds {MAX_REQUEST_BYTES}")
        loop = asyncio.get_running_loop()
        waiter: Waiter = loop.create_future()
        self._queued.append((record, waiter))
        self._deadlines.add(waiter, loop)
        self._wakeup.set()
        await waiter

    async def _flush_forever(self) -> None:
        while not self._stopping or self._queued:
            await self._wakeup.wait()
            if not self._stopping:
                await _timer(self._linger)
            self._wakeup.clear()
            queued, self._queued = self._queued, []
            await self._route(queued)
        writers = list(self._writers.values())
        if writers:
            await asyncio.gather(*writers, return_exceptions=True)

    async def _route(self, queued: list[tuple[RawRecord, Waiter]]) -> None:
        """Hand each record to its partition's writer; never waits for Kafka.

        aiokafka's `send_batch` waits while the partition already has a batch waiting
        for the broker (one request in flight per broker with idempotence). A single
        writer for every partition made each round wait for those drains one partition
        after another, and the end-to-end p99 at 2,000 webhooks/s rose from ~0.3 s to
        ~0.5-0.9 s; one writer per partition lets the others, and new records, go on,
        and whatever queues up meanwhile leaves as the partition's next, larger batch.
        """
        try:
            groups = await self._group(queued)
        except Exception as exc:  # no metadata for a topic (Kafka down), ...
            _fail([waiter for _, waiter in queued], _reason(exc))
            return
        for tp, items in groups.items():
            self._backlog.setdefault(tp, []).extend(items)
            if tp not in self._writers:
                self._writers[tp] = asyncio.create_task(self._drain(tp), name=f"raw-sink-{tp}")

    async def _drain(self, tp: tuple[str, int]) -> None:
        """Write the partition's backlog until it is empty; every waiter is answered (by
        its batch, by an error here, or by its deadline)."""
        topic, partition = tp
        try:
            while self._backlog.get(tp):
                items = [it for it in self._backlog.pop(tp) if not it[1].done()]
                if not items:
                    continue
                try:
                    await self._send(topic, partition, items)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # its waiters are answered; go on
                    if not isinstance(exc, KafkaError | TimeoutError):
                        log.exception("writing raw records to %s failed", topic)
        except asyncio.CancelledError:
            _fail([waiter for _, waiter in self._backlog.pop(tp, [])], "gateway stopping")
            raise
        finally:
            self._writers.pop(tp, None)

    async def _group(
        self, queued: list[tuple[RawRecord, Waiter]]
    ) -> dict[tuple[str, int], list[tuple[RawRecord, Waiter]]]:
        groups: dict[tuple[str, int], list[tuple[RawRecord, Waiter]]] = defaultdict(list)
        partitions: dict[str, list[int]] = {}
        for record, waiter in queued:
            if waiter.done():  # already answered 503: do not write it late
                continue
            parts = partitions.get(record.topic)
            if parts is None:
                found = await self._producer.partitions_for(record.topic)
                parts = partitions[record.topic] = sorted(found)
            # aiokafka's own choice for the key, so a retried body (same key) lands on
            # the partition a keyed send() would have picked.
            partition = self._partitioner(record.key, parts, parts)
            groups[record.topic, partition].append((record, waiter))
        return groups

    async def _send(
        self, topic: str, partition: int, items: list[tuple[RawRecord, Waiter]]
    ) -> None:
        batches = self._batches(items)
        for index, (builder, waiters) in enumerate(batches):
            try:
                written = await self._producer.send_batch(builder, topic, partition=partition)
            except BaseException as exc:
                for _, unsent in batches[index:]:
                    _fail(unsent, _reason(exc))
                raise
            written.add_done_callback(functools.partial(_settle, waiters))

    def _batches(self, items: list[tuple[RawRecord, Waiter]]) -> list[tuple[Any, list[Waiter]]]:
        """The records as closed BatchBuilders (a full one starts the next) + their waiters."""
        out: list[tuple[Any, list[Waiter]]] = []
        builder, waiters = self._producer.create_batch(), []
        for record, waiter in items:
            if not _append(builder, record):  # full (an empty batch takes any record)
                builder.close()
                out.append((builder, waiters))
                builder, waiters = self._producer.create_batch(), []
                _append(builder, record)
            waiters.append(waiter)
        if waiters:
            builder.close()  # complete: the producer sends it without lingering
            out.append((builder, waiters))
        return out

    async def ready(self) -> bool:
        if not self._started:
            return False
        try:
            await asyncio.wait_for(self._producer.client.fetch_all_metadata(), 2.0)
        except (TimeoutError, KafkaError, OSError):
            return False
        return True


class MemorySink:
    """The gateway's output port kept in memory, for gateway unit tests (Svix Bridge style)."""

    def __init__(self) -> None:
        self.records: list[RawRecord] = []
        self.available = True

    async def publish(self, record: RawRecord) -> None:
        if not self.available:
            raise KafkaUnavailable("memory sink switched off")
        self.records.append(record)

    async def ready(self) -> bool:
        return self.available


class NullSink:
    """Bench-only: accepts every record and writes nothing (`msgstatus gateway --null-sink`).

    processors/bench/gateway.py measures the same gateway process with it as the baseline
    without Kafka. A gateway running with it answers 200 and keeps nothing: never use it
    in front of a real provider.
    """

    async def start_when_reachable(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def publish(self, record: RawRecord) -> None:
        return None

    async def ready(self) -> bool:
        return True
