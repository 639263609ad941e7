"""Tracksend: every SMS/RCS status word, partial statuses, errors, replies, token auth."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from processors.providers import tracksend
from processors.providers.base import FramingError, SignatureError

from . import harness as h

TOKEN = "tracksend-token-0123456789"
ID = "TS-7f3c2a91-0d4e-4b1a-9c55-2e8f1a6b7c0"
RCS = "tracksend:TS-RCS-51b0e8d2-93aa-4c11-8d0f-6f7e2c1a9b1"

CASES = [
    h.Case("sms_delivered.json", [(f"tracksend:{ID}1", "delivered", "DELIVERED", "sms", None)]),
    h.Case("sms_partially_sent.json", [(f"tracksend:{ID}2", "sent", "PARTIALLYSENT", "sms", None)]),
    h.Case("sms_dnd.json", [(f"tracksend:{ID}3", "rejected", "DND", "sms", "opted_out")]),
    h.Case(
        "sms_invalid_number.json",
        [(f"tracksend:{ID}4", "failed", "INVALIDNUMBER", "sms", "invalid_number")],
    ),
    h.Case(
        "sms_internal_error.json",
        [(f"tracksend:{ID}5", "failed", "INTERNALERROR", "sms", "provider_error")],
    ),
    h.Case("rcs_read.json", [(f"{RCS}0", "read", "READ", "rcs", None)]),
    h.Case("rcs_reply.json", [(f"{RCS}0", "replied", "REPLY", "rcs", None)]),
    h.Case(
        "rcs_read_with_reply_action.json",
        [(f"{RCS}1", "read", "READ", "rcs", None), (f"{RCS}1", "replied", "REPLY", "rcs", None)],
    ),
    h.Case("unknown_status.json", [], dead=["unknown tracksend status 'TELEPORTED'"]),
    h.Case(
        "batch_mixed.json",
        [
            (f"tracksend:{ID}7", "queued", "QUEUED", "sms", None),
            (f"tracksend:{ID}7", "sent", "SENT", "sms", None),
            (f"tracksend:{ID}8", "expired", "EXPIRED", "sms", "expired"),
        ],
        dead=["missing message_id"],
    ),
]


def _report(**fields: object) -> bytes:
    return json.dumps({"message_id": "TS-1", "channel": "sms", **fields}).encode()


# PROVIDERS.md "Tracksend", every word of both tables (seeds/002), with its error category.
MAPPING = [
    ("PENDING", "queued", None),
    ("QUEUED", "queued", None),
    ("ACCEPTED", "sent", None),
    ("SENT", "sent", None),
    ("PARTIALLYSENT", "sent", None),
    ("DELIVERED", "delivered", None),
    ("PARTIALDELIVERED", "delivered", None),
    ("READ", "read", None),
    ("FAILED", "failed", "unknown"),
    ("FAILEDTOQUEUE", "failed", "provider_error"),
    ("FAILEDTOSEND", "failed", "unknown"),
    ("INTERNALERROR", "failed", "provider_error"),
    ("INVALIDNUMBER", "failed", "invalid_number"),
    ("REJECTED", "rejected", "unknown"),
    ("DND", "rejected", "opted_out"),
    ("DUPLICATE", "rejected", "unknown"),
    ("NOTDELIVERED", "undelivered", "unknown"),
    ("UNDELIVERED", "undelivered", "unknown"),
    ("EXPIRED", "expired", "expired"),
    ("REPLY", "replied", None),
]


@pytest.mark.parametrize(("word", "status", "category"), MAPPING)
@pytest.mark.parametrize("channel", ["sms", "rcs"])
def test_status_mapping(word: str, status: str, category: str | None, channel: str) -> None:
    result = tracksend.parse(h.request("tracksend", _report(status=word, channel=channel)))
    (event,) = result.events
    assert (event.status, event.provider_status, event.channel) == (status, word, channel)
    assert (event.error.category if event.error else None) == category
    if event.error:
        assert event.error.code == word


def test_every_seed_word_is_mapped() -> None:
    assert {w.lower() for w, _, _ in MAPPING} == set(tracksend.STATUS_MAP)


def test_words_are_case_insensitive_and_channel_defaults_to_sms() -> None:
    body = json.dumps({"message_id": "TS-2", "status": "delivered"}).encode()
    (event,) = tracksend.parse(h.request("tracksend", body)).events
    assert (event.status, event.channel) == ("delivered", "sms")


def test_times_and_descriptions() -> None:
    result, _ = h.parse_case(tracksend, h.Case("sms_delivered.json", []))
    expected = dt.datetime(2026, 4, 28, 14, 30, 5, tzinfo=dt.UTC).timestamp()
    assert result.events[0].occurred_at == expected
    result, _ = h.parse_case(tracksend, h.Case("sms_dnd.json", []))
    error = result.events[0].error
    assert error is not None and error.description is not None
    assert "Do Not Disturb" in error.description


def test_reply_action_alone_is_an_engagement() -> None:
    body = _report(action={"type": "REPLY", "description": "replied"})
    (event,) = tracksend.parse(h.request("tracksend", body)).events
    assert (event.status, event.provider_status, event.error) == ("replied", "REPLY", None)


def test_missing_fields_are_dead_items() -> None:
    no_status = tracksend.parse(h.request("tracksend", _report()))
    assert [d.reason for d in no_status.dead] == ["missing status"]
    no_id = tracksend.parse(h.request("tracksend", b'{"status": "SENT"}'))
    assert [d.reason for d in no_id.dead] == ["missing message_id"]


@pytest.mark.parametrize("body", [b"", b"not json", b"42", b'"x"', b"{"])
def test_malformed_body_is_a_framing_error(body: bytes) -> None:
    with pytest.raises(FramingError):
        tracksend.parse(h.request("tracksend", body))


# --- authentication -------------------------------------------------------------------


def signed(body: bytes, secret: str) -> h.WebhookRequest:
    return h.request("tracksend", body, headers=tracksend.sign(h.URL, body, secret))


CONTRACT = h.SignatureContract(
    module=tracksend,
    secret_name="TRACKSEND_TOKEN",
    secret=TOKEN,
    body=h.fixture("tracksend", "sms_delivered.json"),
    sign=signed,
    auth_headers=("token",),
    body_bound=False,
)


def test_bearer_is_accepted_and_other_schemes_are_not() -> None:
    good = CONTRACT.settings()

    def with_auth(value: str) -> h.WebhookRequest:
        return h.request("tracksend", CONTRACT.body, headers={"Authorization": value})

    tracksend.verify(with_auth(f"Bearer {TOKEN}"), good)
    with pytest.raises(SignatureError):
        tracksend.verify(with_auth(f"Basic {TOKEN}"), good)
