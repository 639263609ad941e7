"""State retention (MSGSTATUS_STATE_RETENTION): finished messages leave the tables.

A message's state is kept until RETENTION after its last event (receive time). Then the
full state (receipts, output records) is replaced by a *compact marker*: just what the
rules need so that a late event can never produce an event that regresses what
consumers saw (the ordering marker keeps the status, transition index and milestones;
the emitter marker keeps the sequence, the last status told and the message identity).
A late `read` for an expired `delivered` message is still applied and told with the
next sequence number; a late `sent` is still stale. What a marker forgets are the exact
duplicates: a repeated engagement event (`clicked` again) after expiry counts as new.
Markers themselves are removed MARKER_RETENTION after they were made; an event for a
message unknown to the state whose provider time is older than MARKER_RETENTION before
the watermark is ignored (it could only be a relic of a message already forgotten).

Time here is the watermark (markers.py), never the wall clock: expiry is decided by
records of the log, so a restore and a redelivery expire exactly the same messages.
Removal writes changelog tombstones like any other delete.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

import orjson

from processors.stream import deadlines
from processors.stream.deadlines import EXPIRY, MARKER_EXPIRY
from processors.stream.fasttable import Scannable

BUCKET = deadlines.BUCKET_SECONDS[EXPIRY]

MAX_PER_MARKER = 1000  # expiries per marker record: bounds one record's table unit
KEEP = object()  # what `compact` returns for a state that must not expire yet


def touch(
    table: MutableMapping[str, bytes],
    state: dict[str, Any],
    message_key: str,
    last_seen: float,
    retention: float,
) -> None:
    """Move the message's expiry to `last_seen + retention` (O(1): at most one delete and
    one put in the index, none when the bucket is unchanged)."""
    if retention <= 0:
        return
    bucket = deadlines.bucket_of(EXPIRY, last_seen + retention)
    if state.get("x") == bucket:
        return
    deadlines.unfile(table, EXPIRY, state.get("x"), message_key)
    deadlines.file(table, EXPIRY, last_seen + retention, message_key)
    state["x"] = bucket


def expire(
    table: Scannable,
    now: float,
    marker_retention: float,
    compact: Callable[[dict[str, Any]], Any],
    limit: int = MAX_PER_MARKER,
) -> int:
    """Compact (or, if `compact` returns None, delete) states whose expiry passed at `now`,
    then delete compact markers whose own time passed. Returns how many changed."""
    changed = 0
    for bucket, key in deadlines.due(table, EXPIRY, now, limit):
        table.pop(deadlines.index_key(EXPIRY, bucket, key), None)
        raw = table.get(key)
        state = orjson.loads(raw) if raw else None
        if state is None or state.get("x") != bucket:
            continue  # the message moved on: a stale entry
        smaller = compact(state)
        if smaller is KEEP:  # looked at again an hour later
            state["x"] = deadlines.file(table, EXPIRY, now + BUCKET, key)
            table[key] = orjson.dumps(state)
            continue
        if smaller is None:
            del table[key]
        else:
            smaller["x"] = None
            if marker_retention > 0:
                moment = (bucket + 1) * BUCKET + marker_retention
                smaller["y"] = deadlines.file(table, MARKER_EXPIRY, moment, key)
            table[key] = orjson.dumps(smaller)
        changed += 1
    for bucket, key in deadlines.due(table, MARKER_EXPIRY, now, limit - changed):
        table.pop(deadlines.index_key(MARKER_EXPIRY, bucket, key), None)
        raw = table.get(key)
        state = orjson.loads(raw) if raw else None
        if state is not None and state.get("y") == bucket and state.get("x") is None:
            del table[key]
            changed += 1
    return changed
