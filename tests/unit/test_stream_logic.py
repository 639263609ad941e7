"""The worker's decisions without Kafka: ordering receipts, emission, deadlines, markers,
retention. Tables are ScanDicts (a dict with the ordered scan the worker's table has)."""

from __future__ import annotations

import orjson
import pytest

from processors.model import CanonicalEvent
from processors.stream import deadlines, markers, retention
from processors.stream.deadlines import DEADLINE, EXPIRY
from processors.stream.emission import MAX_FIRES, Emitter, Policy
from processors.stream.fasttable import ScanDict
from processors.stream.ordering import MAX_RECEIPTS, Rules, on_marker, order_record

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


def run(events: list[dict], src: int, ordering: dict, emitter: Emitter, ts: float = NOW):
    items = order_record(ordering, events, src)
    return items, emitter.on_transitions(items, src, ts)


@pytest.fixture
def tables():
    return ScanDict(), Emitter(ScanDict(), Policy(after=60.0))


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


def test_redelivered_record_repeats_the_same_bytes(tables):
    """After a crash the same source offset comes again: same sequence, same id, and the
    same emitted_at (the record's timestamp, not the wall clock): byte for byte."""
    ordering, emitter = tables
    items1, out1 = run([ev("sent")], 7, ordering, emitter, ts=NOW + 1)
    items2 = order_record(ordering, [ev("sent")], 7)
    assert items2 == items1
    again = emitter.on_transitions(items2, 7, NOW + 1)
    assert orjson.dumps(again.events) == orjson.dumps(out1.events)
    assert again.repeated == 1
    # a true duplicate (another offset) is silent
    assert emitter.on_transitions(order_record(ordering, [ev("sent")], 8), 8, NOW).events == []


def test_a_restore_plus_reprocessing_reproduces_what_was_published(tables):
    """The invariant of docs/architecture.md: state as of any record boundary (what a
    changelog restore gives) plus the same input yields the same events."""
    ordering, emitter = tables
    inputs = [[ev("sent", "a"), ev("sent", "b")], [ev("delivered", "a")], [ev("read", "b")]]
    published = []
    snapshots = []
    for src, events in enumerate(inputs):
        snapshots.append((ScanDict(ordering), ScanDict(emitter.table)))
        _, out = run(events, src, ordering, emitter, ts=NOW + src)
        published += out.events
    for cut in range(len(inputs)):
        o, e = (ScanDict(t) for t in snapshots[cut])
        again = []
        emitter2 = Emitter(e, emitter.policy)
        for src in range(cut, len(inputs)):
            again += run(inputs[src], src, o, emitter2, ts=NOW + src)[1].events
        assert orjson.dumps(again) == orjson.dumps(published[len(published) - len(again) :])


def test_two_events_of_one_message_in_one_record(tables):
    ordering, emitter = tables
    items, out = run([ev("sent"), ev("sent"), ev("delivered")], 3, ordering, emitter)
    assert [i["o"] for i in items] == ["applied", "duplicate", "applied"]
    assert statuses(out) == [(1, "sent", None), (2, "delivered", "sent")]


def test_receipts_per_message_are_bounded(tables):
    ordering, _ = tables
    events = [ev("clicked", pstatus=f"click-{i}") for i in range(MAX_RECEIPTS + 10)]
    items = order_record(ordering, events, 1)
    assert [i["o"] for i in items].count("ignored") == 10
    assert len(orjson.loads(ordering["twilio:SM1"])["r"]) == MAX_RECEIPTS


def test_delivery_unknown_fires_once_and_delivered_still_applies(tables):
    ordering, emitter = tables
    run([ev("sent", t=NOW)], 1, ordering, emitter)
    assert deadlines.pending(emitter.table) == 1
    assert emitter.on_marker(NOW + 30, 2, NOW + 30).events == []
    out = emitter.on_marker(NOW + 62, 3, NOW + 62)
    assert statuses(out) == [(2, "delivery_unknown", "sent")]
    data = out.events[0][1]["data"]
    assert data["occurred_at"].startswith("2027-01-15T08:01:00")  # the deadline itself
    assert deadlines.pending(emitter.table) == 0
    assert emitter.on_marker(NOW + 200, 4, NOW + 200).events == []
    _, out = run([ev("delivered", t=NOW + 300)], 5, ordering, emitter)
    assert statuses(out) == [(3, "delivered", "delivery_unknown")]


def test_the_watermark_never_moves_back(tables):
    ordering, emitter = tables
    run([ev("sent", t=NOW)], 1, ordering, emitter)
    emitter.on_marker(NOW + 40, 2, NOW + 40)
    assert emitter.on_marker(NOW + 10, 3, NOW + 70).events == []  # an old marker: no harm
    assert len(emitter.on_marker(NOW + 61.5, 4, NOW + 71).events) == 1


