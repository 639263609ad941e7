"""Conversation watermarks (processors/stream/watermarks.py) and their routing in normalize."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from processors.kafka import raw
from processors.kafka.topics import partition_for
from processors.model import CanonicalEvent
from processors.providers import meta
from processors.providers.base import WebhookRequest
from processors.stream import watermarks as wm
from processors.stream.normalize import normalize

CONV = "1234567890:5678"
OTHER = "1234567890:9999"


def reg(mid: str, sent_at_ms: int, conversation: str = CONV, **extra: Any) -> dict[str, Any]:
    return {
        "conversation": conversation,
        "provider": "meta",
        "provider_message_id": mid,
        "sent_at_ms": sent_at_ms,
        "account": "1234567890",
        "channel": "messenger",
        "withdrawn": False,
        **extra,
    }


def mark(
    kind: str, ms: int, conversation: str = CONV, observed_at: float = 2000.0
) -> dict[str, Any]:
    return {
        "conversation": conversation,
        "kind": kind,
        "watermark_ms": ms,
        "observed_at": observed_at,
        "occurred_at": ms / 1000 + 1,
        "account": "1234567890",
        "provider": "meta",
        "channel": "messenger",
        "polled": False,
    }


def statuses(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["provider_message_id"], e["status"]) for e in events]


@pytest.fixture
def table() -> dict[str, bytes]:
    return {}


def test_read_watermark_covers_every_earlier_message(table):
    assert wm.expand_record(table, [reg("m1", 1000), reg("m2", 2000), reg("m3", 3000)], [], 1) == []
    out = wm.expand_record(table, [], [mark("read", 2500)], 2)
    assert statuses(out) == [("m1", "read"), ("m2", "read")]
    event = CanonicalEvent.from_dict(out[0])  # a well-formed canonical event
    assert (event.provider, event.channel, event.provider_status) == ("meta", "messenger", "read")
    assert (event.observed_at, event.occurred_at, event.account) == (2000.0, 3.5, "1234567890")
    assert statuses(wm.expand_record(table, [], [mark("read", 3000)], 3)) == [("m3", "read")]


def test_watermark_is_inclusive_and_idempotent(table):
    wm.expand_record(table, [reg("m1", 1000)], [], 1)
    assert statuses(wm.expand_record(table, [], [mark("delivered", 1000)], 2)) == [
        ("m1", "delivered")
    ]
    assert wm.expand_record(table, [], [mark("delivered", 1000)], 3) == []  # repeated
    assert wm.expand_record(table, [], [mark("delivered", 500)], 4) == []  # older
    assert statuses(wm.expand_record(table, [], [mark("read", 900)], 5)) == []  # before m1
    assert statuses(wm.expand_record(table, [], [mark("read", 1000)], 6)) == [("m1", "read")]
    assert wm.expand_record(table, [], [mark("delivered", 5000)], 7) == []  # read already


def test_delivered_provider_status_matches_meta_mid_receipts(table):
    wm.expand_record(table, [reg("m1", 1000)], [], 1)
    (event,) = wm.expand_record(table, [], [mark("delivered", 1000)], 2)
    assert event["provider_status"] == "delivery"  # same word as a delivery.mids receipt


def test_registration_after_its_watermark_expands_at_once(table):
    assert wm.expand_record(table, [], [mark("delivered", 5000), mark("read", 3000)], 1) == []
    assert statuses(wm.expand_record(table, [reg("early", 2000)], [], 2)) == [("early", "read")]
    assert statuses(wm.expand_record(table, [reg("mid", 4000)], [], 3)) == [("mid", "delivered")]
    assert wm.expand_record(table, [reg("late", 6000)], [], 4) == []
    out = wm.expand_record(table, [], [mark("read", 6000)], 5)
    assert statuses(out) == [("mid", "read"), ("late", "read")]


def test_registration_and_watermark_in_one_record(table):
    out = wm.expand_record(table, [reg("m1", 1000), reg("m2", 2000)], [mark("read", 1500)], 1)
    assert statuses(out) == [("m1", "read")]


def test_duplicate_registrations_keep_one_entry(table):
    wm.expand_record(table, [reg("m1", 1000), reg("m1", 1200)], [], 1)
    wm.expand_record(table, [reg("m1", 900)], [], 2)
    assert statuses(wm.expand_record(table, [], [mark("read", 1000)], 3)) == [("m1", "read")]
    assert len(wm.load(table[CONV])["m"]) == 1


def test_conversations_are_separate(table):
    wm.expand_record(table, [reg("a", 1000), reg("b", 1000, conversation=OTHER)], [], 1)
    assert statuses(wm.expand_record(table, [], [mark("read", 2000)], 2)) == [("a", "read")]
    assert {k for k in table if not k.startswith("~")} == {CONV, OTHER}


def test_withdrawn_message_is_never_expanded(table):
    wm.expand_record(table, [reg("ok", 1000), reg("bad", 1100)], [], 1)
    wm.expand_record(table, [reg("bad", 1100, withdrawn=True)], [], 2)
    wm.expand_record(table, [reg("bad", 1100)], [], 3)  # a late "sent" cannot bring it back
    assert statuses(wm.expand_record(table, [], [mark("read", 2000)], 4)) == [("ok", "read")]


def test_index_is_capped_to_the_newest(table, monkeypatch):
    monkeypatch.setattr(wm, "MAX_MESSAGES", 5)
    wm.expand_record(table, [reg(f"m{i}", 1000 + i) for i in range(8)], [], 1)
    kept = [e[wm.MID] for e in wm.load(table[CONV])["m"]]
    assert kept == ["m3", "m4", "m5", "m6", "m7"]
    assert len(wm.expand_record(table, [], [mark("read", 10_000)], 2)) == 5


def test_withdrawn_list_is_capped(table, monkeypatch):
    monkeypatch.setattr(wm, "MAX_WITHDRAWN", 3)
    wm.expand_record(table, [reg(f"w{i}", 1000, withdrawn=True) for i in range(6)], [], 1)
    assert wm.load(table[CONV])["w"] == [["meta", "w3"], ["meta", "w4"], ["meta", "w5"]]


def test_redelivered_record_repeats_what_it_said(table):
    wm.expand_record(table, [reg("m1", 1000), reg("m2", 2000)], [], 10)
    first = wm.expand_record(table, [], [mark("delivered", 2500)], 11)
    assert statuses(first) == [("m1", "delivered"), ("m2", "delivered")]
    # a crash after the table write but before the canonical send: offset 11 comes again
    again = wm.expand_record(table, [], [mark("delivered", 2500)], 11)
    assert statuses(again) == statuses(first)
    # any other record with the same watermark says nothing
    assert wm.expand_record(table, [], [mark("delivered", 2500)], 12) == []


def test_redelivered_registration_repeats_its_immediate_expansion(table):
    wm.expand_record(table, [], [mark("read", 5000)], 1)
    first = wm.expand_record(table, [reg("m1", 1000)], [], 2)
    assert wm.expand_record(table, [reg("m1", 1000)], [], 2) == first


def test_unchanged_state_is_not_rewritten(table):
    class Counting(dict):
        writes = 0

        def __setitem__(self, key, value):
            Counting.writes += 1
            super().__setitem__(key, value)

    counting = Counting()
    wm.expand_record(counting, [reg("m1", 1000)], [], 1)
    after_first = Counting.writes  # the state and its retention index entry
    wm.expand_record(counting, [reg("m1", 1000)], [], 2)  # known already: nothing changes
    assert Counting.writes == after_first == 2


def test_unknown_kind_is_ignored(table):
    wm.expand_record(table, [reg("m1", 1000)], [], 1)
    assert wm.expand_record(table, [], [mark("played", 2000)], 2) == []


# --- routing in normalize -----------------------------------------------------------------


def raw_record(body: bytes) -> tuple[bytes, list[tuple[str, bytes]]]:
    request = WebhookRequest(
        provider="meta",
        method="POST",
        url="https://status.example.com/webhooks/meta",
        headers={"content-type": "application/json"},
        body=body,
        received_at=1_777_400_000.0,
    )
    record = raw.encode("raw.meta", request, meta.SIGNATURE_HEADERS)
    return record.value, record.headers


def test_normalize_routes_facts_by_conversation_partition():
    from pathlib import Path

    body = (Path(__file__).parents[1] / "fixtures/meta/messenger_conversation.json").read_bytes()
    value, headers = raw_record(body)
    result = normalize(value, headers, 4, "raw.meta:0:7")
    assert result.events == 3  # the echoes' `sent`
    (partition,) = result.conversations
    assert partition == partition_for(CONV, 4)
    facts = result.conversations[partition]
    assert [r["provider_message_id"] for r in facts["registrations"]] == [
        "mid.1457764197618:41d102a3e1ae206a38",
        "mid.1457764198001:41d102a3e1ae206a39",
        "mid.1457764199002:41d102a3e1ae206a40",
    ]
    assert [w["kind"] for w in facts["watermarks"]] == ["read"]
    orjson.dumps(facts)
    # ...and the conversation agent turns them into `read` for all three
    out = wm.expand_record({}, facts["registrations"], facts["watermarks"], 0)
    assert [e["status"] for e in out] == ["read"] * 3


def test_normalize_without_facts_has_no_conversations():
    from pathlib import Path

    body = (Path(__file__).parents[1] / "fixtures/meta/delivered.json").read_bytes()
    value, headers = raw_record(body)
    assert normalize(value, headers, 4, "raw.meta:0:8").conversations == {}


# --- the conversation agent's topic and table ---------------------------------------------


def test_worker_tables_have_their_changelogs_created_up_front(tmp_path):
    """all_topics() names every Faust changelog the worker declares (topics.TABLES)."""
    from processors import providers
    from processors.config import Settings
    from processors.kafka.topics import CONVERSATIONS, all_topics
    from processors.stream.app import build

    settings = Settings(data_dir=str(tmp_path), topic_prefix="tunit.")
    app = build(settings)
    changelogs = {table.changelog_topic.get_topic_name() for table in app.tables.values()}
    names = all_topics(settings, providers.REGISTRY)
    assert "conversations" in app.tables
    assert changelogs <= set(names)
    assert settings.topic(CONVERSATIONS) in names
