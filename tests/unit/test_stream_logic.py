"""The worker's decisions without Kafka: ordering receipts, emission, deadlines."""

from __future__ import annotations

import pytest

from processors.model import CanonicalEvent
from processors.stream import deadlines
from processors.stream.emission import Emitter, Policy
from processors.stream.ordering import order_record

NOW = 1_800_000_000.0


def ev(
    status: str,
    mid: str = "SM1",
    *,
    provider: str = "twilio",
    channel: str = "sms",
    t: float = NOW,
    occurred: float | None = None,
    pstatus: str | None = None,
) -> dict:
    return CanonicalEvent(
        provider=provider,
        provider_message_id=mid,
        status=status,
        provider_status=pstatus or status,
        channel=channel,
        observed_at=t,
        occurred_at=occurred,
    ).to_dict()


def run(events: list[dict], src: int, ordering: dict, emitter: Emitter, now: float = NOW):
    items = order_record(ordering, events, src)
    return items, emitter.on_transitions(items, src, now)


@pytest.fixture
def tables():
    return {}, Emitter({}, Policy(after=60.0))


def statuses(out) -> list[tuple[int, str, str | None]]:
    return [
        (e["data"]["sequence"], e["data"]["status"], e["data"]["previous_status"])
        for _, e in out.events
    ]


def test_events_are_numbered_and_duplicates_say_nothing(tables):
    ordering, emitter = tables
    _, out = run([ev("sent"), ev("delivered")], 1, ordering, emitter)
    assert statuses(out) == [(1, "sent", None), (2, "delivered", "sent")]
    items, out = run([ev("sent"), ev("delivered")], 2, ordering, emitter)
    assert [i["o"] for i in items] == ["duplicate", "duplicate"]
    assert out.events == []


def test_late_sent_after_read_is_stale_and_read_implies_milestones(tables):
    ordering, emitter = tables
    _, out = run([ev("read")], 1, ordering, emitter)
    assert out.events[0][1]["data"]["implied"] == ["sent", "delivered"]
    items, out = run([ev("sent")], 2, ordering, emitter)
    assert items[0]["o"] == "stale" and out.events == []


def test_redelivered_record_repeats_the_same_events(tables):
    """After a crash the same source offset comes again: same sequence, same id."""
    ordering, emitter = tables
    items1, out1 = run([ev("sent")], 7, ordering, emitter)
    items2 = order_record(ordering, [ev("sent")], 7)
    assert items2 == items1
    again = emitter.on_transitions(items2, 7, NOW + 5)
    assert [e["id"] for _, e in again.events] == [e["id"] for _, e in out1.events]
    assert again.events[0][1]["data"]["emitted_at"] == out1.events[0][1]["data"]["emitted_at"]
    # a true duplicate (another offset) is silent
    assert emitter.on_transitions(order_record(ordering, [ev("sent")], 8), 8, NOW).events == []


def test_two_events_of_one_message_in_one_record(tables):
    ordering, emitter = tables
    items, out = run([ev("sent"), ev("sent"), ev("delivered")], 3, ordering, emitter)
    assert [i["o"] for i in items] == ["applied", "duplicate", "applied"]
    assert statuses(out) == [(1, "sent", None), (2, "delivered", "sent")]


def test_delivery_unknown_fires_once_and_delivered_still_applies(tables):
    ordering, emitter = tables
    run([ev("sent", t=NOW)], 1, ordering, emitter)
    assert deadlines.pending(emitter.table) == 1
    assert emitter.on_check(NOW + 30, 2, NOW + 30).events == []
    out = emitter.on_check(NOW + 62, 3, NOW + 62)
    assert statuses(out) == [(2, "delivery_unknown", "sent")]
    assert deadlines.pending(emitter.table) == 0
    assert emitter.on_check(NOW + 200, 4, NOW + 200).events == []
    _, out = run([ev("delivered", t=NOW + 300)], 5, ordering, emitter)
    assert statuses(out) == [(3, "delivered", "delivery_unknown")]


