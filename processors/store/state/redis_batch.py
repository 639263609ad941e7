"""The mapping one decision of the Redis backend runs over, and what it remembers.

A decision reads keys and index ranges and writes keys. Over Redis, reads cannot block
(the pure logic is synchronous), so this mapping answers from what the worker already
knows of the partition (`Cache`: values with the version they had) and, for what it does
not know, *guesses*: a key is absent, an index range is empty. It records every read
with the version it saw (0: absent) and every scan with the members it saw. The apply
script (redis_scripts.py) applies the writes only if every one of those reads still
holds; otherwise it answers with the true values, which go into the cache, and the
decision runs again. A guess is right for every new message (most keys of a record),
so a record usually costs one script call; a known message is served from the cache.

Index keys (`~d:`, `~x:`, `~y:`, deadlines.py) are members of the partition's sorted
set, never values: they are written (`b""`) and removed blind, and read only through
`scan`. The pure modules only ever drop them with `pop(key, None)` and ignore the
result; reading one with `get` is refused so that no decision can come to depend on an
unvalidated read.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from processors.kafka.writer import MAX_UNIT_BYTES, RECORD_OVERHEAD
from processors.stream.deadlines import DEADLINE, EXPIRY, MARKER_EXPIRY
from processors.stream.fasttable import Scannable, UnitTooLarge

INDEX_PREFIXES = (DEADLINE, EXPIRY, MARKER_EXPIRY)
ABSENT = 0  # the version of a key that does not exist (stored versions start at 1)


class _Deleted:
    __slots__ = ()

    def __repr__(self) -> str:
        return "DELETED"


DELETED: Any = _Deleted()

Entry = tuple[bytes | None, int]  # (value or None when absent, version)


def is_index(key: str) -> bool:
    return key.startswith(INDEX_PREFIXES)


class Cache:
    """What this worker knows of its partitions' keys, least recently used dropped first.

    Bounded in bytes (keys plus values) per table. An entry can be out of date only if
    someone else wrote the key; the apply script then refuses and says the truth."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._entries: OrderedDict[tuple[int, str], Entry] = OrderedDict()
        self._bytes = 0

    def get(self, partition: int, key: str) -> Entry | None:
        name = (partition, key)
        entry = self._entries.get(name)
        if entry is not None:
            self._entries.move_to_end(name)
        return entry

    def put(self, partition: int, key: str, value: bytes | None, version: int) -> None:
        name = (partition, key)
        old = self._entries.pop(name, None)
        if old is not None:
            self._bytes -= _cost(key, old[0])
        self._entries[name] = (value, version)
        self._bytes += _cost(key, value)
        while self._bytes > self.budget and self._entries:
            (_, old_key), (old_value, _) = self._entries.popitem(last=False)
            self._bytes -= _cost(old_key, old_value)

    def drop(self, partition: int) -> None:
        for name in [n for n in self._entries if n[0] == partition]:
            self._bytes -= _cost(name[1], self._entries.pop(name)[0])

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes


def _cost(key: str, value: bytes | None) -> int:
    return len(key) + (len(value) if value else 0) + 64  # + the dict and tuple overhead


@dataclass(slots=True)
class Scan:
    """One index range as read: the first `limit` members of [start, stop)."""

    start: str
    stop: str
    limit: int
    members: list[str]
    known: bool = True  # False: guessed empty

    @property
    def complete(self) -> bool:
        """Every member of the range is in `members`."""
        return len(self.members) < self.limit


@dataclass(slots=True)
class Learnt:
    """What one transaction learnt from the apply script's answers. Kept apart from the
    cache so that a record larger than the cache still makes progress."""

    values: dict[str, Entry] = field(default_factory=dict)
    scans: dict[tuple[str, str], Scan] = field(default_factory=dict)

    def clear(self) -> None:
        self.values.clear()
        self.scans.clear()


class RedisBatch(Scannable):
    """The mapping of one run of one decision over partition `partition`."""

    def __init__(self, cache: Cache, partition: int, learnt: Learnt) -> None:
        self._cache = cache
        self._partition = partition
        self._learnt = learnt
        self.reads: dict[str, int] = {}  # key -> version it had when read
        self.guessed: set[str] = set()  # keys read as absent without knowing it
        self.scans: list[Scan] = []
        self.pending: dict[str, Any] = {}  # key -> bytes or DELETED

    # --- reads ------------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        if is_index(key):
            raise TypeError(f"index key {key!r} is only scanned, never read")
        if key in self.pending:
            value = self.pending[key]
            return default if value is DELETED else value
        entry = self._learnt.values.get(key) or self._cache.get(self._partition, key)
        if entry is None:
            self.guessed.add(key)
            self.reads.setdefault(key, ABSENT)
            return default
        value, version = entry
        self.reads.setdefault(key, version)
        return default if value is None else value

    def __getitem__(self, key: str) -> bytes:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def scan(self, start: str, stop: str, limit: int) -> list[tuple[str, bytes]]:
        """Index keys in [start, stop), in order, at most `limit`, this run's own writes
        included (each with the value b"")."""
        if not is_index(start) or not stop.startswith(start[:3]):
            raise ValueError("only index ranges (~d:, ~x:, ~y:) are scanned")
        mine = {k: v for k, v in self.pending.items() if start <= k < stop}
        need = limit + len(mine)  # our own removals may hide that many stored members
        known = self._learnt.scans.get((start, stop))
        if known is not None and (known.complete or known.limit >= need):
            seen = known
        else:
            seen = Scan(start, stop, need, [], known=False)
        self.scans.append(seen)
        found = {m: b"" for m in seen.members}
        for key, value in mine.items():
            if value is DELETED:
                found.pop(key, None)
            else:
                found[key] = b""
        return sorted(found.items())[:limit]

    @property
    def guessing(self) -> bool:
        return bool(self.guessed) or any(not s.known for s in self.scans)

    # --- writes -----------------------------------------------------------------

    def __setitem__(self, key: str, value: bytes) -> None:
        if not isinstance(value, bytes | bytearray):
            raise TypeError(f"values are bytes, got {type(value).__name__} for {key!r}")
        if is_index(key) and value:
            raise ValueError(f"index key {key!r} holds no value")
        self.pending[key] = bytes(value)

    def __delitem__(self, key: str) -> None:
        self.pending[key] = DELETED

    def pop(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        if is_index(key):  # blind: nothing decides on an index key's value
            self.pending[key] = DELETED
            return default
        value = self.get(key, default)
        self.pending[key] = DELETED
        return value

    def check(self) -> None:
        """Raise UnitTooLarge, as the RocksDB backend does, for a unit over the limit."""
        size = sum(
            len(k) + (0 if v is DELETED else len(v)) + RECORD_OVERHEAD
            for k, v in self.pending.items()
        )
        if size > MAX_UNIT_BYTES:
            raise UnitTooLarge(f"{len(self.pending)} table writes of {size} bytes in one record")

    def __iter__(self) -> Iterator[str]:  # pragma: no cover - not used on hot paths
        raise TypeError("a partition batch cannot be iterated")

    def __len__(self) -> int:  # pragma: no cover
        raise TypeError("a partition batch has no length")
