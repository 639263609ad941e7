"""The pure part of `msgstatus rebuild`: comparing two generations of a message and the
correction events and table values the switch writes (processors/ops/corrections.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from processors.ops import corrections as c
from processors.ops.switch import PENDING_KEY, Snapshot, Tally, plan_partition
from processors.stream import cloudevents

KEY = "twilio:SM1"
META = {"provider": "twilio", "provider_message_id": "SM1", "channel": "sms", "account": "AC1"}
T0 = 1_700_000_000.0
SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "schemas" / "message.status.schema.json").read_text()
)
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)
ERR = {"code": "30007", "category": "carrier_filtered", "description": "Message filtered"}


def history(*steps: Any, start: int = 1) -> list[dict[str, Any]]:
    """Events as the emitter publishes them: steps are statuses or (status, implied,
    error) tuples; previous_status follows the statuses told."""
    out, told = [], None
    for n, step in enumerate(steps, start=start):
        status, implied, error = (step, [], None) if isinstance(step, str) else step
        out.append(
            cloudevents.build(
                meta=META,
                status=status,
                previous_status=told,
                implied=list(implied),
                sequence=n,
                provider_status=status,
                error=error,
                occurred_at=None,
                observed_at=T0 + n,
                emitted_at=T0 + n + 0.5,
            )
        )
        if status not in c.ENGAGEMENT:
            told = status
    return out


def judge(live: list[dict], rebuilt: list[dict], live_seq: int | None = None, **kw: Any):
    found = c.published(live)
    seq = found.last if live_seq is None else live_seq
    rebuild = kw.get("rebuild", "7")
    return c.judge(KEY, found, seq, c.published(rebuilt), kw.get("horizon"), rebuild, T0 + 100)


def statuses(events: list[dict]) -> list[tuple[int, str]]:
    return [(e["data"]["sequence"], e["data"]["status"]) for e in events]


def test_same_history_is_unchanged_and_emits_nothing():
    verdict = judge(history("sent", "delivered"), history("sent", "delivered"))
    assert verdict.kind == c.UNCHANGED and verdict.events == [] and verdict.sequence == 2


@pytest.mark.parametrize(
    "live, rebuilt",
    [
        # another interleaving of raw partitions: delivered first, sent implied
        (history("sent", "delivered"), history(("delivered", ["sent"], None))),
        # the shadow fired delivery_unknown, the live one has not yet (or the other way)
        (history("sent"), history("sent", "delivery_unknown")),
        (history("sent", "delivery_unknown", "delivered"), history("sent", "delivered")),
        # a read that implies delivered, or delivered told on its own
        (history("sent", ("read", ["delivered"], None)), history("sent", "delivered", "read")),
        # a failure read before its sent (a replayed copy in another raw partition)
        (history("sent", ("undelivered", [], ERR)), history(("undelivered", [], ERR))),
    ],
)
def test_same_outcome_by_another_path_is_unchanged(live, rebuilt):
    verdict = judge(live, rebuilt)
    assert verdict.kind == c.UNCHANGED and verdict.events == []


def test_regression_is_published_as_marked_correction_continuing_the_sequence():
    live = history("sent", "delivered")
    fixed = history("sent", ("undelivered", [], ERR))
    verdict = judge(live, fixed)
    assert verdict.kind == c.CHANGED
    assert statuses(verdict.events) == [(3, "undelivered")]
    data = verdict.events[0]["data"]
    assert data["previous_status"] == "delivered"  # what consumers were told last
    assert data["correction"] == {"rebuild": "7", "replaces_sequence": 2}
    assert data["error"] == ERR
    assert verdict.events[0]["id"] == cloudevents.event_id(KEY, 3, "undelivered")
    assert verdict.sequence == 3
    assert not list(VALIDATOR.iter_errors(verdict.events[0]))
    # the shared prefix (sent, #1) keeps its event: no id of the live history is reused
    assert {e["id"] for e in verdict.events}.isdisjoint({e["id"] for e in live})


def test_statuses_the_fix_removes_restate_the_rebuilt_final_status():
    verdict = judge(history("sent", "delivered", "read"), history("sent"))
    assert statuses(verdict.events) == [(4, "sent")]
    data = verdict.events[0]["data"]
    assert data["correction"]["replaces_sequence"] == 2 and data["implied"] == []
    assert data["previous_status"] == "read"


def test_engagement_withdrawn_restates_the_status():
    verdict = judge(history("sent", "delivered", "clicked"), history("sent", "delivered"))
    assert statuses(verdict.events) == [(4, "delivered")]
    assert verdict.events[0]["data"]["correction"]["replaces_sequence"] == 3


def test_additions_only_withdraw_nothing_and_do_not_restate():
    verdict = judge(history("sent", "delivered"), history("sent", "delivered", "clicked"))
    assert statuses(verdict.events) == [(3, "clicked")]
    assert verdict.events[0]["data"]["correction"]["replaces_sequence"] is None
    assert verdict.events[0]["type"] == "message.engagement"


def test_several_corrections_chain_previous_status():
    live = history("sent", "delivered", "read")
    fixed = history("sent", ("undelivered", [], ERR), ("delivered", [], None), "clicked")
    verdict = judge(live, fixed)
    assert statuses(verdict.events) == [(4, "undelivered"), (5, "delivered"), (6, "clicked")]
    assert [e["data"]["previous_status"] for e in verdict.events] == [
        "read",
        "undelivered",
        "delivered",
    ]
    assert {e["data"]["correction"]["replaces_sequence"] for e in verdict.events} == {2}


def test_error_change_alone_is_a_correction():
    unknown = {"code": "30007", "category": "unknown", "description": None}
    live = history("sent", ("undelivered", [], unknown))
    verdict = judge(live, history("sent", ("undelivered", [], ERR)))
    assert verdict.kind == c.CHANGED and statuses(verdict.events) == [(3, "undelivered")]


def test_rebuild_after_a_rebuild_finds_nothing_to_change():
    """The live history now ends in a correction: its effective history is the rebuilt
    one, so a second rebuild with the same mapping emits nothing."""
    live = history("sent", "delivered")
    fixed = history("sent", ("undelivered", [], ERR))
    first = judge(live, fixed)
    again = judge(live + first.events, fixed)
    assert again.kind == c.UNCHANGED and again.events == [] and again.sequence == 3
    # and a later, different fix corrects the corrected history again, continuing it
    third = judge(live + first.events, history("sent", "delivered", "read"), rebuild="8")
    assert statuses(third.events) == [(4, "delivered"), (5, "read")]
    # withdraws the first correction's undelivered (#3); #2 was withdrawn by it already
    assert third.events[0]["data"]["correction"] == {"rebuild": "8", "replaces_sequence": 3}
    effective = c.effective(c.published(live + first.events + third.events).entries())
    assert [e.status for e in effective] == ["sent", "delivered", "read"]


def test_events_of_one_correction_do_not_withdraw_each_other():
    live = history("sent", "delivered")
    verdict = judge(live, history("sent", ("undelivered", [], ERR), "clicked"))
    effective = c.effective(c.published(live + verdict.events).entries())
    assert [(e.sequence, e.status) for e in effective] == [
        (1, "sent"),
        (3, "undelivered"),
        (4, "clicked"),
    ]


def test_message_only_the_rebuild_knows_is_new_from_sequence_one():
    verdict = judge([], history("sent", "delivered"), live_seq=0)
    assert verdict.kind == c.NEW
    assert statuses(verdict.events) == [(1, "sent"), (2, "delivered")]
    assert all(e["data"]["correction"]["replaces_sequence"] is None for e in verdict.events)
    assert verdict.events[1]["data"]["previous_status"] == "sent"


def test_message_only_the_live_state_knows_is_left_alone():
    verdict = judge(history("sent"), [])
    assert verdict.kind == c.MISSING and verdict.events == []


def test_gaps_or_raw_records_past_retention_leave_the_message_alone():
    full = history("sent", "delivered")
    assert judge(full[1:], history("sent")).kind == c.INCOMPLETE  # #1 gone from the topic
    assert judge(full, history("sent"), live_seq=3).kind == c.INCOMPLETE  # state is ahead
    assert judge(full, history("sent"), horizon=T0 + 1.5).kind == c.INCOMPLETE
    assert judge(full, history("sent"), horizon=T0 + 0.5).kind == c.CHANGED


def test_sequence_carrying_two_ids_is_never_built_upon():
    live = history("sent", "delivered")
    other = history("sent", "read")[1]
    assert judge([*live, other], history("sent")).kind == c.INCOMPLETE


def test_corrections_are_deterministic():
    """A switch resumed after a crash publishes the same bytes (same ids)."""
    live, fixed = history("sent", "delivered"), history("sent", "undelivered")
    assert judge(live, fixed).events == judge(live, fixed).events


def test_redelivered_duplicates_count_once():
    live = history("sent", "delivered")
    verdict = judge(live + live, history("sent", "delivered"))
    assert verdict.kind == c.UNCHANGED and verdict.sequence == 2


# --- table values ---------------------------------------------------------------------


def test_ordering_value_unbinds_receipts_and_continues_the_index():
    rebuilt = orjson.dumps(
        {
            "s": "undelivered",
            "i": 2,
            "a": ["sent", "undelivered"],
            "c": 0,
            "r": {"sent|sent": [10, "applied", 1, None, []], "undelivered|x": [11, "applied", 2]},
            "x": 472222,
        }
    )
    live = orjson.dumps({"s": "read", "i": 3, "a": [], "c": 0, "r": {}})
    value, index, keys = c.ordering_value(KEY, rebuilt, live, {"li": 3})
    state = orjson.loads(value)
    assert index == 3 and state["i"] == 3
    assert all(r[0] == c.UNBOUND for r in state["r"].values())
    assert state["r"]["sent|sent"][1:] == ["applied", 1, None, []]
    assert keys == [f"~x:000000472222:{KEY}"]
    _, index, _ = c.ordering_value(KEY, rebuilt, None, None)
    assert index == 2


def test_emitter_value_sets_sequence_and_files_deadline():
    rebuilt = {
        "seq": 1,
        "li": 1,
        "told": "sent",
        "dl": T0 + 3600.5,
        "m": META,
        "out": {"1": [5]},
        "ask": [17, T0],
    }
    value, keys = c.emitter_value(KEY, rebuilt, 4, 6)
    state = orjson.loads(value)
    assert (state["seq"], state["li"], state["out"], state["told"]) == (4, 6, {}, "sent")
    assert state["ask"] == [c.UNBOUND, T0]
    assert keys == [f"~d:{int(T0 + 3600):012d}:{KEY}"]
    assert rebuilt["seq"] == 1  # the input is not modified


def test_read_model_doc_follows_the_final_status():
    verdict = judge(history("sent", "delivered"), history("sent", ("undelivered", [], ERR)))
    doc = c.read_model_doc({"told": "undelivered", "seq": 3}, verdict.events)
    assert doc["status"] == "undelivered" and doc["sequence"] == 3 and doc["error"] == ERR
    note = c.read_model_note(verdict.events[0])
    assert note["sequence"] == 3 and note["outcome"] == "applied"


def test_schema_refuses_a_malformed_correction():
    event = judge(history("sent", "delivered"), history("sent", "undelivered")).events[0]
    assert not list(VALIDATOR.iter_errors(event))
    event["data"]["correction"] = {"rebuild": "7"}
    assert list(VALIDATOR.iter_errors(event))


# --- one partition's plan (processors/ops/switch.py) ------------------------------------


def _ordering(status: str, index: int, src: int = 40) -> bytes:
    return orjson.dumps(
        {"s": status, "i": index, "a": [status], "c": 0, "r": {f"{status}|x": [src, "applied"]}}
    )


def _emitter(seq: int, told: str, dl: float | None = None) -> bytes:
    return orjson.dumps({"seq": seq, "li": seq, "told": told, "dl": dl, "m": META, "out": {}})


def test_partition_plan_switches_states_and_corrects_only_changed_messages():
    same, fixed, gone, other = "twilio:SAME", "twilio:SM1", "twilio:GONE", "twilio:NEW"
    old = Snapshot(
        events={
            same: c.published(history("sent")),
            fixed: c.published(history("sent", "delivered")),
            gone: c.published(history("sent")),
        },
        ordering={same: _ordering("sent", 1), fixed: _ordering("delivered", 2)},
        emitter={
            same: _emitter(1, "sent", T0 + 3600),
            fixed: _emitter(2, "delivered"),
            gone: _emitter(1, "sent"),
            PENDING_KEY: b"5",
        },
    )
    new = Snapshot(
        events={
            same: c.published(history("sent")),
            fixed: c.published(history("sent", ("undelivered", [], ERR))),
            other: c.published(history("sent")),
        },
        ordering={
            same: _ordering("sent", 1),
            fixed: _ordering("undelivered", 2),
            other: _ordering("sent", 1),
        },
        emitter={
            same: _emitter(1, "sent", T0 + 3600),
            fixed: _emitter(2, "undelivered"),
            other: _emitter(1, "sent", T0 + 7200),
        },
    )
    tally = Tally()
    plan = plan_partition(2, old, new, None, "9", T0 + 100, tally)
    by_key = {e["key"]: e for e in plan.entries}
    assert set(by_key) == {same, fixed, other}  # `gone` (live only) is left alone
    assert "events" not in by_key[same] and "emitter" not in by_key[same]
    assert statuses(by_key[fixed]["events"]) == [(3, "undelivered")]
    switched = orjson.loads(by_key[fixed]["emitter"])
    assert (switched["seq"], switched["told"], switched["li"]) == (3, "undelivered", 2)
    assert orjson.loads(by_key[fixed]["ordering"])["r"]["undelivered|x"][0] == c.UNBOUND
    assert by_key[fixed]["doc"]["status"] == "undelivered"
    assert statuses(by_key[other]["events"]) == [(1, "sent")]
    assert plan.pending == 6  # the new message waits for a deadline now
    assert tally.kinds == {c.UNCHANGED: 1, c.CHANGED: 1, c.NEW: 1, c.MISSING: 1}