def test_grace_holds_the_deadline_back():
    ordering = ScanDict()
    emitter = Emitter(ScanDict(), Policy(after=60.0, grace=30.0))
    run([ev("sent", t=NOW)], 1, ordering, emitter)
    assert emitter.on_marker(NOW + 80, 2, NOW + 80).events == []
    assert len(emitter.on_marker(NOW + 92, 3, NOW + 92).events) == 1


def test_delivered_in_time_cancels_the_deadline_and_its_index_entry(tables):
    ordering, emitter = tables
    run([ev("sent", t=NOW)], 1, ordering, emitter)
    assert any(k.startswith(DEADLINE) for k in emitter.table)
    run([ev("delivered", t=NOW + 10)], 2, ordering, emitter)
    assert deadlines.pending(emitter.table) == 0
    assert not any(k.startswith(DEADLINE) for k in emitter.table)
    assert emitter.on_marker(NOW + 1000, 3, NOW + 1000).events == []


def test_deadline_counts_from_provider_time(tables):
    ordering, emitter = tables
    run([ev("sent", t=NOW, occurred=NOW - 50)], 1, ordering, emitter)
    assert len(emitter.on_marker(NOW + 11, 2, NOW + 11).events) == 1


def test_no_deadline_without_delivery_receipts_or_when_disabled():
    ordering = ScanDict()
    emitter = Emitter(ScanDict(), Policy(after=60.0, disabled=frozenset({"meta/whatsapp"})))
    run([ev("sent", "ig1", provider="meta", channel="instagram")], 1, ordering, emitter)
    run([ev("sent", "wa1", provider="meta", channel="whatsapp")], 2, ordering, emitter)
    assert deadlines.pending(emitter.table) == 0
    assert emitter.on_marker(NOW + 10_000, 3, NOW + 10_000).events == []


def test_redelivered_marker_re_emits_the_same_delivery_unknown(tables):
    ordering, emitter = tables
    run([ev("sent")], 1, ordering, emitter)
    first = emitter.on_marker(NOW + 61, 2, NOW + 61)
    again = emitter.on_marker(NOW + 61, 2, NOW + 61)
    assert orjson.dumps(again.events) == orjson.dumps(first.events)
    assert again.repeated == 1 and again.fired == 0


def test_a_marker_acts_on_a_bounded_number_of_deadlines(tables):
    ordering, emitter = tables
    for i in range(MAX_FIRES + 20):
        run([ev("sent", f"m{i}", t=NOW)], i, ordering, emitter)
    first = emitter.on_marker(NOW + 100, 10_000, NOW + 100)
    second = emitter.on_marker(NOW + 100, 10_001, NOW + 101)
    assert (first.fired, second.fired) == (MAX_FIRES, 20)
    assert deadlines.pending(emitter.table) == 0


def test_pollable_providers_are_asked_once_before_delivery_unknown():
    ordering = ScanDict()
    policy = Policy(after=60.0, ask=frozenset({"ryze"}), ask_timeout=30.0)
    emitter = Emitter(ScanDict(), policy)
    run([ev("sent", "w1", provider="ryze", channel="whatsapp")], 1, ordering, emitter)
    asked = emitter.on_marker(NOW + 61, 2, NOW + 61)
    assert asked.events == [] and asked.asked == 1
    assert asked.requests[0][1]["provider_message_id"] == "w1"
    assert emitter.on_marker(NOW + 80, 3, NOW + 80).events == []  # waiting for the answer
    # the repeat of the asking marker asks again (same request), fires nothing
    assert emitter.on_marker(NOW + 61, 2, NOW + 61).requests == asked.requests
    out = emitter.on_marker(NOW + 92, 4, NOW + 92)
    assert statuses(out) == [(2, "delivery_unknown", "sent")]
    # told as of the original deadline, not the end of the wait for the answer
    assert out.events[0][1]["data"]["occurred_at"].startswith("2027-01-15T08:01:00")


def test_an_answer_newer_than_sent_cancels_the_asked_deadline():
    ordering = ScanDict()
    emitter = Emitter(ScanDict(), Policy(after=60.0, ask=frozenset({"ryze"}), ask_timeout=30.0))
    run([ev("sent", "w1", provider="ryze", channel="whatsapp")], 1, ordering, emitter)
    emitter.on_marker(NOW + 61, 2, NOW + 61)
    _, out = run(
        [ev("delivered", "w1", provider="ryze", channel="whatsapp", t=NOW + 70)],
        3,
        ordering,
        emitter,
    )
    assert statuses(out) == [(2, "delivered", "sent")]
    assert emitter.on_marker(NOW + 500, 4, NOW + 500).events == []


