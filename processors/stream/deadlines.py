"""Pending `sent` deadlines kept in the emitter's table, found without scanning.

Deadlines are grouped in one-second buckets. A bucket is a counter plus numbered slots
(`~due:<b>:<i>` -> message key), and `~dueidx` lists the non-empty buckets in order, so
a tick reads only the buckets that are due and the messages in them: its cost follows
the number of due deadlines, not the number of messages in the table. Entries are never
removed when a message moves on; the tick checks the message's state instead.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, MutableMapping

import orjson

BUCKET_SECONDS = 1.0
INDEX_KEY = "~dueidx"
PENDING_KEY = "~pending"


def bucket_of(deadline: float) -> int:
    return int(deadline // BUCKET_SECONDS)


def _count_key(bucket: int) -> str:
    return f"~duen:{bucket}"


def _slot_key(bucket: int, slot: int) -> str:
    return f"~due:{bucket}:{slot}"


def _index(table: MutableMapping[str, bytes]) -> list[int]:
    raw = table.get(INDEX_KEY)
    return orjson.loads(raw) if raw else []


def add(table: MutableMapping[str, bytes], deadline: float, message_key: str) -> None:
    bucket = bucket_of(deadline)
    raw_count = table.get(_count_key(bucket))
    count = int(raw_count) if raw_count else 0
    table[_slot_key(bucket, count)] = message_key.encode()
    table[_count_key(bucket)] = str(count + 1).encode()
    if count == 0:
        index = _index(table)
        position = bisect.bisect_left(index, bucket)
        if position == len(index) or index[position] != bucket:
            index.insert(position, bucket)
            table[INDEX_KEY] = orjson.dumps(index)


def pop_due(table: MutableMapping[str, bytes], now: float) -> Iterator[str]:
    """Yield the keys in every bucket that ended at or before `now`, then forget them."""
    index = _index(table)
    done = 0
    for bucket in index:
        if (bucket + 1) * BUCKET_SECONDS > now:
            break
        raw_count = table.get(_count_key(bucket))
        for slot in range(int(raw_count) if raw_count else 0):
            slot_key = _slot_key(bucket, slot)
            raw = table.get(slot_key)
            if raw is not None:
                yield raw.decode()
                del table[slot_key]
        if raw_count is not None:
            del table[_count_key(bucket)]
        done += 1
    if done:
        table[INDEX_KEY] = orjson.dumps(index[done:])


def pending(table: MutableMapping[str, bytes]) -> int:
    raw = table.get(PENDING_KEY)
    return int(raw) if raw else 0


def add_pending(table: MutableMapping[str, bytes], delta: int) -> int:
    value = max(0, pending(table) + delta)
    table[PENDING_KEY] = str(value).encode()
    return value
