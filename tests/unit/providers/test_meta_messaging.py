"""Messenger watermarks and echoes, Instagram read and echo; `/v1/events` conversations."""

from __future__ import annotations

import json
from typing import Any

import pytest

from processors.providers import events, meta
from processors.providers.base import Registration, Watermark

from . import harness as h

PAGE = "1234567890"
USER = "5678"
CONVERSATION = f"{PAGE}:{USER}"
IG_MID = (
    "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQxNDAwMDAwMDAwMDAwOjM0MDI4MjM2Njg0MTcxMDMwMTI0"
    "NDI3NjAxNjc2NDg0NjAxNDk5NzI6Njg0NDEwNjgxNjc0MjAwNDQ4MjQ1MDE0NDQ2NjQ5NzY"
)
MIDS = [
    "mid.1457764197618:41d102a3e1ae206a38",
    "mid.1457764198001:41d102a3e1ae206a39",
    "mid.1457764199002:41d102a3e1ae206a40",
]


def parse(name: str) -> Any:
    result, _ = h.parse_case(meta, h.Case(name, []))
    return result


# --- Instagram ----------------------------------------------------------------------------


def test_instagram_read_mid_is_read() -> None:
    result = parse("instagram_read.json")
    (event,) = result.events
    assert (event.message_key, event.status) == (f"meta:{IG_MID}", "read")
    assert event.channel == "instagram"
    assert event.account == "17841400000000000"
    assert event.occurred_at == pytest.approx(1569262485.349)
    assert (result.watermarks, result.registrations, result.dead) == ([], [], [])


def test_instagram_echo_is_sent() -> None:
    result = parse("instagram_echo.json")
    (event,) = result.events
    assert event.status == "sent" and event.provider_status == "echo"
    assert event.channel == "instagram"
    assert event.provider_message_id.startswith("aWdfZAG1")
    # Instagram reads name their message: no conversation index needed
    assert (result.watermarks, result.registrations, result.dead) == ([], [], [])


def test_instagram_read_without_mid_is_dead_lettered() -> None:
    doc = json.loads(h.fixture("meta", "instagram_read.json"))
    doc["entry"][0]["messaging"][0]["read"] = {"watermark": 1569262485349}
    result = meta.parse(h.request("meta", json.dumps(doc).encode()))
    assert [d.reason for d in result.dead] == [meta.WATERMARK_WITHOUT_CONVERSATION]
    assert result.watermarks == []


# --- Messenger ---------------------------------------------------------------------------


def test_messenger_echo_is_sent_and_registered() -> None:
    result = parse("messenger_echo.json")
    (event,) = result.events
    assert (event.status, event.channel, event.account) == ("sent", "messenger", PAGE)
    assert result.registrations == [
        Registration(
            conversation=CONVERSATION,
            provider="meta",
            provider_message_id="mid.1457764197618:41d102a3e1ae206a38",
            sent_at_ms=1457764197627,
            account=PAGE,
            channel="messenger",
        )
    ]


def test_messenger_read_watermark() -> None:
    result = parse("messenger_read_watermark.json")
    assert (result.events, result.dead) == ([], [])
    assert result.watermarks == [
        Watermark(
            conversation=CONVERSATION,
            kind="read",
            watermark_ms=1458668856253,
            observed_at=h.RECEIVED_AT,
            occurred_at=1458668856.463,
            account=PAGE,
        )
    ]


def test_messenger_delivery_with_mids_also_carries_its_watermark() -> None:
    result = parse("messenger_delivery.json")
    assert [e.status for e in result.events] == ["delivered"]
    assert [(w.kind, w.watermark_ms) for w in result.watermarks] == [("delivered", 1458668856253)]


def test_messenger_delivery_watermark_only() -> None:
    result = parse("messenger_delivery_watermark_only.json")
    assert (result.events, result.dead) == ([], [])
    (mark,) = result.watermarks
    assert (mark.conversation, mark.kind) == (CONVERSATION, "delivered")
    assert mark.watermark_ms == 1458668856253


