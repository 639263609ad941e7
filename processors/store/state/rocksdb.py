"""The default backend: Faust's RocksDB tables, changelog-backed, written write-behind.

Each agent's table is a Faust table of raw bytes (its store, its compacted changelog
topic, its recovery and restore.py's bulk copy stay Faust's); one record's writes go
through fasttable.py as one changelog record batch (docs/architecture.md, "The fast
table path" and "Crash consistency").
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

from processors.store.state.base import Decide, StateBackend, StateTable, T, Undecidable, Wiring
from processors.stream.fasttable import FastTable
from processors.stream.fence import Token


class RawTable(MutableMapping[str, bytes]):
    """A Faust table of raw bytes keys and values, addressed with str keys.

    `key_type=bytes` is what makes Faust use the raw codec end to end (store, changelog
    and recovery); this adapter keeps the `.encode()` out of the pure logic.
    """

    def __init__(self, table: Any) -> None:
        self.table = table

    def __getitem__(self, key: str) -> bytes:
        return self.table[key.encode()]

    def get(self, key: str, default: Any = None) -> Any:
        return self.table.get(key.encode(), default)

    def __setitem__(self, key: str, value: bytes) -> None:
        self.table[key.encode()] = value

    def __delitem__(self, key: str) -> None:
        del self.table[key.encode()]

    def __iter__(self) -> Iterator[str]:  # walks every key: for tools, never hot paths
        return (k.decode() for k in self.table)

    def __len__(self) -> int:
        return len(self.table)


def raw_table(app: Any, name: str, partitions: int) -> RawTable:
    return RawTable(app.Table(name, key_type=bytes, value_type=bytes, partitions=partitions))


class RocksDBTable(StateTable):
    def __init__(self, name: str, wiring: Wiring) -> None:
        self.name = name
        self.raw = raw_table(wiring.app, name, wiring.partitions)
        self.fast = FastTable(self.raw.table, wiring.writers, wiring.ownership, name)

    async def transact(
        self, token: Token, partition: int, decide: Decide[T], marker: bool = False
    ) -> T:
        batch = self.fast.begin(partition)
        try:
            result = decide(batch)
            self.fast.check(batch)
        except Exception as exc:
            raise Undecidable(str(exc)) from exc
        # A revoked token writes nothing here; its outputs are dropped the same way.
        await self.fast.write(token, partition, batch, marker)
        return result

    def forget(self, partitions: set[int]) -> None:
        self.fast.forget(partitions)

    async def size(self, partitions: set[int]) -> int | None:
        total = 0
        for partition in partitions:
            try:
                db = self.fast.table.data._db_for_partition(partition)
                total += int(db.property_int_value("rocksdb.estimate-num-keys") or 0)
            except Exception:  # a partition mid-revoke: next time
                continue
        return total


class RocksDBBackend(StateBackend):
    name = "rocksdb"
    faust_store = "rocksdb://"

    def table(self, name: str, wiring: Wiring) -> StateTable:
        return RocksDBTable(name, wiring)