def test_delivered_in_time_cancels_the_deadline(tables):
    ordering, emitter = tables
    run([ev("sent", t=NOW)], 1, ordering, emitter)
    run([ev("delivered", t=NOW + 10)], 2, ordering, emitter)
    assert deadlines.pending(emitter.table) == 0
    assert emitter.on_check(NOW + 1000, 3, NOW + 1000).events == []


def test_deadline_counts_from_provider_time(tables):
    ordering, emitter = tables
    run([ev("sent", t=NOW, occurred=NOW - 50)], 1, ordering, emitter)
    assert len(emitter.on_check(NOW + 11, 2, NOW + 11).events) == 1


def test_no_deadline_without_delivery_receipts_or_when_disabled():
    ordering: dict = {}
    emitter = Emitter({}, Policy(after=60.0, disabled=frozenset({"meta/whatsapp"})))
    run([ev("sent", "ig1", provider="meta", channel="instagram")], 1, ordering, emitter)
    run([ev("sent", "wa1", provider="meta", channel="whatsapp")], 2, ordering, emitter)
    assert deadlines.pending(emitter.table) == 0
    assert emitter.on_check(NOW + 10_000, 3, NOW + 10_000).events == []


def test_redelivered_check_re_emits_the_same_delivery_unknown(tables):
    ordering, emitter = tables
    run([ev("sent")], 1, ordering, emitter)
    first = emitter.on_check(NOW + 61, 2, NOW + 61)
    again = emitter.on_check(NOW + 61, 2, NOW + 99)
    assert [e["id"] for _, e in again.events] == [e["id"] for _, e in first.events]
    assert again.events[0][1] == first.events[0][1]


def test_tick_reads_only_due_buckets():
    """Cost follows due deadlines, not the table: count reads on a table with many."""

    class Counting(dict):
        reads = 0

        def get(self, key, default=None):
            Counting.reads += 1
            return super().get(key, default)

    table = Counting()
    for i in range(5000):
        deadlines.add(table, NOW + 3600 + i % 600, f"m{i}")
    for i in range(10):
        deadlines.add(table, NOW + i * 0.1, f"due{i}")
    Counting.reads = 0
    due = list(deadlines.pop_due(table, NOW + 1.5))
    assert sorted(due) == sorted(f"due{i}" for i in range(10))
    assert Counting.reads < 30


def test_pop_due_is_ordered_and_leaves_future_buckets():
    table: dict = {}
    deadlines.add(table, NOW + 5, "b")
    deadlines.add(table, NOW + 1, "a")
    deadlines.add(table, NOW + 100, "c")
    assert list(deadlines.pop_due(table, NOW + 10)) == ["a", "b"]
    assert list(deadlines.pop_due(table, NOW + 10)) == []
    assert list(deadlines.pop_due(table, NOW + 200)) == ["c"]


def test_watermark_holds_back_while_upstream_has_unread_records():
    from processors.stream.app import Watermark

    w = Watermark()
    assert w.now(NOW, [("raw0", None, None)]) is None  # end unknown: hold every check
    assert w.now(NOW, [("raw0", 0, None)]) == NOW  # empty partition
    assert w.now(NOW, [("raw0", 5, None)]) is None  # unread records, nothing known of them
    w.processed("raw0", 2, NOW - 100)
    assert w.now(NOW, [("raw0", 5, None)]) == NOW - 100
    w.processed("raw1", 9, NOW - 300)
    assert w.now(NOW, [("raw0", 5, None), ("raw1", 12, None)]) == NOW - 300  # the slowest
    w.processed("raw0", 4, NOW - 50)
    w.processed("raw1", 11, NOW - 40)
    assert w.now(NOW, [("raw0", 5, None), ("raw1", 12, None)]) == NOW  # caught up: wall clock
    assert w.now(NOW, [("raw2", 7, 7)]) == NOW  # nothing new since the committed offset
