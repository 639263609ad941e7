"""Durable writes to Kafka for the gateway and pollers.

acks=all with an idempotent producer and a bounded wait: an answer of 200 to a
provider means the record is in Kafka; anything else becomes a 503 the provider retries.

`publish()` only queues the record and waits for its own acknowledgement; the shared
batching writer (processors/kafka/writer.py) writes everything queued since its last
round as one aiokafka batch per partition. What is the sink's own: the waiters (one per
request, answered by its batch, by an error or by its deadline) and the deadlines.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
)
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from processors.config import Settings
from processors.kafka import client as kafka_client
from processors.kafka.raw import RawRecord
from processors.kafka.writer import PartitionWriters, Router, Unit

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 1_048_576  # aiokafka's max_request_size; a larger record is refused
MAX_BATCH_BYTES = 256 * 1024
# How long a round waits for more records (processors/kafka/writer.py, Router).
LINGER_SECONDS = 0.0
# Deadlines are kept per window of this many seconds (one timer per window, not per
# record), so a request may be answered 503 up to this much before produce_timeout.
DEADLINE_GRANULARITY = 0.01
# An idempotent batch takes its sequence numbers when it is first sent. One that then
# fails (it expired while its partition had no leader: the broker was down) leaves a gap,
# and the broker refuses every later batch of that partition with OutOfOrderSequenceNumber,
# for good. The Java client then resets its producer id; aiokafka does not, so the sink
# starts a new producer (a new id) when Kafka says any of these.
STUCK_PRODUCER = (OutOfOrderSequenceNumber, UnknownProducerId, InvalidProducerEpoch, ProducerFenced)


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


@dataclass(slots=True)
class Pending(Unit):
    """One raw record and the request waiting for it: a unit of the shared writer."""

    waiter: Waiter = None  # type: ignore[assignment]  # always given

    def wanted(self) -> bool:
        return not self.waiter.done()

    def acked(self, offset: int) -> None:
        if not self.waiter.done():
            self.waiter.set_result(None)

    def failed(self, exc: BaseException) -> None:
        # one exception object per waiter: each request raises its own
        self.fail(_reason(exc))

    def fail(self, reason: str) -> None:
        if not self.waiter.done():
            self.waiter.set_exception(KafkaUnavailable(reason))


class KafkaRawSink:
    """acks=all, idempotent, micro-batched writes; `publish()` returns once Kafka
    acknowledged that record's batch, and raises KafkaUnavailable on an error or after
    MSGSTATUS_PRODUCE_TIMEOUT."""

    def __init__(self, settings: Settings, linger: float = LINGER_SECONDS) -> None:
        self._settings = settings
        self._timeout = settings.produce_timeout
        self._producer = self._new_producer()
        self._started = False
        self._stopping = False
        self._deadlines = Deadlines(self._timeout)
        self._renewal: asyncio.Task[None] | None = None
        self._writers = PartitionWriters(lambda: self._producer, self._failed, limit=None)
        self._router = Router(self._writers, lambda: self._producer, linger)

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
        self._router.start()

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
        if self._renewal is not None:
            self._renewal.cancel()
            await asyncio.gather(self._renewal, return_exceptions=True)
        # its last rounds are bounded by the producer's request timeout
        left = await self._router.stop(timeout=self._timeout + 1)
        left += await self._writers.close()
        for unit in left:
            if isinstance(unit, Pending):
                unit.fail("gateway stopping")
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
        unit = Pending(
            [(record.key, record.value, record.headers)], atomic=False, kind="raw", waiter=waiter
        )
        self._router.submit(record.topic, unit)
        self._deadlines.add(waiter, loop)
        await waiter

    def _failed(self, exc: BaseException) -> None:
        """A batch or hand-over failed: its requests are answered 503 already. Kafka
        refusing the producer itself (STUCK_PRODUCER) starts a new one; only what is not
        a Kafka error (a bug) deserves a log line."""
        if isinstance(exc, STUCK_PRODUCER):
            if self._renewal is None and self._started:
                self._renewal = asyncio.get_running_loop().create_task(self._renew(exc))
        elif not isinstance(exc, KafkaError | TimeoutError):
            log.error("writing raw records failed: %r", exc)

    async def _renew(self, why: BaseException) -> None:
        log.warning("Kafka refuses the producer (%s): starting a new one", type(why).__name__)
        old, new = self._producer, self._new_producer()
        try:
            while True:
                try:
                    await new.start()
                    break
                except (KafkaError, OSError):
                    await new.stop()
                    new = self._new_producer()
                    await asyncio.sleep(1.0)
        except asyncio.CancelledError:
            await new.stop()
            self._renewal = None
            raise
        self._producer = new
        try:  # its batches fail fast now: this returns quickly
            await asyncio.wait_for(old.stop(), self._timeout + 1)
        except (TimeoutError, KafkaError, OSError) as exc:
            log.warning("stopping the old producer: %r", exc)
        finally:
            # only now: the old producer's own failures while stopping start no renewal
            self._renewal = None

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
