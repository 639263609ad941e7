"""KafkaRawSink's micro-batching against a fake producer (no broker).

The fake keeps aiokafka's real BatchBuilder, so what is asserted about keys, values and
headers is what the broker would receive; it controls each batch's acknowledgement, so
errors and silences can be given to one batch while others succeed.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, NotLeaderForPartitionError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch

from processors.config import Settings
from processors.ingest import producer as producer_module
from processors.ingest.producer import Deadlines, KafkaRawSink, KafkaUnavailable
from processors.kafka.raw import RawRecord

PARTITIONS = {"t.raw.twilio": {0, 1, 2, 3}, "t.raw.meta": {0, 1}}


class Acked:
    """What aiokafka's batch future gives with acks=all (RecordMetadata): its base offset."""

    def __init__(self, offset: int) -> None:
        self.offset = offset


class FakeProducer:
    """create_batch / send_batch / partitions_for, acknowledging as told."""

    def __init__(self, batch_size: int = 256 * 1024) -> None:
        self.batch_size = batch_size
        self.sent: list[tuple[str, int, BatchBuilder, asyncio.Future]] = []
        self.auto_ack = True
        self.fail_partition: tuple[str, int, BaseException] | None = None
        self.refuse: BaseException | None = None
        self.stopped = False

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self.stopped = True

    async def partitions_for(self, topic: str) -> set[int]:
        return PARTITIONS[topic]

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_size, 0)

    async def send_batch(self, builder: BatchBuilder, topic: str, *, partition: int):
        if self.refuse is not None:
            raise self.refuse
        assert builder.closed(), "a submitted batch must not linger for more records"
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self.sent.append((topic, partition, builder, future))
        if self.fail_partition and self.fail_partition[:2] == (topic, partition):
            future.set_exception(self.fail_partition[2])
        elif self.auto_ack:
            future.set_result(Acked(0))
        return future

    def records(self) -> list[tuple[str, int, bytes, bytes, list[tuple[str, bytes]]]]:
        out = []
        for topic, partition, builder, _ in self.sent:
            for record in DefaultRecordBatch(builder._build()):
                out.append((topic, partition, record.key, record.value, list(record.headers)))
        return out


class Sink(KafkaRawSink):
    def __init__(self, settings: Settings, fake: FakeProducer) -> None:
        self.fake = fake
        super().__init__(settings)

    def _new_producer(self):  # type: ignore[override]
        return self.fake


def record(i: int, topic: str = "t.raw.twilio", size: int = 40) -> RawRecord:
    body = f"MessageSid=SM{i:06d}&pad=".encode() + b"x" * size
    headers = [("msgstatus-provider", b"twilio"), ("h-x-twilio-signature", f"sig{i}".encode())]
    return RawRecord(topic, f"key-{i:04d}".encode(), body, headers)


def expected_partition(rec: RawRecord) -> int:
    parts = sorted(PARTITIONS[rec.topic])
    return DefaultPartitioner()(rec.key, parts, parts)


async def started(fake: FakeProducer | None = None, timeout: float = 5.0) -> Sink:
    sink = Sink(replace(Settings(), produce_timeout=timeout), fake or FakeProducer())
    await sink.start()
    return sink


async def test_concurrent_publishes_share_one_batch_per_partition():
    sink = await started()
    records = [record(i) for i in range(200)] + [record(i, "t.raw.meta") for i in range(50)]
    await asyncio.gather(*(sink.publish(r) for r in records))
    sent = sink.fake.sent
    targets = {(topic, partition) for topic, partition, _, _ in sent}
    assert len(sent) == len(targets) <= 6, "one round: one batch per partition"
    written = sink.fake.records()
    assert len(written) == len(records)
    found = {
        (topic, key): (partition, value, headers)
        for topic, partition, key, value, headers in written
    }
    for r in records:
        partition, value, headers = found[r.topic, r.key]
        assert (value, headers) == (r.value, r.headers)
        assert partition == expected_partition(r), "the partition a keyed send() would pick"
    await sink.stop()
    assert sink.fake.stopped


