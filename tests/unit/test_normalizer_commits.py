"""The normalize stage commits a batch only after its writes are acknowledged, in order,
while the next batch is already being processed; a commit refused after a rebalance
leaves the batch to be read again. A fake consumer and fake writes (no broker): the
real-broker paths are covered by the end-to-end and crash tests."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError

from processors.config import Settings
from processors.stream.app import Watermark
from processors.stream.normalizer import Normalizer

TP0 = TopicPartition("t.raw.twilio", 0)


class FakeConsumer:
    def __init__(self, refuse: BaseException | None = None) -> None:
        self.commits: list[dict[Any, int]] = []
        self.refuse = refuse

    async def commit(self, offsets: dict[Any, int]) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.commits.append(dict(offsets))


def _normalizer(watermark: Watermark) -> Normalizer:
    async def send(topic: str, key: bytes, value: bytes, partition: int | None) -> Any:
        raise AssertionError("not used here")

    return Normalizer(Settings(topic_prefix="t."), "g", [TP0.topic], send, watermark)


async def test_a_batch_is_committed_after_its_writes_and_after_the_batch_before_it():
    loop = asyncio.get_running_loop()
    watermark = Watermark()
    stage = _normalizer(watermark)
    consumer = FakeConsumer()
    first_write, second_write = loop.create_future(), loop.create_future()
    first = asyncio.ensure_future(
        stage._commit(consumer, [first_write], {TP0: (9, 100.0)}, {TP0: 10}, None)
    )
    second = asyncio.ensure_future(
        stage._commit(consumer, [second_write], {TP0: (19, 200.0)}, {TP0: 20}, first)
    )
    second_write.set_result(None)
    await asyncio.sleep(0.01)
    assert consumer.commits == []  # the first batch's write is not acknowledged yet
    assert watermark.now(1e9, [(TP0, 20, None)]) is None  # nothing counts as processed
    first_write.set_result(None)
    await asyncio.wait_for(second, 1)
    assert consumer.commits == [{TP0: 10}, {TP0: 20}]
    assert stage._committed == {TP0: 20}
    # the watermark learned the receive times only once the writes were acknowledged
    assert watermark.now(1e9, [(TP0, 20, 20)]) == 1e9
    assert watermark.now(1e9, [(TP0, 25, 20)]) == 200.0


async def test_a_commit_refused_after_a_rebalance_is_left_to_the_next_reader():
    stage = _normalizer(Watermark())
    consumer = FakeConsumer(refuse=CommitFailedError("rebalanced"))
    await stage._commit(consumer, [], {TP0: (9, 100.0)}, {TP0: 10}, None)
    assert TP0 not in stage._committed
