"""One batch of reads and writes per Kafka record on a Faust RocksDB table.

Faust's per-key path (`table[key] = value`) builds a FutureMessage, runs sensors and
serializers and queues one changelog send per write: most of a naive agent's time
(DESIGN.md section 9). The table stays Faust's (its RocksDB store, its changelog
topic, its recovery and standby logic); only the write path is ours: reads go straight
to the partition's RocksDB, writes of one input record are buffered, then written with
one RocksDB WriteBatch and sent to the changelog partition through Faust's own producer,
so Faust's commit, which flushes that producer (and, in the worker, the partition
writers before it) before committing offsets, still guarantees that state reached the
changelog before the input is acknowledged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

from faust.types import TP
from rocksdict import WriteBatch

from processors.stream.writers import PartitionWriters

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
    def __init__(
        self,
        table: Any,
        writers: PartitionWriters,
        on_sent: Callable[[Any], None] | None = None,
    ) -> None:
        self.table = table
        self.writers = writers  # hands changelog records to Faust's producer, in order
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
        topic = self.table.changelog_topic.get_topic_name()
        tp = TP(topic, partition)
        on_sent = self.on_sent

        def on_batch(fut: Any, count: int) -> None:
            if on_sent is not None:
                fut.add_done_callback(on_sent)
            fut.add_done_callback(lambda f: _persist(store, tp, f, count))

        await self.writers.append(topic, partition, records, on_batch)


def _persist(store: Any, tp: TP, fut: Any, count: int) -> None:
    """What Faust does per changelog send: remember how far the local DB is complete."""
    if not fut.cancelled() and fut.exception() is None:
        store.set_persisted_offset(tp, fut.result().offset + count - 1)