async def test_a_full_batch_continues_in_the_next():
    sink = await started(FakeProducer(batch_size=1024))
    records = [record(i, size=300) for i in range(40)]
    await asyncio.gather(*(sink.publish(r) for r in records))
    assert len(sink.fake.records()) == 40
    per_partition = {}
    for topic, partition, builder, _ in sink.fake.sent:
        per_partition[topic, partition] = per_partition.get((topic, partition), 0) + 1
        assert builder.size() <= 1024 + 400
    assert max(per_partition.values()) > 1
    await sink.stop()


async def test_a_failed_batch_fails_each_of_its_waiters_only():
    fake = FakeProducer()
    records = [record(i) for i in range(64)]
    failing = ("t.raw.twilio", expected_partition(records[0]), NotLeaderForPartitionError())
    fake.fail_partition = failing
    sink = await started(fake)
    results = await asyncio.gather(*(sink.publish(r) for r in records), return_exceptions=True)
    errors = [exc for exc in results if exc is not None]
    for r, result in zip(records, results, strict=True):
        if expected_partition(r) == failing[1]:
            assert isinstance(result, KafkaUnavailable)
            assert "NotLeaderForPartitionError" in str(result)
        else:
            assert result is None
    assert len({id(exc) for exc in errors}) == len(errors) > 1, "one exception per request"
    await sink.stop()


async def test_send_batch_refusing_fails_every_waiter_and_the_sink_goes_on():
    fake = FakeProducer()
    sink = await started(fake)
    fake.refuse = KafkaTimeoutError()
    results = await asyncio.gather(
        *(sink.publish(record(i)) for i in range(20)), return_exceptions=True
    )
    assert all(isinstance(r, KafkaUnavailable) for r in results), results
    fake.refuse = None
    await asyncio.gather(*(sink.publish(record(i)) for i in range(20, 30)))
    assert len(fake.records()) == 10
    await sink.stop()


async def test_no_acknowledgement_within_the_timeout_is_kafka_unavailable():
    fake = FakeProducer()
    fake.auto_ack = False
    sink = await started(fake, timeout=0.2)
    loop = asyncio.get_running_loop()
    began = loop.time()
    results = await asyncio.gather(
        *(sink.publish(record(i)) for i in range(10)), return_exceptions=True
    )
    waited = loop.time() - began
    assert all(isinstance(r, KafkaUnavailable) for r in results), results
    assert "within 0.2 s" in str(results[0])
    assert 0.18 <= waited < 1.0
    # a late acknowledgement of a request already answered 503 changes nothing
    for *_, future in fake.sent:
        future.set_result(Acked(0))
    await asyncio.sleep(0)
    await sink.stop()


async def test_a_request_that_went_away_is_not_written():
    fake = FakeProducer()
    sink = await started(fake)
    task = asyncio.create_task(sink.publish(record(1)))
    await asyncio.sleep(0)  # queued, the flusher has not run its round yet
    task.cancel()
    await sink.publish(record(2))
    assert [key for _, _, key, _, _ in fake.records()] == [b"key-0002"]
    await sink.stop()


async def test_not_started_stopping_and_oversized_are_refused():
    sink = Sink(Settings(), FakeProducer())
    with pytest.raises(KafkaUnavailable, match="not connected"):
        await sink.publish(record(1))
    await sink.start()
    huge = replace(record(2), value=b"x" * (producer_module.MAX_REQUEST_BYTES + 1))
    with pytest.raises(KafkaUnavailable, match="exceeds"):
        await sink.publish(huge)
    await sink.stop()
    with pytest.raises(KafkaUnavailable, match="stopping"):
        await sink.publish(record(3))


async def test_stop_writes_what_is_queued():
    fake = FakeProducer()
    sink = await started(fake)
    pending = [asyncio.create_task(sink.publish(record(i))) for i in range(5)]
    await asyncio.sleep(0)
    await sink.stop()
    assert [task.result() for task in pending] == [None] * 5
    assert len(fake.records()) == 5


async def test_deadlines_share_a_timer_per_window():
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(timeout=0.05, granularity=10.0)
    waiters = [loop.create_future() for _ in range(3)]
    for waiter in waiters:
        deadlines.add(waiter, loop)
    waiters[0].set_result(None)
    await asyncio.sleep(0.1)
    assert waiters[0].result() is None
    for waiter in waiters[1:]:
        with pytest.raises(KafkaUnavailable):
            waiter.result()


