"""Consumer lag as a Prometheus gauge: how far each consumer group is behind, per partition.

`msgstatus_consumer_lag{group,topic,partition}` = log end offset minus the group's
committed offset (a partition the group never committed counts from the log start, as
the group will read it from there: `auto_offset_reset=earliest`). Labels are bounded:
group and topic names are fixed per deployment, partitions by MSGSTATUS_PARTITIONS.

`run()` refreshes it every `interval` seconds from the broker alone (committed offsets
via the admin API, end offsets via a group-less consumer), so it shows the lag of
whatever group it is told about, also while that group's members are stuck or gone.
Every worker exports the same numbers; dashboards take `max by (group, topic, partition)`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import Gauge

from processors import providers
from processors.config import Settings
from processors.kafka import client as kafka_client
from processors.kafka import offsets
from processors.kafka.topics import CANONICAL, CONVERSATIONS, STATUS, TRANSITIONS, raw_topic

log = logging.getLogger(__name__)

CONSUMER_LAG = Gauge(
    "msgstatus_consumer_lag",
    "Records in the log not yet committed by the consumer group",
    ["group", "topic", "partition"],
)

WARN_EVERY = 60.0


@dataclass(frozen=True, slots=True)
class Group:
    """A consumer group and the topics it reads."""

    group_id: str
    topics: tuple[str, ...]


def worker_groups(settings: Settings) -> list[Group]:
    """The worker's groups: the Faust app (its agents' input topics), the normalize stage
    (every raw topic) and the read-model projector (message.status, status.transitions)."""
    app_id = f"{settings.topic_prefix}{settings.app_id}"
    agents = tuple(settings.topic(t) for t in (CANONICAL, TRANSITIONS, CONVERSATIONS))
    raw = tuple(raw_topic(settings, name) for name in providers.REGISTRY)
    projected = tuple(settings.topic(t) for t in (STATUS, TRANSITIONS))
    return [
        Group(app_id, agents),
        Group(f"{app_id}-normalize", raw),
        Group(f"{app_id}-readmodel", projected),
    ]


def lag(
    ends: Mapping[TopicPartition, int],
    starts: Mapping[TopicPartition, int],
    committed: Mapping[TopicPartition, int],
) -> dict[TopicPartition, int]:
    """Per partition: end - committed, or end - start where nothing is committed (never
    below 0: a committed offset can pass a just-fetched end)."""
    out = {}
    for tp, end in ends.items():
        done = committed.get(tp)
        if done is None or done < 0:
            done = starts.get(tp, 0)
        out[tp] = max(0, end - done)
    return out


class LagExporter:
    """Keeps one admin client and one group-less consumer open between refreshes."""

    def __init__(self, settings: Settings, groups: Sequence[Group]) -> None:
        self.settings = settings
        self.groups = list(groups)
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._exported: set[tuple[str, str, str]] = set()

    async def _clients(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None or self._consumer is None:
            admin = AIOKafkaAdminClient(**kafka_client.client_kwargs(self.settings))
            consumer = AIOKafkaConsumer(
                **kafka_client.client_kwargs(self.settings), enable_auto_commit=False
            )
            try:
                await admin.start()
                await consumer.start()
            except BaseException:
                await admin.close()
                await consumer.stop()
                raise
            self._admin, self._consumer = admin, consumer
        return self._admin, self._consumer

    async def close(self) -> None:
        admin, consumer, self._admin, self._consumer = self._admin, self._consumer, None, None
        if consumer is not None:
            await consumer.stop()
        if admin is not None:
            await admin.close()

    async def refresh(self) -> dict[tuple[str, str, int], int]:
        """Read every group's lag once and set the gauge; returns what was set."""
        admin, consumer = await self._clients()
        found: dict[tuple[str, str, int], int] = {}
        for group in self.groups:
            tps = await offsets.partitions(consumer, group.topics, required=False)
            if not tps:
                continue
            committed = await admin.list_consumer_group_offsets(group.group_id, partitions=tps)
            ends = await consumer.end_offsets(tps)
            starts = await consumer.beginning_offsets(tps)
            done = {tp: meta.offset for tp, meta in committed.items()}
            for tp, value in lag(ends, starts, done).items():
                found[(group.group_id, tp.topic, tp.partition)] = value
        exported = set()
        for (group_id, topic, partition), value in found.items():
            labels = (group_id, topic, str(partition))
            CONSUMER_LAG.labels(*labels).set(value)
            exported.add(labels)
        for gone in self._exported - exported:  # topics deleted, partitions gone
            CONSUMER_LAG.remove(*gone)
        self._exported = exported
        return found

    async def run(self, interval: float) -> None:
        """Refresh forever; a failed round (Kafka down) is logged and retried next round
        with fresh clients, keeping the last values (the dependency metric says why)."""
        warned = 0.0
        try:
            while True:
                try:
                    await self.refresh()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if time.monotonic() - warned > WARN_EVERY:
                        log.warning("consumer lag not refreshed: %r", exc)
                        warned = time.monotonic()
                    await self.close()
                await asyncio.sleep(interval)
        finally:
            await self.close()


async def run(settings: Settings, groups: Sequence[Group], interval: float | None = None) -> None:
    """Export the lag of `groups` every `interval` seconds (MSGSTATUS_CONSUMER_LAG_INTERVAL
    by default) until cancelled.

    In the worker: `await lag.run(settings, lag.worker_groups(settings))` in a task.
    """
    await LagExporter(settings, groups).run(interval or settings.consumer_lag_interval)