def test_filing_a_deadline_is_o1_and_a_marker_reads_only_what_is_due():
    """Deadlines up to 7 days ahead: a write touches one index key, a marker scans the
    due range only (no record grows with the horizon)."""
    table = ScanDict()
    for i in range(5000):
        deadlines.file(table, DEADLINE, NOW + 7 * 86400 - i * 60, f"m{i}")
    for i in range(10):
        deadlines.file(table, DEADLINE, NOW + i * 0.1, f"due{i}")
    assert max(len(v) for v in table.values()) == 0  # entries are empty values
    due = deadlines.due(table, DEADLINE, NOW + 2, 1000)
    assert sorted(k for _, k in due) == sorted(f"due{i}" for i in range(10))


def test_markers_merge_by_maximum_and_wait_for_every_partition():
    topics = {"raw.a": 2, "raw.b": 1}
    state = markers.merge(None, markers.raw_marker({"raw.a:0": 10.0}, topics, 2)["wm"])
    assert markers.raw_bound(state) is None  # raw.a:1 and raw.b:0 never heard of
    state = markers.merge(state, {"raw": {"raw.a:1": 8.0, "raw.b:0": 12.0}})
    assert markers.raw_bound(state) == 8.0
    state = markers.merge(state, {"raw": {"raw.a:1": 5.0}})  # an old owner's late claim
    assert markers.raw_bound(state) == 8.0
    assert markers.full_bound(state) is None  # conversations partitions not heard of yet
    state = markers.merge(state, markers.conversation_marker(0, 7.0)["wm"])
    state = markers.merge(state, markers.conversation_marker(1, 9.0)["wm"])
    assert markers.full_bound(state) == 7.0
    assert markers.advance(state, 7.0) and not markers.advance(state, 7.0)


def test_ordering_forwards_a_bound_only_when_it_advances():
    table = ScanDict()
    mark = markers.raw_marker({"raw.a:0": NOW}, {"raw.a": 1}, 1)["wm"]
    assert on_marker(table, mark) is None  # conversation partition 0 not heard of
    assert on_marker(table, markers.conversation_marker(0, NOW - 5)["wm"]) == NOW - 5
    assert on_marker(table, markers.conversation_marker(0, NOW - 5)["wm"]) is None
    assert on_marker(table, markers.conversation_marker(0, NOW + 5)["wm"]) == NOW


def test_retention_compacts_then_forgets_and_late_events_never_regress():
    day = 86400.0
    rules = Rules(retention=30 * day, marker_retention=365 * day)
    ordering = ScanDict()
    emitter = Emitter(
        ScanDict(), Policy(after=60.0, retention=30 * day, marker_retention=365 * day)
    )
    run([ev("sent", t=NOW), ev("delivered", t=NOW + 5)], 1, ordering, emitter)
    full = len(ordering["twilio:SM1"])

    def tick(moment: float, src: int) -> None:
        on_marker(ordering, {"raw": {"raw.a:0": moment}, "topics": {"raw.a": 1}, "nconv": 1}, rules)
        on_marker(ordering, markers.conversation_marker(0, moment)["wm"], rules)
        emitter.on_marker(moment, src, moment)

    tick(NOW + 29 * day, 10)
    assert len(ordering["twilio:SM1"]) == full  # not yet
    tick(NOW + 31 * day, 11)
    compact = orjson.loads(ordering["twilio:SM1"])
    assert compact["r"] == {} and compact["s"] == "delivered"
    assert "out" not in orjson.loads(emitter.table["twilio:SM1"])
    assert not any(k.startswith(EXPIRY) for k in ordering)
    # a late duplicate is stale, a late read is told with the next sequence
    items, out = run([ev("delivered", t=NOW + 32 * day)], 12, ordering, emitter)
    assert items[0]["o"] == "stale" and out.events == []
    _, out = run([ev("read", t=NOW + 32 * day)], 13, ordering, emitter)
    assert statuses(out) == [(3, "read", "delivered")]
    # the marker itself goes a year after; a relic for an unknown message is ignored
    tick(NOW + 32 * day + 400 * day, 14)
    assert "twilio:SM1" not in ordering and "twilio:SM1" not in emitter.table
    items = order_record(ordering, [ev("sent", "SM9", t=NOW + 433 * day, occurred=NOW)], 15, rules)
    assert items[0]["o"] == "ignored"


def test_retention_index_moves_in_o1():
    table = ScanDict()
    state: dict = {}
    retention.touch(table, state, "k", NOW, 3600 * 24)
    retention.touch(table, state, "k", NOW + 10, 3600 * 24)  # same hour: no write
    assert sum(1 for k in table if k.startswith(EXPIRY)) == 1
    retention.touch(table, state, "k", NOW + 7200, 3600 * 24)
    assert sum(1 for k in table if k.startswith(EXPIRY)) == 1
