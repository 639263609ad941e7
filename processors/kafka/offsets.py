"""Offsets and fixed ranges of topics: what the operator commands, the rebuild, the
benchmarks and the integration tests read.

`read_range` and `copy` are how replay and redrive re-feed records: a copy keeps key,
value and headers (the raw envelope: provider, URL, signature headers and the original
receive time), so the stream treats it exactly like the original; every stage is
idempotent, so a copy of something already processed emits nothing.

The one-shot readers (`ends`, `committed`, `span`, `wait_consumed`) open their own
clients; `where` is the Settings to connect with, or a bootstrap address of a local
plaintext broker (the benchmarks' and the tests' own).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from processors.config import Settings, single_broker
from processors.kafka import client

Where = Settings | str


class MissingTopic(LookupError):
    """A topic the caller needs does not exist (its message names it)."""


class Process(Protocol):
    """What `wait_consumed` watches while it waits (a subprocess.Popen)."""

    returncode: int | None

    def poll(self) -> int | None: ...


def client_kwargs(where: Where) -> dict[str, Any]:
    """aiokafka arguments for `where`, built like every client's (client.py)."""
    settings = where if isinstance(where, Settings) else single_broker(kafka_bootstrap=where)
    return client.client_kwargs(settings)


# --- with a consumer the caller holds ---------------------------------------------------


async def partitions(
    consumer: AIOKafkaConsumer, topics: Iterable[str], required: bool = True
) -> list[TopicPartition]:
    """Every partition of the topics, from fresh metadata; MissingTopic names a topic that
    does not exist (left out instead when not `required`)."""
    await consumer._client.force_metadata_update()
    out = []
    for topic in topics:
        parts = consumer.partitions_for_topic(topic)
        if not parts and required:
            raise MissingTopic(f"topic {topic!r} does not exist")
        out += [TopicPartition(topic, p) for p in sorted(parts or ())]
    return out


async def read_range(
    consumer: AIOKafkaConsumer,
    starts: Mapping[TopicPartition, int],
    ends: Mapping[TopicPartition, int],
) -> AsyncIterator[Any]:
    """Records with start <= offset < end per partition (ends fixed by the caller, so
    copies appended meanwhile are not read again)."""
    todo = {tp: (start, ends[tp]) for tp, start in starts.items() if start < ends[tp]}
    if not todo:
        return
    consumer.assign(list(todo))
    for tp, (start, _) in todo.items():
        consumer.seek(tp, start)
    while todo:
        batch = await consumer.getmany(*todo, timeout_ms=1000, max_records=5000)
        for tp, records in batch.items():
            end = todo[tp][1]
            for record in records:
                if record.offset < end:
                    yield record
        for tp in list(todo):
            if await consumer.position(tp) >= todo[tp][1]:
                del todo[tp]


async def copy(producer: AIOKafkaProducer, record: Any) -> Any:
    """Queue a copy of `record` on its own topic; returns the send future."""
    return await producer.send(
        record.topic, record.value, key=record.key, headers=list(record.headers or ())
    )


# --- one-shot readers --------------------------------------------------------------------


async def ends(where: Where, topics: list[str]) -> dict[TopicPartition, int]:
    """End offset of every partition of the topics (a missing topic has none)."""
    consumer = AIOKafkaConsumer(**client_kwargs(where))
    await consumer.start()
    try:
        return await consumer.end_offsets(await partitions(consumer, topics, required=False))
    finally:
        await consumer.stop()


async def committed(where: Where, group: str) -> dict[TopicPartition, int]:
    """A group's committed offsets; {} while its coordinator is not ready (a fresh broker
    creates `__consumer_offsets` on first use and answers "not available" meanwhile)."""
    admin = AIOKafkaAdminClient(**client_kwargs(where))
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    except KafkaError as exc:
        if not exc.retriable:
            raise
        return {}
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in offsets.items()}


async def span(where: Where, topic: str) -> tuple[int, float, float]:
    """Count and first/last CreateTime (s) of a topic's records, every partition read to
    its end (a first version stopped after a fraction of a multi-partition topic)."""
    found = await ends(where, [topic])
    total = sum(found.values())
    # "earliest" from the start: with the default "latest", the reset aiokafka starts at
    # assign() can race seek_to_beginning() and leave the position at the end
    consumer = AIOKafkaConsumer(
        **client_kwargs(where), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    first, last = float("inf"), 0.0
    try:
        consumer.assign(list(found))
        await consumer.seek_to_beginning()
        seen = 0
        while seen < total:
            batch = await consumer.getmany(timeout_ms=2000, max_records=50_000)
            if not batch:
                break
            for records in batch.values():
                for record in records:
                    first = min(first, record.timestamp / 1000)
                    last = max(last, record.timestamp / 1000)
                seen += len(records)
    finally:
        await consumer.stop()
    return total, first, last


async def wait_consumed(
    where: Where,
    group: str,
    topics: list[str],
    timeout: float,
    proc: Process | None = None,
    logfile: Path | None = None,
) -> None:
    """Return once `group` has committed everything the topics hold now; TimeoutError
    after `timeout` s, RuntimeError (with the log's tail) when `proc` exits first."""
    target = {tp: end for tp, end in (await ends(where, topics)).items() if end > 0}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = logfile.read_text(errors="replace")[-3000:] if logfile else ""
            raise RuntimeError(
                f"process exited with {proc.returncode} before consuming everything:\n{tail}"
            )
        done = await committed(where, group)
        if all(done.get(tp, -1) >= end for tp, end in target.items()):
            return
        await asyncio.sleep(1.0)
    raise TimeoutError(f"group {group} did not consume {topics} within {timeout}s")
