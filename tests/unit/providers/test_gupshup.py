"""Gupshup: v2 and v3 message events, Gupshup vs WhatsApp error codes, id rules (gsId),
the token in the callback URL."""

from __future__ import annotations

import json

import pytest

from processors.providers import gupshup
from processors.providers.base import FramingError

from . import harness as h

TOKEN = "gupshup-callback-token-0123456789"
GS = "ee4a68a0-1203-4c85-8dc3-49d0b3226a35"
APP = "7d1b9a1e-8b2c-4d3e-9f4a-5b6c7d8e9f0a"
M = gupshup


def row(key: str, status: str, word: str, category: str | None = None) -> h.Row:
    return (f"gupshup:{key}", status, word, "whatsapp", category)


CASES = [
    h.Case("v2_enqueued.json", [row(GS, "queued", "enqueued")]),
    h.Case("v2_sent.json", [row(GS, "sent", "sent")]),
    h.Case("v2_delivered.json", [row(GS, "delivered", "delivered")]),
    h.Case("v2_read.json", [row(GS, "read", "read")]),
    h.Case(
        "v2_failed_1002.json",
        [row("a1b2c3d4-1203-4c85-8dc3-49d0b3226a36", "failed", "failed", "invalid_number")],
    ),
    h.Case(
        "v2_failed_131047.json",
        [row("b2c3d4e5-1203-4c85-8dc3-49d0b3226a37", "undelivered", "failed", "outside_window")],
    ),
    h.Case("v2_delivered_without_gsid.json", [], dead=["gupshup event without gsId"]),
    h.Case("v2_inbound_message.json", [], ignored=1),
    h.Case("v2_unknown_status.json", [], dead=["unknown gupshup status 'teleported'"]),
    h.Case(
        "v3_statuses.json",
        [
            row("d4e5f6a7-1203-4c85-8dc3-49d0b3226a39", "delivered", "delivered"),
            row("e5f6a7b8-1203-4c85-8dc3-49d0b3226a40", "undelivered", "failed", "unreachable"),
        ],
        dead=["gupshup v3 status without gs_id"],
    ),
]


def test_times_and_accounts() -> None:
    result, _ = h.parse_case(M, h.Case("v2_delivered.json", []))
    (event,) = result.events
    assert (event.occurred_at, event.account) == (1585344475.0, "DemoAPI")  # payload.ts
    result, _ = h.parse_case(M, h.Case("v2_enqueued.json", []))
    assert result.events[0].occurred_at == 1580546677.7  # envelope ms, no inner ts
    result, _ = h.parse_case(M, h.Case("v3_statuses.json", []))
    assert [e.occurred_at for e in result.events] == [1750263773.0, 1750263775.0]  # s and ms
    assert {e.account for e in result.events} == {APP}


def _v2(word: str, **inner: object) -> bytes:
    payload = {"id": "own-id", "gsId": "gs-1", "type": word, "destination": "91", "payload": inner}
    return json.dumps(
        {"app": "A", "timestamp": 1, "type": "message-event", "payload": payload}
    ).encode()


# PROVIDERS-NEXT.md "Gupshup": every status word, keyed by the Gupshup id either way.
@pytest.mark.parametrize(
    ("word", "status", "key"),
    [
        ("enqueued", "queued", "own-id"),
        ("sent", "sent", "gs-1"),
        ("delivered", "delivered", "gs-1"),
        ("read", "read", "gs-1"),
        ("failed", "failed", "own-id"),
    ],
)
def test_status_mapping(word: str, status: str, key: str) -> None:
    (event,) = M.parse(h.request(M.NAME, _v2(word))).events
    assert (event.provider_message_id, event.status, event.provider_status) == (key, status, word)
    assert (event.error is not None) == (status == "failed")


def test_deleted_is_inbound_and_ignored() -> None:
    assert M.parse(h.request(M.NAME, _v2("deleted"))).ignored == 1


