"""The state interface of the worker's agents: one atomic decision per input record.

The pure modules (ordering.py, emission.py, watermarks.py, deadlines.py, retention.py)
decide over a `Scannable` mapping and know nothing of where it lives. A backend gives
each agent a `StateTable` whose `transact` runs such a decision for one input record and
makes all of its writes one atomic unit, or none of them:

- `rocksdb` (rocksdb.py): Faust's RocksDB table with its changelog, written through
  fasttable.py (write-behind: the unit is one changelog record batch);
- `redis` (redis.py): hashes and sorted sets in Redis, the unit applied by one Lua
  compare-and-apply script under a per-partition fencing token.

The decision may run more than once (the Redis backend re-runs it after it fetched what
the first run could not read, or after a conflict): it must be a function of the mapping
and the record only (docs/architecture.md, "Crash consistency", rule 1).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from processors.stream.fasttable import Scannable
from processors.stream.fence import Lease, Ownership, Token
from processors.stream.writers import PartitionWriters

T = TypeVar("T")
Decide = Callable[[Scannable], T]


class Undecidable(Exception):
    """The decision raised (a record no rule can take, or a unit too large): nothing was
    written; the agent makes the record a dead letter. The cause is `__cause__`."""


@dataclass(slots=True)
class Wiring:
    """What a backend may use of the worker it serves."""

    app: Any  # the faust.App (the RocksDB backend declares its tables there)
    partitions: int
    writers: PartitionWriters
    ownership: Ownership
    lease: Lease


class StateTable(ABC):
    """One agent's table, partitioned like its input topic."""

    name: str

    @abstractmethod
    async def transact(
        self, token: Token, partition: int, decide: Decide[T], marker: bool = False
    ) -> T:
        """Run `decide` over the partition's state and apply its writes atomically.

        Returns what `decide` returned, once the writes are applied (Redis) or queued as
        one unit (RocksDB, write-behind). Raises `Undecidable` when `decide` raised, and
        `processors.stream.fence.Fenced` when the partition was revoked meanwhile (then
        nothing of the record may be published)."""

    def assigned(self, partitions: set[int], generation: int) -> None:
        """These partitions were (re)assigned in consumer-group `generation`."""
        return None

    @abstractmethod
    def forget(self, partitions: set[int]) -> None:
        """These partitions were revoked: drop what is kept of them in memory."""

    @abstractmethod
    async def size(self, partitions: set[int]) -> int | None:
        """Keys held for these partitions (estimated; for `msgstatus_state_keys`), None
        when it cannot be told now."""


class StateBackend(ABC):
    name: str
    faust_store: str  # Faust's `store` URL for the app (its tables, if any)

    @abstractmethod
    def table(self, name: str, wiring: Wiring) -> StateTable:
        """Declare the table `name` (ordering, emitter, conversations)."""

    async def ping(self) -> bool | None:
        """Is the backend's own server reachable? None: it has none (embedded)."""
        return None

    async def close(self) -> None:
        """Release connections."""
        return None
