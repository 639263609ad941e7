"""Bulk restore of RocksDB tables from their changelogs, before Faust's own recovery.

Faust restores a table by turning every changelog record into a Faust Event and
buffering it through the stream machinery: ~8k records/s here, 260 s for the state of
1M messages (docs/benchmarks.md). The RocksDB store itself only ever copies the
record's key and value bytes (`Store.apply_changelog_batch`), so this module does the
same with a plain aiokafka consumer and one RocksDB WriteBatch per fetched batch,
which also carries the partition's persisted offset: a restore that is interrupted
(rebalance, crash, timeout) leaves the store consistent and the next one resumes there.

It runs inside Faust's recovery, after the highwaters of the newly assigned active
partitions are known and before Faust decides what remains to read, and moves Faust's
start offsets forward; whatever is left (nothing, normally) Faust reads as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.stores.rocksdb import Store as RocksDBStore
from faust.tables.recovery import Recovery
from faust.types import TP
from rocksdict import WriteBatch

from processors.kafka import client as kafka_client
from processors.stream import metrics

log = logging.getLogger(__name__)

FETCH_RECORDS = 50_000


@dataclass
class Job:
    """One changelog partition to copy: records (start, last] into `store`."""

    tp: TP
    store: Any  # faust.stores.rocksdb.Store
    start: int  # last offset already in the store (-1: none)
    last: int  # last offset to copy (Faust's highwater - 1)


def plan(
    tps: Iterable[TP],
    offsets: Mapping[TP, int | None],
    highwaters: Mapping[TP, int | None],
    stores: Mapping[str, Any],
) -> list[Job]:
    """Which partitions need copying: RocksDB-backed, and behind their changelog's end."""
    jobs = []
    for tp in tps:
        store = stores.get(tp.topic)
        last = highwaters.get(tp)
        start = offsets.get(tp)
        if not isinstance(store, RocksDBStore) or last is None or last < 0:
            continue
        start = -1 if start is None else start
        if start < last:
            jobs.append(Job(tp, store, start, last))
    return jobs


def apply(store: Any, partition: int, records: list[Any], last: int) -> int | None:
    """Write the records up to offset `last` and the new persisted offset atomically.

    Returns the highest offset written, or None if no record qualified.
    """
    batch = WriteBatch(raw_mode=True)
    top = None
    for record in records:
        if record.offset > last:
            break
        if record.value is None:
            batch.delete(record.key)
        else:
            batch.put(record.key, record.value)
        top = record.offset
    if top is None:
        return None
    batch.put(store.offset_key, str(top).encode())
    store._db_for_partition(partition).write(batch)
    return top


async def copy(
    client: Mapping[str, Any], jobs: list[Job], progress: dict[TP, int]
) -> dict[TP, int]:
    """Copy every job's records; `progress[tp]` follows the last offset written.

    Returns how many records were written per partition.
    """
    copied: dict[TP, int] = {}
    if not jobs:
        return copied
    by_tp = {TopicPartition(j.tp.topic, j.tp.partition): j for j in jobs}
    consumer = AIOKafkaConsumer(
        **client,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=16 << 20,
        fetch_max_bytes=64 << 20,
        check_crcs=False,
    )
    await consumer.start()
    try:
        consumer.assign(list(by_tp))
        for tp, job in by_tp.items():
            consumer.seek(tp, job.start + 1)
        remaining = set(by_tp)
        while remaining:
            fetched = await consumer.getmany(*remaining, timeout_ms=1000, max_records=FETCH_RECORDS)
            for tp, records in fetched.items():
                job = by_tp[tp]
                top = apply(job.store, tp.partition, records, job.last)
                if top is not None:
                    progress[job.tp] = top
                    done = sum(1 for r in records if r.offset <= top)
                    copied[job.tp] = copied.get(job.tp, 0) + done
                    metrics.RESTORED.labels(_table_name(job.tp.topic)).inc(done)
            for tp in list(remaining):
                # Compaction leaves gaps: done is where the next fetch would start.
                if await consumer.position(tp) > by_tp[tp].last:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return copied


def _table_name(changelog_topic: str) -> str:
    """`<prefix><app>-<table>-changelog` -> `<table>` (a bounded label)."""
    return changelog_topic.removesuffix("-changelog").rsplit("-", 1)[-1]


_original_build_offsets = Recovery._build_offsets


async def _build_offsets(
    self: Recovery, consumer: Any, tps: Any, destination: Any, title: str
) -> None:
    await _original_build_offsets(self, consumer, tps, destination, title)
    if title != "active" or not tps:
        return
    stores = {topic: table.data for topic, table in self.tables._changelogs.items()}
    jobs = plan(tps, destination, self.active_highwaters, stores)
    if not jobs:
        return
    started = time.monotonic()
    client = kafka_client.from_faust_app(self.app)
    # Progress lands in `destination` as it is made: if Faust's recovery times this
    # step out or restarts it, what was copied is kept and Faust reads only the rest.
    copied: dict[TP, int] = {}
    try:
        copied = await copy(client, jobs, destination)
    except Exception as exc:  # Faust's own (slower) path still restores what is left
        log.warning("bulk restore stopped (%r); Faust's recovery reads the rest", exc)
    log.info(
        "bulk-restored %d changelog records into %d partitions in %.1f s",
        sum(copied.values()),
        len(jobs),
        time.monotonic() - started,
    )


def install() -> None:
    """Route Faust's active recovery through the bulk copy (idempotent)."""
    Recovery._build_offsets = _build_offsets  # type: ignore[method-assign]