async def test_connection_errors_while_grouping_fail_the_round():
    fake = FakeProducer()

    async def no_metadata(topic: str) -> set[int]:
        raise KafkaConnectionError("broker down")

    sink = await started(fake)
    fake.partitions_for = no_metadata  # type: ignore[method-assign]
    with pytest.raises(KafkaUnavailable, match="KafkaConnectionError"):
        await sink.publish(record(1))
    await sink.stop()


class DrainingProducer(FakeProducer):
    """send_batch waits while the partition's previous batch is not drained, as aiokafka's
    accumulator does (one request in flight per broker with idempotence)."""

    def __init__(self) -> None:
        super().__init__()
        self.blocked: dict[tuple[str, int], asyncio.Event] = {}

    async def send_batch(self, builder: BatchBuilder, topic: str, *, partition: int):
        gate = self.blocked.get((topic, partition))
        if gate is not None:
            await gate.wait()
        return await super().send_batch(builder, topic, partition=partition)


async def test_a_partition_waiting_for_its_drain_holds_no_other_back():
    fake = DrainingProducer()
    sink = await started(fake)
    slow = next(r for r in (record(i) for i in range(100)) if expected_partition(r) == 0)
    fast = [r for r in (record(i) for i in range(100, 200)) if expected_partition(r) != 0]
    fake.blocked["t.raw.twilio", 0] = asyncio.Event()
    waiting = asyncio.create_task(sink.publish(slow))
    await asyncio.sleep(0.01)
    # partition 0 is stuck: the others, and later records, are still written at once
    await asyncio.wait_for(asyncio.gather(*(sink.publish(r) for r in fast)), 1.0)
    more = [r for r in (record(i) for i in range(200, 260)) if expected_partition(r) == 0]
    later = asyncio.gather(*(sink.publish(r) for r in more))
    await asyncio.sleep(0.01)
    assert not waiting.done() and not later.done()
    fake.blocked["t.raw.twilio", 0].set()
    await asyncio.wait_for(asyncio.gather(waiting, later), 1.0)
    zero = [b for t, p, b, _ in fake.sent if (t, p) == ("t.raw.twilio", 0)]
    assert len(zero) == 2, "what queued up while waiting left as one batch"
    await sink.stop()


class RenewingSink(KafkaRawSink):
    """A sink whose every producer is a new fake, as a real renewal makes a new one."""

    def __init__(self, settings: Settings) -> None:
        self.fakes: list[FakeProducer] = []
        super().__init__(settings)

    def _new_producer(self):  # type: ignore[override]
        self.fakes.append(FakeProducer())
        return self.fakes[-1]


async def test_a_producer_kafka_refuses_for_good_is_replaced_by_a_new_one():
    """After the broker was down, a batch that expired with its sequence numbers taken
    makes the broker refuse every later batch of that producer (OutOfOrderSequenceNumber):
    before the fix the gateway answered 503 until it was restarted."""
    from aiokafka.errors import OutOfOrderSequenceNumber

    sink = RenewingSink(replace(Settings(), produce_timeout=2.0))
    await sink.start()
    first = sink.fakes[0]
    first.fail_partition = (
        "t.raw.twilio",
        expected_partition(record(1)),
        OutOfOrderSequenceNumber(),
    )
    with pytest.raises(KafkaUnavailable, match="OutOfOrderSequenceNumber"):
        await sink.publish(record(1))  # this one is answered 503: the provider retries
    for _ in range(50):
        if len(sink.fakes) == 2 and first.stopped:
            break
        await asyncio.sleep(0.02)
    assert len(sink.fakes) == 2 and first.stopped
    await sink.publish(record(1))  # the retry goes through the new producer
    assert [key for _, _, key, _, _ in sink.fakes[1].records()] == [b"key-0001"]
    # other errors (a partition without leader for a while) keep the producer
    sink.fakes[1].fail_partition = (
        "t.raw.twilio",
        expected_partition(record(2)),
        NotLeaderForPartitionError(),
    )
    with pytest.raises(KafkaUnavailable):
        await sink.publish(record(2))
    await asyncio.sleep(0.05)
    assert len(sink.fakes) == 2
    await sink.stop()
