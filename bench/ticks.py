"""Deadline tick cost with 10k vs 1M pending deadlines, on a real RocksDB.

The emitter's pure logic runs over a rocksdict database exactly as in the worker (reads
and range scans straight from RocksDB, one WriteBatch per marker). Each round parks N
deadlines spread over the next 7 days plus 100 due now, then times one watermark marker.
If the cost followed the table size or the horizon, the 1M round would be ~100x the 10k
round; it should be about the same.
"""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import orjson
from rocksdict import Options, Rdict, WriteBatch

from processors.stream import deadlines
from processors.stream.emission import Emitter, Policy
from processors.stream.fasttable import _DELETED, PartitionBatch

NOW = 1_800_000_000.0
DUE = 100


def _state(key: str, deadline: float) -> bytes:
    provider, mid = key.split(":", 1)
    return orjson.dumps(
        {
            "seq": 1,
            "li": 1,
            "told": "sent",
            "dl": deadline,
            "m": {
                "provider": provider,
                "provider_message_id": mid,
                "channel": "sms",
                "account": None,
            },
            "out": {"1": [1, 1, None, NOW]},
        }
    )


def _flush(db: Rdict, batch: PartitionBatch) -> None:
    rocks = WriteBatch(raw_mode=True)
    for key, value in batch.pending.items():
        if value is _DELETED:
            rocks.delete(key.encode())
        else:
            rocks.put(key.encode(), value)
    db.write(rocks)
    batch.pending.clear()


def fill(db: Rdict, pending: int) -> None:
    batch = PartitionBatch(db, {})
    for i in range(pending):
        key = f"twilio:P{i:09d}"
        deadline = NOW + 3600 + (i * 7 * 86400 / pending)
        deadlines.file(batch, deadlines.DEADLINE, deadline, key)
        batch[key] = _state(key, deadline)
        if len(batch.pending) > 50_000:
            _flush(db, batch)
    for i in range(DUE):
        key = f"twilio:D{i:09d}"
        deadline = NOW - 1 - i % 5
        deadlines.file(batch, deadlines.DEADLINE, deadline, key)
        batch[key] = _state(key, deadline)
    deadlines.add_pending(batch, pending + DUE)
    _flush(db, batch)


def one_round(workdir: Path, pending: int, repeats: int = 5) -> dict[str, Any]:
    path = workdir / f"ticks-{pending}"
    shutil.rmtree(path, ignore_errors=True)
    db = Rdict(str(path), Options(raw_mode=True))
    try:
        started = time.perf_counter()
        fill(db, pending)
        filled = time.perf_counter() - started
        timings = []
        fired = 0
        for r in range(repeats):
            batch = PartitionBatch(db, {})
            tick_started = time.perf_counter()
            out = Emitter(batch, Policy(after=3600.0)).on_marker(NOW + r * 0.5, 10 + r, NOW)
            _flush(db, batch)
            timings.append(time.perf_counter() - tick_started)
            fired += out.fired
        return {
            "pending": pending,
            "fill_seconds": filled,
            "first_tick_ms": timings[0] * 1000,
            "idle_tick_ms": statistics.median(timings[1:]) * 1000,
            "fired": fired,
        }
    finally:
        db.close()
        shutil.rmtree(path, ignore_errors=True)


def run(workdir: Path, quick: bool = False) -> dict[str, Any]:
    small, large = (1_000, 100_000) if quick else (10_000, 1_000_000)
    a = one_round(workdir, small)
    b = one_round(workdir, large)
    return {"small": a, "large": b, "ratio_first_tick": b["first_tick_ms"] / a["first_tick_ms"]}
