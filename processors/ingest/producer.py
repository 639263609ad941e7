"""Durable writes to Kafka for the gateway and pollers.

acks=all with an idempotent producer and a bounded wait: an answer of 200 to a
provider means the record is in Kafka; anything else becomes a 503 the provider retries.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from processors.config import Settings
from processors.ingest.raw import RawRecord

log = logging.getLogger(__name__)


class KafkaUnavailable(Exception):
    """Kafka did not acknowledge in time; the caller answers 503 with Retry-After."""


class RawSink(Protocol):
    async def publish(self, record: RawRecord) -> None: ...

    async def ready(self) -> bool: ...


class KafkaRawSink:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._timeout = settings.produce_timeout
        self._producer = self._new_producer()
        self._started = False

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self._settings.kafka_bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=1,
            request_timeout_ms=int(max(self._timeout, 1.0) * 1000),
            max_batch_size=256 * 1024,
        )

    async def start(self) -> None:
        await self._producer.start()
        self._started = True

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
        if self._started:
            await self._producer.stop()

    async def publish(self, record: RawRecord) -> None:
        if not self._started:
            raise KafkaUnavailable("not connected to Kafka yet")
        try:
            future = await asyncio.wait_for(
                self._producer.send(
                    record.topic, record.value, key=record.key, headers=record.headers
                ),
                self._timeout,
            )
            await asyncio.wait_for(asyncio.shield(future), self._timeout)
        except (TimeoutError, KafkaError) as exc:
            raise KafkaUnavailable(f"Kafka did not acknowledge: {type(exc).__name__}") from exc

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
