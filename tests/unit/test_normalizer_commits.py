"""The normalize stage commits a batch only after its writes are acknowledged, in order,
while the next batch is already being processed; a commit refused after a rebalance
leaves the batch to be read again; its watermark markers claim only what is true. A fake
consumer and fake writes (no broker): the real-broker paths are covered by the
end-to-end, crash and delivery_unknown tests."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError

from processors.config import Settings
from processors.stream import markers
from processors.stream.normalizer import Normalizer

TP0 = TopicPartition("t.raw.twilio", 0)
TP1 = TopicPartition("t.raw.twilio", 1)


class FakeConsumer:
    def __init__(self, refuse: BaseException | None = None) -> None:
        self.commits: list[dict[Any, int]] = []
        self.refuse = refuse
        self.ends: dict[Any, int] = {}
        self.positions: dict[Any, int] = {}
        self.polled: dict[Any, int] = {}

    async def commit(self, offsets: dict[Any, int]) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.commits.append(dict(offsets))

    def assignment(self) -> set[Any]:
        return set(self.positions)

    def highwater(self, tp: Any) -> int | None:
        return self.ends.get(tp)

    def last_poll_timestamp(self, tp: Any) -> int | None:
        return self.polled.get(tp)

    async def position(self, tp: Any) -> int:
        return self.positions[tp]

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0, 1}


def _normalizer(sent: list | None = None) -> Normalizer:
    async def send(topic: str, key: bytes, value: bytes, partition: int | None) -> Any:
        if sent is None:
            raise AssertionError("not used here")
        sent.append((topic, key, orjson.loads(value), partition))
        return asyncio.get_running_loop().create_future()

    return Normalizer(Settings(topic_prefix="t.", partitions=2), "g", [TP0.topic], send)


async def test_a_batch_is_committed_after_its_writes_and_after_the_batch_before_it():
    loop = asyncio.get_running_loop()
    stage = _normalizer()
    consumer = FakeConsumer()
    first_write, second_write = loop.create_future(), loop.create_future()
    first = asyncio.ensure_future(stage._commit(consumer, [first_write], {TP0: 10}, None))
    second = asyncio.ensure_future(stage._commit(consumer, [second_write], {TP0: 20}, first))
    second_write.set_result(None)
    await asyncio.sleep(0.01)
    assert consumer.commits == []  # the first batch's write is not acknowledged yet
    first_write.set_result(None)
    await asyncio.wait_for(second, 1)
    assert consumer.commits == [{TP0: 10}, {TP0: 20}]


async def test_a_commit_refused_after_a_rebalance_is_left_to_the_next_reader():
    stage = _normalizer()
    consumer = FakeConsumer(refuse=CommitFailedError("rebalanced"))
    await stage._commit(consumer, [], {TP0: 10}, None)
    assert consumer.commits == []


async def test_markers_claim_caught_up_partitions_by_fetch_time_and_others_by_data():
    """A partition read to its end is complete up to the time of the fetch that showed
    the end; one with unread records only up to the latest receive time processed; one
    neither caught up nor read from claims nothing."""
    sent: list = []
    stage = _normalizer(sent)
    consumer = FakeConsumer()
    consumer.positions = {TP0: 5, TP1: 3}
    consumer.ends = {TP0: 5, TP1: 9}
    consumer.polled = {TP0: 1_000_500, TP1: 1_000_600}
    await stage.send_markers(consumer)
    marks = sent[0][2]["wm"]["raw"]
    assert marks == {"t.raw.twilio:0": 1000.5}  # TP1 is behind and unread: no claim
    stage._seen[TP1] = 990.0
    sent.clear()
    await stage.send_markers(consumer)
    assert sent[0][2]["wm"]["raw"] == {"t.raw.twilio:0": 1000.5, "t.raw.twilio:1": 990.0}
    # one marker per canonical and per conversations partition, keyed as markers
    assert sorted((t, p) for t, _, _, p in sent) == [
        ("t.status.canonical", 0),
        ("t.status.canonical", 1),
        ("t.status.conversations", 0),
        ("t.status.conversations", 1),
    ]
    assert all(k == markers.KEY for _, k, _, _ in sent)
    assert sent[0][2]["wm"]["topics"] == {"t.raw.twilio": 2} and sent[0][2]["wm"]["nconv"] == 2
