"""One batch of reads and writes per Kafka record on a Faust RocksDB table.

Faust's per-key path (`table[key] = value`) builds a FutureMessage, runs sensors and
serializers and queues one changelog send per write: most of a naive agent's time
(DESIGN.md section 9). The table stays Faust's (its RocksDB store, its changelog
topic, its recovery and standby logic); only the write path is ours: reads go straight
to the partition's RocksDB, writes of one input record are buffered, then written with
one RocksDB WriteBatch and sent to the changelog partition through Faust's own producer,
so Faust's commit, which flushes that producer before committing offsets, still
guarantees that state reached the changelog before the input is acknowledged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

from faust.types import TP
from rocksdict import WriteBatch

_DELETED = object()


class PartitionBatch(MutableMapping[str, bytes]):
    """The mapping the pure logic sees while one record of partition `p` is processed."""

    def __init__(self, db: Any) -> None:
        self._db = db
        self.pending: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        value = self.pending.get(key)
        if value is None:
            value = self._db.get(key.encode())
            return default if value is None else value
        return default if value is _DELETED else value

    def __getitem__(self, key: str) -> bytes:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: bytes) -> None:
        self.pending[key] = value

    def __delitem__(self, key: str) -> None:
        self.pending[key] = _DELETED

    def __iter__(self) -> Iterator[str]:  # pragma: no cover - not used on hot paths
        raise TypeError("a partition batch cannot be iterated")

    def __len__(self) -> int:  # pragma: no cover
        raise TypeError("a partition batch has no length")


class FastTable:
    def __init__(self, app: Any, table: Any, on_sent: Callable[[Any], None] | None = None) -> None:
        self.app = app
        self.table = table
        self.on_sent = on_sent  # checks every changelog send (a flush does not)

    def begin(self, partition: int) -> PartitionBatch:
        return PartitionBatch(self.table.data._db_for_partition(partition))

    async def write(self, partition: int, batch: PartitionBatch) -> None:
        if not batch.pending:
            return
        store = self.table.data
        db = store._db_for_partition(partition)
        rocks = WriteBatch(raw_mode=True)
        records: list[tuple[bytes, bytes | None]] = []
        for key, value in batch.pending.items():
            raw_key = key.encode()
            if value is _DELETED:
                rocks.delete(raw_key)
                records.append((raw_key, None))
            else:
                rocks.put(raw_key, value)
                records.append((raw_key, value))
        db.write(rocks)
        batch.pending.clear()
        producer = self.app.producer._ensure_producer()
        topic = self.table.changelog_topic.get_topic_name()
        futures = await send_many(producer, topic, partition, records)
        tp = TP(topic, partition)
        for fut, count in futures:
            if self.on_sent:
                fut.add_done_callback(self.on_sent)
            fut.add_done_callback(lambda f, n=count: _persist(store, tp, f, n))


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


def _persist(store: Any, tp: TP, fut: Any, count: int) -> None:
    """What Faust does per changelog send: remember how far the local DB is complete."""
    if not fut.cancelled() and fut.exception() is None:
        store.set_persisted_offset(tp, fut.result().offset + count - 1)
