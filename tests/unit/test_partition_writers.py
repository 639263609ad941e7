"""PartitionWriters against a fake producer that behaves like aiokafka's accumulator.

`send_batch` here waits, like aiokafka's, while the partition still holds a batch the
broker has not taken (the test releases it), and keeps aiokafka's real BatchBuilder, so
the records asserted are the bytes the broker would get. The fake log assigns offsets
per partition, so the offsets handed to `on_acked` are checked too.
"""

from __future__ import annotations

import asyncio

from support.fake_kafka import FakeProducer

from processors.kafka.writer import Unit
from processors.stream.fence import Fenced, Ownership, Token
from processors.stream.writers import PartitionWriters


def _records(prefix: str, n: int, size: int = 10) -> list[tuple[bytes, bytes | None]]:
    return [(f"{prefix}{i}".encode(), b"v" * size) for i in range(n)]


def _writers(
    fake: FakeProducer,
    errors: list[BaseException] | None = None,
    limit: int = 1000,
    ownership: Ownership | None = None,
):
    return PartitionWriters(
        lambda: fake, (errors if errors is not None else []).append, ownership, limit
    )


def _unit(records, **kw) -> Unit:
    return Unit(records, **kw)


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_records_reach_each_partition_in_order_with_their_offsets():
    fake = FakeProducer(batch_size=2048)
    writers = _writers(fake)
    acked: list[int] = []
    first, second = _records("a", 300), _records("b", 5)
    await writers.append("t", 0, _unit(first[:150], atomic=False, on_acked=acked.append))
    await writers.append("t", 0, _unit(first[150:], atomic=False, on_acked=acked.append))
    await writers.append("t", 1, _unit(second, atomic=False))
    await writers.drain()
    await _settle()
    assert fake.records("t", 0) == first
    assert fake.records("t", 1) == second
    assert fake.batches("t", 0) > 1
    assert acked == [149, 299]  # the log offset of each unit's last record
    assert writers.queued == 0


async def test_an_atomic_unit_is_never_split_across_record_batches():
    """A batch is appended to the log whole or not at all: one input record's table
    writes must travel in one, even when they are larger than the producer's batch size."""
    fake = FakeProducer(batch_size=2048)
    writers = _writers(fake)
    units = [_records(f"u{i}-", n, 60) for i, n in enumerate((10, 30, 200, 5, 7))]
    for records in units:
        await writers.append("c", 0, _unit(records))
    await writers.drain()
    batches = fake.per_batch("c", 0)
    assert [r for b in batches for r in b] == [r for u in units for r in u]
    for records in units:  # every unit sits inside exactly one batch
        assert sum(1 for b in batches if set(records) & set(b)) == 1
    assert any(len(b) >= 200 for b in batches)  # the large one got a batch of its own size


async def test_units_of_a_revoked_partition_are_dropped():
    fake = FakeProducer()
    ownership = Ownership()
    ownership.assign({"in0"})
    writers = _writers(fake, ownership=ownership)
    gate = fake.block("t", 0)
    token = ownership.token("in0")
    await writers.append("t", 0, _unit(_records("a", 2), token=token))
    await _settle()  # handed over, waiting at the gate
    await writers.append("t", 0, _unit(_records("b", 2), token=token))  # queued
    ownership.revoke({"in0"})
    assert writers.discard() == 2
    await writers.append("t", 0, _unit(_records("c", 2), token=token))  # after: dropped
    gate.set()
    await writers.drain()
    assert [k for k, _ in fake.records("t", 0)] == [b"a0", b"a1"]
    assert ownership.token("in0") is None and not ownership.live(Token("in0", 1))


async def test_a_fenced_batch_failure_is_not_an_error_but_a_real_failure_is():
    fake = FakeProducer()
    errors: list[BaseException] = []
    writers = _writers(fake, errors)
    fake.fail_with = Fenced("held and revoked")
    await writers.append("t", 0, _unit(_records("a", 1)))
    await writers.drain()
    await _settle()
    assert errors == []
    fake.fail_with = RuntimeError("record too large")
    await writers.append("t", 0, _unit(_records("b", 1)))
    await writers.drain()
    await _settle()
    assert len(errors) == 1


async def test_append_does_not_wait_for_the_partitions_previous_batch():
    fake = FakeProducer()
    writers = _writers(fake)
    gate = fake.block("t", 0)
    await writers.append("t", 0, _unit(_records("a", 3)))
    await _settle()  # the writer is now stuck in send_batch
    for i in range(5):  # an agent appending while the partition is busy never waits
        await asyncio.wait_for(writers.append("t", 0, _unit(_records(f"n{i}-", 2))), 0.1)
    assert writers.queued == 13
    gate.set()
    await writers.drain()
    # what queued meanwhile went out merged, not as five more batches
    assert fake.batches("t", 0) == 2
    assert [k for k, _ in fake.records("t", 0)][:4] == [b"a0", b"a1", b"a2", b"n0-0"]


async def test_drain_waits_for_earlier_records_only():
    fake = FakeProducer()
    writers = _writers(fake)
    gate0 = fake.block("t", 0)
    await writers.append("t", 0, _unit(_records("a", 2)))
    drained = asyncio.create_task(writers.drain())
    await _settle()
    assert not drained.done()  # partition 0's records are not in the producer yet
    gate1 = fake.block("t", 1)
    await writers.append("t", 1, _unit(_records("late", 2)))  # after the drain began
    gate0.set()
    await asyncio.wait_for(drained, 1)  # does not wait for partition 1
    assert fake.records("t", 1) == []
    gate1.set()
    await writers.drain()
    assert len(fake.records("t", 1)) == 2


async def test_append_waits_when_too_much_is_queued():
    fake = FakeProducer()
    writers = _writers(fake, limit=10)
    gate = fake.block("t", 0)
    await writers.append("t", 0, _unit(_records("a", 10)))
    blocked = asyncio.create_task(writers.append("t", 1, _unit(_records("b", 1))))
    await _settle()
    assert not blocked.done()
    gate.set()
    await asyncio.wait_for(blocked, 1)
    await writers.drain()
    assert len(fake.records("t", 1)) == 1


async def test_a_failed_hand_over_is_reported():
    fake = FakeProducer()
    errors: list[BaseException] = []
    writers = _writers(fake, errors)
    fake.refuse = RuntimeError("producer closed")
    await writers.append("t", 0, _unit(_records("a", 1)))
    await _settle()
    assert len(errors) == 1 and "producer closed" in str(errors[0])