@pytest.mark.parametrize(
    ("code", "status", "category"),
    [
        ("1001", "failed", "account_problem"),
        ("1002", "failed", "invalid_number"),
        ("1003", "failed", "account_problem"),
        ("1004", "failed", "outside_window"),
        ("1005", "failed", "outside_window"),
        ("1006", "failed", "opted_out"),
        ("1007", "failed", "outside_window"),
        ("1008", "failed", "opted_out"),
        ("1010", "failed", "content_rejected"),
        ("1011", "failed", "content_rejected"),
        ("1012", "failed", "opted_out"),
        ("4001", "failed", "rate_limited"),
        ("4002", "failed", "provider_error"),
        ("4003", "failed", "content_rejected"),
        ("4004", "failed", "account_problem"),
        ("4005", "failed", "content_rejected"),
        ("500", "failed", "provider_error"),
        ("470", "failed", "outside_window"),  # WhatsApp on-premises code, below 100000
        ("9999", "failed", "unknown"),
        ("131047", "undelivered", "outside_window"),
        ("131026", "undelivered", "unreachable"),
        ("131049", "undelivered", "carrier_filtered"),
        ("131050", "undelivered", "opted_out"),
        ("131048", "undelivered", "rate_limited"),
        ("131000", "undelivered", "provider_error"),
        ("131999", "undelivered", "unknown"),
    ],
)
def test_error_codes(code: str, status: str, category: str) -> None:
    (event,) = M.parse(h.request(M.NAME, _v2("failed", code=int(code), reason="why"))).events
    assert (event.status, event.provider_status) == (status, "failed")
    assert event.error is not None
    assert (event.error.code, event.error.category, event.error.description) == (
        code,
        category,
        "why",
    )


def test_v3_errors_array_is_read_too() -> None:
    status = {"gs_id": "g", "status": "failed", "errors": [{"code": 131050, "title": "stop"}]}
    body = {
        "object": "whatsapp_business_account",
        "entry": [{"changes": [{"value": {"statuses": [status]}}]}],
    }
    (event,) = M.parse(h.request(M.NAME, json.dumps(body).encode())).events
    assert event.error is not None
    assert (event.status, event.error.category, event.error.description) == (
        "undelivered",
        "opted_out",
        "stop",
    )


def test_other_event_types() -> None:
    for kind in ("message", "user-event", "billing-event"):
        body = json.dumps({"app": "A", "type": kind, "payload": {}}).encode()
        assert M.parse(h.request(M.NAME, body)).ignored == 1
    odd = M.parse(h.request(M.NAME, b'{"type": "teleport-event", "payload": {}}'))
    assert [d.reason for d in odd.dead] == ["unknown gupshup event type 'teleport-event'"]


@pytest.mark.parametrize("body", [b"", b"[]", b"{}", b'{"hello": 1}', b"nope"])
def test_not_a_gupshup_event_is_a_framing_error(body: bytes) -> None:
    with pytest.raises(FramingError):
        M.parse(h.request(M.NAME, body))


# --- authentication -----------------------------------------------------------------------


def in_url(body: bytes, secret: str) -> h.WebhookRequest:
    url = M.sign("https://status.example.com/webhooks/gupshup", secret)
    return h.request(M.NAME, body, url=url)


CONTRACT = h.SignatureContract(
    module=M,
    secret_name="GUPSHUP_TOKEN",
    secret=TOKEN,
    body=h.fixture(M.NAME, "v2_delivered.json"),
    sign=in_url,
    auth_headers=(),
    body_bound=False,
    extra_settings={"AFRICASTALKING_TOKEN": "at-token"},
    wrong_account=lambda body: in_url(body, "at-token"),
    unsigned=lambda body: h.request(M.NAME, body),
)

CHECKS = h.FULL_SIGNATURE_CHECKS
MIN_MUTATIONS = 20


def test_token_header_and_bearer_work_too() -> None:
    good = CONTRACT.settings()
    M.verify(h.request(M.NAME, CONTRACT.body, headers={"token": TOKEN}), good)
    M.verify(h.request(M.NAME, CONTRACT.body, headers={"authorization": f"Bearer {TOKEN}"}), good)
