"""Time indexes kept in a table: pending `sent` deadlines and state expiry.

An index entry is one key per message, `<prefix><bucket, zero-padded>:<message_key>`
with an empty value, so that keys sort by time: filing or removing a message is O(1)
(one put or one delete, the bucket is stored in the message's state), and finding what
is due is one ordered range scan that stops at the first bucket not yet due: O(due),
for any horizon. No record of the state grows with the horizon or the number of
messages (the old design kept one JSON list of every bucket, rewritten per new bucket).
"""

from __future__ import annotations

from processors.stream.fasttable import Scannable

DEADLINE = "~d:"  # delivery_unknown deadlines, one-second buckets
EXPIRY = "~x:"  # state retention (retention.py), one-hour buckets
MARKER_EXPIRY = "~y:"  # compact markers' own retention, one-day buckets
PENDING_KEY = "~pending"
WIDTH = 12  # digits: epoch seconds up to year 33658

BUCKET_SECONDS = {DEADLINE: 1.0, EXPIRY: 3600.0, MARKER_EXPIRY: 86400.0}


def bucket_of(prefix: str, moment: float) -> int:
    return int(moment // BUCKET_SECONDS[prefix])


def index_key(prefix: str, bucket: int, message_key: str) -> str:
    return f"{prefix}{bucket:0{WIDTH}d}:{message_key}"


def file(table: Scannable, prefix: str, moment: float, message_key: str) -> int:
    """File `message_key` at `moment`; returns the bucket (store it to remove it later)."""
    bucket = bucket_of(prefix, moment)
    table[index_key(prefix, bucket, message_key)] = b""
    return bucket


def unfile(table: Scannable, prefix: str, bucket: int | None, message_key: str) -> None:
    if bucket is not None:
        table.pop(index_key(prefix, bucket, message_key), None)


def due(table: Scannable, prefix: str, now: float, limit: int) -> list[tuple[int, str]]:
    """(bucket, message_key) of entries in buckets that ended at or before `now`, oldest
    first, at most `limit`. Entries stay until the caller removes them."""
    width = BUCKET_SECONDS[prefix]
    last = int(now // width) - 1  # the newest bucket whose whole span is past
    if last < 0:
        return []
    stop = f"{prefix}{last + 1:0{WIDTH}d}"
    out = []
    for key, _ in table.scan(prefix, stop, limit):
        bucket, _, message_key = key[len(prefix) :].partition(":")
        out.append((int(bucket), message_key))
    return out


def pending(table: Scannable) -> int:
    raw = table.get(PENDING_KEY)
    return int(raw) if raw else 0


def add_pending(table: Scannable, delta: int) -> int:
    value = max(0, pending(table) + delta)
    table[PENDING_KEY] = str(value).encode()
    return value
