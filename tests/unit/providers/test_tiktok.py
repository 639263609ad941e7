"""TikTok Business Messaging: read events only (assumed shape), token auth."""

from __future__ import annotations

import json

import pytest

from processors.model import NO_DELIVERY_RECEIPTS
from processors.providers import tiktok
from processors.providers.base import FramingError

from . import harness as h

TOKEN = "tiktok-relay-token-0123456789"
MSG = "tiktok:msg-730000000000000000"

CASES = [
    h.Case(
        "read.json",
        [
            (f"{MSG}1", "read", "message.read", "tiktok", None),
            (f"{MSG}2", "read", "message.read", "tiktok", None),
        ],
    ),
    h.Case("read_content_string.json", [(f"{MSG}3", "read", "im_mark_read_msg", "tiktok", None)]),
    h.Case("inbound_message.json", [], ignored=1),
    h.Case("read_conversation_only.json", [], dead=["conversation-wide read"]),
    h.Case("unknown_event.json", [], dead=["unknown tiktok event 'message.teleported'"]),
]


def test_account_and_time() -> None:
    result, _ = h.parse_case(tiktok, h.Case("read.json", []))
    assert {(e.account, e.occurred_at) for e in result.events} == {
        ("7123456789012345678", 1777386650.0)
    }
    result, _ = h.parse_case(tiktok, h.Case("read_content_string.json", []))
    assert result.events[0].account == "awx8k2m1n3p4q5r6"  # no business_id: the client key


def test_tiktok_never_gets_delivery_unknown() -> None:
    assert tiktok.CHANNEL in NO_DELIVERY_RECEIPTS  # PROVIDERS.md: TikTok has no delivery receipts


# PROVIDERS.md "TikTok Business Messaging: read events only".
@pytest.mark.parametrize("event", ["message.read", "im_mark_read_msg"])
def test_read_events(event: str) -> None:
    body = json.dumps({"event": event, "message_id": "m-1", "create_time": 1}).encode()
    (read,) = tiktok.parse(h.request("tiktok", body)).events
    assert (read.status, read.provider_status, read.error) == ("read", event, None)


@pytest.mark.parametrize(
    "event", ["message.received", "im_receive_msg", "im_send_msg", "im_enter_direct_msg"]
)
def test_other_known_events_are_ignored(event: str) -> None:
    body = json.dumps({"event": event, "content": {"message_id": "m-1"}}).encode()
    result = tiktok.parse(h.request("tiktok", body))
    assert (result.events, result.ignored, result.dead) == ([], 1, [])


def test_array_of_events_and_bad_ids() -> None:
    events = [
        {"event": "message.read", "message_ids": ["a", 7, None, {"x": 1}]},
        {"event": "message.read", "content": "{not json"},
        {"nothing": True},
    ]
    result = tiktok.parse(h.request("tiktok", json.dumps(events).encode()))
    assert [e.provider_message_id for e in result.events] == ["a", "7"]
    assert [d.reason for d in result.dead] == [
        "message id is not a string",
        "message id is not a string",
        "read event names no message (conversation-wide read)",
        "event without a name",
    ]


@pytest.mark.parametrize("body", [b"", b"x", b"1", b'"message.read"', b"{"])
def test_malformed_body_is_a_framing_error(body: bytes) -> None:
    with pytest.raises(FramingError):
        tiktok.parse(h.request("tiktok", body))


# --- authentication -------------------------------------------------------------------


def signed(body: bytes, secret: str) -> h.WebhookRequest:
    return h.request("tiktok", body, headers=tiktok.sign(h.URL, body, secret))


CONTRACT = h.SignatureContract(
    module=tiktok,
    secret_name="TIKTOK_TOKEN",
    secret=TOKEN,
    body=h.fixture("tiktok", "read.json"),
    sign=signed,
    auth_headers=("token",),
    body_bound=False,
)
