"""The read-model projector's pure part: which Redis writes one fetch becomes."""

from __future__ import annotations

from collections import namedtuple

import orjson
import pytest
from aiokafka.structs import TopicPartition
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from processors.model import rfc3339
from processors.store.projector import build, partition_name
from processors.store.readmodel import Batch, ReadModel, history, is_transient
from processors.stream import cloudevents, markers

Record = namedtuple("Record", "key value offset timestamp")
STATUS = "p.message.status"
TRANSITIONS = "p.status.transitions"
META = {"provider": "crm", "provider_message_id": "m1", "channel": "sms", "account": "shop"}
T0 = 1_763_909_717.1234


def status_record(offset: int, sequence: int, status: str, previous: str | None, **kw) -> Record:
    event = cloudevents.build(
        meta=META,
        status=status,
        previous_status=previous,
        implied=[],
        sequence=sequence,
        provider_status=kw.get("provider_status", status),
        error=kw.get("error"),
        occurred_at=T0 + sequence,
        observed_at=T0 + sequence + 0.5,
        emitted_at=T0 + sequence + 0.6,
    )
    return Record(b"crm:m1", orjson.dumps(event), offset, int((T0 + sequence) * 1000))


def transitions_record(offset: int, *items: tuple[str, str, float]) -> Record:
    body = {
        "items": [
            {
                "o": outcome,
                "i": 0,
                "ev": {
                    **META,
                    "status": status,
                    "provider_status": status,
                    "occurred_at": None,
                    "observed_at": observed,
                },
            }
            for outcome, status, observed in items
        ]
    }
    return Record(b"crm:m1", orjson.dumps(body), offset, int(T0 * 1000))


def test_documents_come_from_the_newest_event_and_history_from_both_topics() -> None:
    status_tp, trans_tp = TopicPartition(STATUS, 0), TopicPartition(TRANSITIONS, 0)
    records = {
        status_tp: [
            status_record(10, 1, "sent", None),
            status_record(11, 2, "delivered", "sent"),
            status_record(12, 3, "opened", "delivered"),  # engagement: status stays
        ],
        trans_tp: [
            transitions_record(40, ("applied", "sent", T0), ("stale", "queued", T0 + 9.0001)),
            Record(markers.KEY, orjson.dumps({"wm": {"bound": T0}}), 41, 0),
            transitions_record(42, ("duplicate", "delivered", T0 + 9.0003)),
        ],
    }
    batch, unreadable = build(records, STATUS, {status_tp, trans_tp})
    assert unreadable == 0
    assert batch.offsets == {f"{STATUS}:0": 13, f"{TRANSITIONS}:0": 43}
    writes = batch.messages["crm:m1"]
    assert writes.doc == {
        "message_key": "crm:m1",
        "provider": "crm",
        "provider_message_id": "m1",
        "channel": "sms",
        "account": "shop",
        "status": "delivered",
        "sequence": 3,
        "error": None,
        "updated_at": rfc3339(T0 + 3.6),
    }
    entries = sorted(writes.history.items(), key=lambda kv: (kv[1], kv[0]))
    got = [orjson.loads(member) for member, _ in entries]
    assert [(e["status"], e["outcome"], e.get("sequence")) for e in got] == [
        ("sent", "applied", 1),
        ("delivered", "applied", 2),
        ("opened", "applied", 3),
        ("queued", "stale", None),
        ("delivered", "duplicate", None),
    ]
    # the applied ones carry exactly the event's times; scores are whole milliseconds
    assert got[1]["observed_at"] == rfc3339(T0 + 2.5)
    assert all(score == round(score, 3) for _, score in entries)
    # two receipts in the same millisecond stay two entries
    assert entries[3][1] == entries[4][1] and entries[3][0] != entries[4][0]
    assert writes.newest == pytest.approx(T0 + 3, abs=0.001)


def test_unreadable_records_are_counted_and_offsets_only_for_owned_partitions() -> None:
    mine, gone = TopicPartition(STATUS, 0), TopicPartition(STATUS, 1)
    records = {
        mine: [Record(b"x", b"not json", 5, 0), status_record(6, 1, "sent", None)],
        gone: [status_record(7, 1, "sent", None)],
    }
    batch, unreadable = build(records, STATUS, {mine})
    assert unreadable == 1
    assert batch.offsets == {partition_name(mine): 7}  # a revoked partition is not moved
    assert batch.messages["crm:m1"].doc["sequence"] == 1


def test_reading_history_drops_the_sort_field_and_repeats_of_one_sequence() -> None:
    old_format = {"status": "sent", "outcome": "applied", "sequence": 1, "observed_ts": T0 + 0.5}
    new_format = {"status": "sent", "outcome": "applied", "sequence": 1, "observed_ts": 1.0}
    stale = {"status": "queued", "outcome": "stale", "observed_ts": T0}
    out = history([orjson.dumps(x) for x in (old_format, stale, new_format, stale)])
    assert out == [
        {"status": "sent", "outcome": "applied", "sequence": 1},
        {"status": "queued", "outcome": "stale"},
        {"status": "queued", "outcome": "stale"},
    ]


def test_keys_expire_retention_after_their_newest_record() -> None:
    model = ReadModel("redis://127.0.0.1:1/0", "p.")  # never connects in this test
    batch = Batch()
    batch.message("crm:new").newest = 1000.0
    batch.message("crm:old").newest = 10.0
    args = {key: values for key, _, values in model._message_args(batch, 100.0, 1050.0)}
    assert args["crm:new"][0] == 50_000  # ms left of the retention
    assert args["crm:old"][0] == 1  # already past it: gone at once, not kept a full period
    forever = {key: values for key, _, values in model._message_args(batch, 0.0, 1050.0)}
    assert forever["crm:new"][0] == ""


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (RedisConnectionError("refused"), True),
        (RedisTimeoutError("slow"), True),
        (ConnectionRefusedError(), True),
        (ResponseError("OOM command not allowed when used memory > 'maxmemory'"), True),
        (ResponseError("READONLY You can't write against a read only replica."), True),
        (ResponseError("LOADING Redis is loading the dataset in memory"), True),
        (ResponseError("WRONGTYPE Operation against a key holding the wrong kind"), False),
        (ResponseError("ERR Error running script"), False),
    ],
)
def test_which_redis_errors_are_waited_out(exc: Exception, transient: bool) -> None:
    assert is_transient(exc) is transient
