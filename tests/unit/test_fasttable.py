"""The write-behind table path on a real RocksDB (rocksdict) and aiokafka batches.

The invariant under test: the local RocksDB never holds a write the changelog does not
have, and what it holds is whole input records up to the offset it records.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from rocksdict import Options, Rdict
from support.fake_kafka import FakeProducer

from processors.kafka.writer import MAX_UNIT_BYTES
from processors.stream import faults
from processors.stream.fasttable import FastTable, UnitTooLarge
from processors.stream.fence import Ownership
from processors.stream.writers import PartitionWriters

OFFSET_KEY = b"__faust\0offset__"


class Store:
    """The two things FastTable uses of Faust's RocksDB store."""

    offset_key = OFFSET_KEY

    def __init__(self, path: Any) -> None:
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        self.db = Rdict(str(path), options)

    def _db_for_partition(self, partition: int) -> Rdict:
        return self.db


class Topic:
    def get_topic_name(self) -> str:
        return "app-ordering-changelog"


class Table:
    def __init__(self, path: Any) -> None:
        self.data = Store(path)
        self.changelog_topic = Topic()


@pytest.fixture
def setup(tmp_path):
    ownership = Ownership()
    ownership.assign({"in0"})
    fake = FakeProducer(batch_size=4096)
    errors: list[BaseException] = []
    writers = PartitionWriters(lambda: fake, errors.append, ownership)
    table = FastTable(Table(tmp_path / "db"), writers, ownership)
    yield table, fake, ownership, errors
    table.table.data.db.close()


async def _settle() -> None:
    for _ in range(30):
        await asyncio.sleep(0)


async def test_writes_are_visible_at_once_but_reach_rocksdb_only_when_acknowledged(setup):
    table, fake, ownership, _ = setup
    gate = fake.block("app-ordering-changelog", 0)
    token = ownership.token("in0")
    batch = table.begin(0)
    batch["a"] = b"1"
    batch["b"] = b"2"
    await table.write(token, 0, batch)
    later = table.begin(0)
    assert later.get("a") == b"1"  # the next record reads its own worker's writes
    db = table.table.data.db
    await _settle()
    assert db.get(b"a") is None  # not acknowledged: not on disk
    gate.set()
    await table.writers.drain()
    await _settle()
    assert db.get(b"a") == b"1" and db.get(b"b") == b"2"
    assert db.get(OFFSET_KEY) == b"1"  # the offset of the unit's last record, same write
    assert table.pending_units(0) == 0  # the overlay empties once RocksDB has it


async def test_a_newer_write_stays_in_the_overlay_until_its_own_ack(setup):
    table, fake, ownership, _ = setup
    token = ownership.token("in0")
    first = table.begin(0)
    first["a"] = b"old"
    await table.write(token, 0, first)
    await table.writers.drain()
    await _settle()
    gate = fake.block("app-ordering-changelog", 0)
    second = table.begin(0)
    second["a"] = b"new"
    del second["gone"]
    await table.write(token, 0, second)
    assert table.begin(0).get("a") == b"new"
    gate.set()
    await table.writers.drain()
    await _settle()
    assert table.table.data.db.get(b"a") == b"new"


async def test_a_crash_between_ack_and_rocksdb_leaves_rocksdb_a_prefix(setup, monkeypatch):
    """Fault point changelog-acked: the acknowledged unit is not in RocksDB, and nothing
    later is either; Faust's recovery reads it back from the persisted offset."""
    table, _fake, ownership, _ = setup
    token = ownership.token("in0")
    first = table.begin(0)
    first["a"] = b"1"
    await table.write(token, 0, first)
    await table.writers.drain()
    await _settle()
    exits: list[int] = []
    monkeypatch.setattr(faults.os, "_exit", lambda code: exits.append(code))
    faults.arm("changelog-acked")
    try:
        second = table.begin(0)
        second["b"] = b"2"
        await table.write(token, 0, second)
        await table.writers.drain()
        await _settle()
    finally:
        faults.arm("")
    assert exits == [faults.EXIT_CODE]


async def test_a_revoked_partition_never_reaches_rocksdb(setup):
    table, fake, ownership, _ = setup
    gate = fake.block("app-ordering-changelog", 0)
    token = ownership.token("in0")
    batch = table.begin(0)
    batch["a"] = b"1"
    await table.write(token, 0, batch)
    await _settle()  # handed over, not acknowledged
    ownership.revoke({"in0"})
    table.forget({0})
    gate.set()
    await table.writers.drain()
    await _settle()
    assert table.table.data.db.get(b"a") is None  # the next owner restores it instead
    late = table.begin(0)
    late["z"] = b"1"
    await table.write(token, 0, late)  # an old token: nothing queued at all
    assert table.writers.queued == 0


async def test_scans_merge_rocksdb_the_overlay_and_the_record_in_hand(setup):
    table, fake, ownership, _ = setup
    token = ownership.token("in0")
    batch = table.begin(0)
    for key in ("~d:001:a", "~d:002:b", "~d:005:c", "m1"):
        batch[key] = b""
    await table.write(token, 0, batch)
    await table.writers.drain()
    await _settle()
    fake.block("app-ordering-changelog", 0)
    pending = table.begin(0)
    del pending["~d:002:b"]
    pending["~d:003:d"] = b""
    await table.write(token, 0, pending)
    hand = table.begin(0)
    hand["~d:000:e"] = b""
    assert [k for k, _ in hand.scan("~d:", "~d:004", 10)] == ["~d:000:e", "~d:001:a", "~d:003:d"]
    assert [k for k, _ in hand.scan("~d:", "~d:999", 2)] == ["~d:000:e", "~d:001:a"]


async def test_a_unit_too_large_for_one_batch_is_refused_before_anything_is_written(setup):
    table, _, _, _ = setup
    batch = table.begin(0)
    for i in range(9):
        batch[f"k{i}"] = b"x" * (MAX_UNIT_BYTES // 8)
    with pytest.raises(UnitTooLarge):
        table.check(batch)
