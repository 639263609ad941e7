"""Octopods: the six status words, DELETED = delivered + deleted, UNKNOWN ignored, token auth."""

from __future__ import annotations

import json

import pytest

from processors.providers import octopods
from processors.providers.base import FramingError

from . import harness as h

TOKEN = "octopods-token-0123456789"
WA = "octopods:0f2d7a3e-5c41-4e8b-9a6d-1b2c3d4e5f60"
SMS = "octopods:6a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
DELETED = "octopods:ae5f6071-8293-4eaf-a0b1-3c4d5e6f7081"
LIST = "octopods:c0718293-a4b5-4c01-82d3-5e6f708192a"
POLL_URL = "https://app.octopods.io/api/v1/sms/messages/6a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"

CASES = [
    h.Case("whatsapp_delivered.json", [(WA, "delivered", "DELIVERED", "whatsapp", None)]),
    h.Case("whatsapp_read.json", [(WA, "read", "READ", "whatsapp", None)]),
    h.Case("sms_sent.json", [(SMS, "sent", "SENT", "sms", None)]),
    h.Case(
        "viber_delivered.json",
        [
            (
                "octopods:7b2c3d4e-5f60-4b7c-9d8e-0f1a2b3c4d5e",
                "delivered",
                "DELIVERED",
                "viber",
                None,
            )
        ],
    ),
    h.Case(
        "sms_failed.json",
        [
            (
                "octopods:8c3d4e5f-6071-4c8d-8e9f-1a2b3c4d5e6f",
                "failed",
                "FAILED",
                "sms",
                "carrier_filtered",
            )
        ],
    ),
    h.Case(
        "whatsapp_failed_text.json",
        [
            (
                "octopods:9d4e5f60-7182-4d9e-9fa0-2b3c4d5e6f70",
                "failed",
                "FAILED",
                "whatsapp",
                "unknown",
            )
        ],
    ),
    h.Case(
        "whatsapp_deleted.json",
        [
            (DELETED, "delivered", "DELETED", "whatsapp", None),
            (DELETED, "deleted", "DELETED", "whatsapp", None),
        ],
    ),
    h.Case("whatsapp_unknown.json", [], ignored=1),
    h.Case(
        "poll_sms_no_channel.json",
        [(SMS, "delivered", "DELIVERED", "sms", None)],
        url=POLL_URL,
        polled=True,
    ),
    h.Case(
        "list_mixed.json",
        [
            (f"{LIST}3", "sent", "SENT", "whatsapp", None),
            (f"{LIST}6", "read", "READ", "whatsapp", None),
        ],
        ignored=1,
        dead=["unknown octopods status 'VANISHED'"],
    ),
]


def _item(word: str, reason: object = None, **extra: object) -> bytes:
    status = {"message_status": word, "failure_reason": reason}
    return json.dumps({"message_id": "m-1", "message_status": status, **extra}).encode()


# PROVIDERS.md "Octopods": every word (seeds/001), DELETED as two events, UNKNOWN ignored.
@pytest.mark.parametrize(
    ("word", "statuses"),
    [
        ("SENT", ["sent"]),
        ("DELIVERED", ["delivered"]),
        ("READ", ["read"]),
        ("FAILED", ["failed"]),
        ("DELETED", ["delivered", "deleted"]),
        ("UNKNOWN", []),
    ],
)
def test_status_mapping(word: str, statuses: list[str]) -> None:
    result = octopods.parse(h.request("octopods", _item(word)))
    assert [e.status for e in result.events] == statuses
    assert {e.provider_status for e in result.events} <= {word}
    assert result.ignored == (1 if word == "UNKNOWN" else 0)
    assert not result.dead  # UNKNOWN is ignored, never dead-lettered


@pytest.mark.parametrize(
    ("reason", "code", "category"),
    [
        ("30007: Message filtered by the carrier", "30007", "carrier_filtered"),
        ("(#131047) Re-engagement message", "131047", "outside_window"),
        ({"code": 131026, "message": "Message undeliverable"}, "131026", "unreachable"),
        ("Recipient phone number is not a WhatsApp user", None, "unknown"),
        ("99999 something new", "99999", "unknown"),
        (None, None, "unknown"),
    ],
)
def test_failure_reason(reason: object, code: str | None, category: str) -> None:
    (event,) = octopods.parse(h.request("octopods", _item("FAILED", reason))).events
    assert event.error is not None
    assert (event.error.code, event.error.category) == (code, category)


def test_flat_status_and_channel_words() -> None:
    body = json.dumps({"id": "m-2", "status": "DELIVERED", "channel": "VBM"}).encode()
    (event,) = octopods.parse(h.request("octopods", body)).events
    assert (event.provider_message_id, event.status, event.channel) == ("m-2", "delivered", "viber")


def test_array_of_items_and_missing_fields() -> None:
    body = json.dumps([json.loads(_item("SENT")), {"message_status": {}}, {"id": "x"}]).encode()
    result = octopods.parse(h.request("octopods", body))
    assert [e.status for e in result.events] == ["sent"]
    assert [d.reason for d in result.dead] == ["missing message_id", "missing message_status"]


@pytest.mark.parametrize("body", [b"", b"nope", b"1", b'"DELIVERED"', b"[1"])
def test_malformed_body_is_a_framing_error(body: bytes) -> None:
    with pytest.raises(FramingError):
        octopods.parse(h.request("octopods", body))


# --- authentication -------------------------------------------------------------------


def signed(body: bytes, secret: str) -> h.WebhookRequest:
    return h.request("octopods", body, headers=octopods.sign(h.URL, body, secret))


CONTRACT = h.SignatureContract(
    module=octopods,
    secret_name="OCTOPODS_TOKEN",
    secret=TOKEN,
    body=h.fixture("octopods", "whatsapp_delivered.json"),
    sign=signed,
    auth_headers=("token",),
    body_bound=False,
)


def test_bearer_is_accepted() -> None:
    req = h.request("octopods", CONTRACT.body, headers={"authorization": f"Bearer {TOKEN}"})
    octopods.verify(req, CONTRACT.settings())