def test_conversation_fixture_has_three_registrations_and_one_watermark() -> None:
    result = parse("messenger_conversation.json")
    assert [e.provider_message_id for e in result.events] == MIDS
    assert [r.provider_message_id for r in result.registrations] == MIDS
    assert [r.sent_at_ms for r in result.registrations] == [
        1457764197627,
        1457764198627,
        1457764199627,
    ]
    assert [(w.kind, w.watermark_ms) for w in result.watermarks] == [("read", 1457764200000)]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda m: m.pop("sender"),
        lambda m: m["sender"].update(id=None),
        lambda m: m["read"].update(watermark="soon"),
        lambda m: m["read"].pop("watermark"),
        lambda m: m["sender"].update(id="a:b"),  # would make an ambiguous conversation key
    ],
)
def test_unusable_watermark_is_dead_lettered(mutate: Any) -> None:
    doc = json.loads(h.fixture("meta", "messenger_read_watermark.json"))
    mutate(doc["entry"][0]["messaging"][0])
    result = meta.parse(h.request("meta", json.dumps(doc).encode()))
    assert [d.reason for d in result.dead] == [meta.WATERMARK_WITHOUT_CONVERSATION]
    assert result.watermarks == []


def test_echo_without_user_is_sent_but_not_registered() -> None:
    doc = json.loads(h.fixture("meta", "messenger_echo.json"))
    doc["entry"][0]["messaging"][0].pop("recipient")
    result = meta.parse(h.request("meta", json.dumps(doc).encode()))
    assert [e.status for e in result.events] == ["sent"]
    assert result.registrations == []


def test_watermark_seconds_are_tolerated() -> None:
    doc = json.loads(h.fixture("meta", "messenger_read_watermark.json"))
    doc["entry"][0]["messaging"][0]["read"]["watermark"] = 1458668856
    (mark,) = meta.parse(h.request("meta", json.dumps(doc).encode())).watermarks
    assert mark.watermark_ms == 1458668856000


def test_facts_serialize_for_the_conversation_topic() -> None:
    result = parse("messenger_conversation.json")
    for fact in [*result.registrations, *result.watermarks]:
        assert json.loads(json.dumps(fact.to_dict()))["conversation"] == CONVERSATION


# --- /v1/events with a conversation -------------------------------------------------------------


def report(**item: Any) -> Any:
    base = {
        "provider": "meta",
        "provider_message_id": "mid.x",
        "channel": "messenger",
        "status": "sent",
        "occurred_at": "2026-04-28T18:13:20Z",
        "conversation": CONVERSATION,
    }
    body = json.dumps({**base, **item}).encode()
    return events.parse(h.request("events", body))


def test_registration_from_v1_events() -> None:
    result = report()
    assert [e.status for e in result.events] == ["sent"]
    assert result.registrations == [
        Registration(
            conversation=CONVERSATION,
            provider="meta",
            provider_message_id="mid.x",
            sent_at_ms=1777400000000,
            channel="messenger",
        )
    ]


def test_send_time_failure_withdraws_the_message() -> None:
    result = report(status="failed", error={"code": "551", "category": "unreachable"})
    (registration,) = result.registrations
    assert registration.withdrawn


@pytest.mark.parametrize("status", ["clicked", "received", "replied"])
def test_non_progress_reports_do_not_register(status: str) -> None:
    result = report(status=status)
    assert len(result.events) == 1 and result.registrations == []


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ({"channel": "whatsapp"}, "only meaningful for channel messenger"),
        ({"conversation": "no-colon"}, "<page_id>:<user_psid>"),
        ({"conversation": "a:b:c"}, "<page_id>:<user_psid>"),
        ({"conversation": 12}, "<page_id>:<user_psid>"),
        ({"conversation": " :x"}, "<page_id>:<user_psid>"),
    ],
)
def test_bad_conversation_is_rejected(item: dict[str, Any], reason: str) -> None:
    result = report(**item)
    assert result.events == [] and result.registrations == []
    assert len(result.dead) == 1 and reason in result.dead[0].reason


def test_reports_without_conversation_are_unchanged() -> None:
    result = report(conversation=None)
    assert len(result.events) == 1 and result.registrations == []
