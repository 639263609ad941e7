"""One atomic unit of reads and writes per Kafka record on a Faust RocksDB table.

Faust's per-key path (`table[key] = value`) builds a FutureMessage, runs sensors and
serializers and queues one changelog send per write: most of a naive agent's time
(DESIGN.md section 9). The table stays Faust's (its RocksDB store, its changelog topic,
its recovery); only the write path is ours, and it keeps one invariant
(docs/architecture.md, "Crash consistency"):

    the local RocksDB never holds a write the changelog does not have.

So writes are *write-behind*: the writes of one input record become one unit, kept in
an in-memory overlay (which later reads see) and sent to the changelog as one atomic
record batch (writers.py). Only when the broker has acknowledged that batch are the
unit's writes put into RocksDB, in one WriteBatch together with the changelog offset
they reach (Faust's persisted offset). After any crash the local store is therefore an
exact prefix of the changelog, and Faust's recovery (reading from the persisted offset)
brings it to the changelog's end: what a restore gives is what was written, whole
records only, on this disk or any other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

from faust.types import TP
from rocksdict import WriteBatch

from processors.kafka.writer import MAX_UNIT_BYTES, RECORD_OVERHEAD, Unit
from processors.stream import faults
from processors.stream.fence import Ownership, Token
from processors.stream.writers import PartitionWriters

_DELETED = object()


class UnitTooLarge(ValueError):
    """One record's table writes cannot go into one record batch (never expected: input
    records are bounded in bytes; the record becomes a dead letter instead of a stop)."""


INDEX_PREFIX = "~"  # keys of secondary indexes, the only ones ever range-scanned


class Scannable(MutableMapping[str, bytes]):
    """What the pure logic needs beyond a mapping: an ordered scan of index keys."""

    def scan(self, start: str, stop: str, limit: int) -> list[tuple[str, bytes]]:
        raise NotImplementedError


class ScanDict(dict, Scannable):  # type: ignore[misc]
    """A dict with `scan`: the table of unit tests and tools."""

    def scan(self, start: str, stop: str, limit: int) -> list[tuple[str, bytes]]:
        found = sorted((k, v) for k, v in self.items() if start <= k < stop)
        return found[:limit]


class PartitionBatch(Scannable):
    """The mapping the pure logic sees while one record of partition `p` is processed:
    this record's own writes, then the overlay of unacknowledged units, then RocksDB."""

    def __init__(self, db: Any, overlay: dict[str, tuple[Any, int]]) -> None:
        self._db = db
        self._overlay = overlay
        self.pending: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        value = self.pending.get(key)
        if value is None:
            entry = self._overlay.get(key)
            if entry is None:
                value = self._db.get(key.encode())
                return default if value is None else value
            value = entry[0]
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

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def pop(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        value = self.get(key, default)
        self.pending[key] = _DELETED
        return value

    def scan(self, start: str, stop: str, limit: int) -> list[tuple[str, bytes]]:
        """Index keys in [start, stop), in order, at most `limit` (all three layers)."""
        if not start.startswith(INDEX_PREFIX):
            raise ValueError("only index keys (starting with '~') are scanned")
        found: dict[str, Any] = {}
        extra = sum(1 for k in self._overlay if start <= k < stop)
        extra += sum(1 for k in self.pending if start <= k < stop)
        it = self._db.iter()
        it.seek(start.encode())
        stop_b = stop.encode()
        while it.valid() and len(found) < limit + extra:
            key = it.key()
            if key >= stop_b:
                break
            found[key.decode()] = it.value()
            it.next()
        for layer in (self._overlay, self.pending):
            for key, value in layer.items():
                if start <= key < stop:
                    found[key] = value[0] if layer is self._overlay else value
        return sorted((k, v) for k, v in found.items() if v is not _DELETED)[:limit]

    def __iter__(self) -> Iterator[str]:  # pragma: no cover - not used on hot paths
        raise TypeError("a partition batch cannot be iterated")

    def __len__(self) -> int:  # pragma: no cover
        raise TypeError("a partition batch has no length")


class FastTable:
    def __init__(
        self, table: Any, writers: PartitionWriters, ownership: Ownership, name: str = ""
    ) -> None:
        self.table = table  # the Faust Table (store, changelog topic, recovery)
        self.name = name
        self.writers = writers
        self.ownership = ownership
        # partition -> key -> (value or _DELETED, seq of the unit that wrote it)
        self._overlay: dict[int, dict[str, tuple[Any, int]]] = {}
        self._seq = 0

    def begin(self, partition: int) -> PartitionBatch:
        store = self.table.data
        return PartitionBatch(
            store._db_for_partition(partition), self._overlay.setdefault(partition, {})
        )

    @staticmethod
    def check(batch: PartitionBatch) -> None:
        """Raise UnitTooLarge before anything is written if the unit cannot be atomic."""
        size = sum(
            len(k) + (0 if v is _DELETED else len(v)) + RECORD_OVERHEAD
            for k, v in batch.pending.items()
        )
        if size > MAX_UNIT_BYTES:
            raise UnitTooLarge(f"{len(batch.pending)} table writes of {size} bytes in one record")

    async def write(
        self, token: Token | None, partition: int, batch: PartitionBatch, marker: bool = False
    ) -> None:
        """Make the record's writes one unit: visible to later reads now, in the changelog
        as one batch, in RocksDB once the changelog has them."""
        if not batch.pending or not self.ownership.live(token):
            return
        self._seq += 1
        seq = self._seq
        overlay = self._overlay.setdefault(partition, {})
        records: list[tuple[bytes, bytes | None]] = []
        for key, value in batch.pending.items():
            overlay[key] = (value, seq)
            records.append((key.encode(), None if value is _DELETED else value))
        batch.pending = {}
        topic = self.table.changelog_topic.get_topic_name()
        label = f"{self.name}-marker" if marker else self.name
        unit = Unit(
            records, token, self._on_acked(partition, token, seq, records, label), label=label
        )
        await self.writers.append(topic, partition, unit)

    def _on_acked(
        self,
        partition: int,
        token: Token | None,
        seq: int,
        records: list[tuple[bytes, bytes | None]],
        label: str,
    ) -> Callable[[int], None]:
        def apply(offset: int) -> None:
            faults.point("changelog-acked", label)
            if not self.ownership.live(token):
                return  # revoked meanwhile: its next owner restores it from the changelog
            store = self.table.data
            rocks = WriteBatch(raw_mode=True)
            for key, value in records:
                if value is None:
                    rocks.delete(key)
                else:
                    rocks.put(key, value)
            rocks.put(store.offset_key, str(offset).encode())
            store._db_for_partition(partition).write(rocks)
            overlay = self._overlay.get(partition)
            if overlay is not None:
                for key, _ in records:
                    name = key.decode()
                    entry = overlay.get(name)
                    if entry is not None and entry[1] == seq:
                        del overlay[name]

        return apply

    def forget(self, partitions: set[int]) -> None:
        """Drop the overlays of revoked partitions (their units are flushed or fenced)."""
        for partition in partitions:
            self._overlay.pop(partition, None)

    def pending_units(self, partition: int) -> int:
        return len(self._overlay.get(partition, {}))


def changelog_tp(table: Any, partition: int) -> TP:
    return TP(table.changelog_topic.get_topic_name(), partition)
