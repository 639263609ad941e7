"""Brevo: every email event and SMS status (snake_case and camelCase), batches, message-id
brackets, the shared token from header, Bearer or query."""

from __future__ import annotations

import json

import pytest

from processors.providers import brevo, coverage
from processors.providers.base import FramingError, SignatureError

from . import harness as h

TOKEN = "brevo-webhook-token-0123456789"
MID = "201798300811.5787683@relay.domain.com"


def email(key: str, status: str, word: str, category: str | None = None) -> h.Row:
    return (f"brevo:{key}", status, word, "email", category)


def sms(key: str, status: str, word: str, category: str | None = None) -> h.Row:
    return (f"brevo:{key}", status, word, "sms", category)


CASES = [
    h.Case("email_request.json", [email(MID, "sent", "request")]),
    h.Case("email_delivered.json", [email(MID, "delivered", "delivered")]),
    h.Case("email_unique_opened.json", [email(MID, "read", "unique_opened")]),
    h.Case("email_click.json", [email(MID, "clicked", "click")]),
    h.Case("email_proxy_open.json", [email(MID, "opened", "proxy_open")]),
    h.Case(
        "email_hard_bounce.json",
        [
            email(
                "201798300811.5787684@relay.domain.com",
                "undelivered",
                "hard_bounce",
                "invalid_number",
            )
        ],
    ),
    h.Case("email_soft_bounce.json", [], ignored=1),
    h.Case(
        "batch_mixed.json",
        [
            email("201798300811.5787690@relay.domain.com", "sent", "request"),
            email("201798300811.5787691@relay.domain.com", "rejected", "blocked", "blocked"),
        ],
        ignored=1,
        dead=["unknown brevo email event 'teleported'", "brevo email event without message-id"],
    ),
    h.Case("sms_delivered.json", [sms("1511882900176220", "delivered", "delivered")]),
    h.Case(
        "sms_hard_bounce.json",
        [sms("1511882900176221", "undelivered", "hard_bounce", "invalid_number")],
    ),
    h.Case(
        "sms_blacklisted.json", [sms("1511882900176222", "rejected", "blacklisted", "opted_out")]
    ),
    h.Case("unknown_event.json", [], dead=["unknown brevo email event 'teleported'"]),
]


def test_time_account_and_reason() -> None:
    result, _ = h.parse_case(brevo, h.Case("email_delivered.json", []))
    (event,) = result.events
    assert event.occurred_at == 1604933659.123  # ts_epoch, milliseconds
    assert event.account == "1234567"
    result, _ = h.parse_case(brevo, h.Case("email_hard_bounce.json", []))
    assert result.events[0].error is not None
    assert result.events[0].error.description.startswith("550 5.1.1")
    result, _ = h.parse_case(brevo, h.Case("sms_delivered.json", []))
    assert result.events[0].occurred_at is None  # `date` has no documented zone


def _email(word: str) -> bytes:
    return json.dumps({"event": word, "message-id": f"<{MID}>", "id": 1, "ts_event": 1}).encode()


# PROVIDERS-NEXT.md "Brevo", email: every word, in snake_case and camelCase.
EMAIL_WORDS = [
    ("request", "sent", None),
    ("delivered", "delivered", None),
    ("hard_bounce", "undelivered", "invalid_number"),
    ("hardBounce", "undelivered", "invalid_number"),
    ("blocked", "rejected", "blocked"),
    ("invalid_email", "rejected", "invalid_number"),
    ("invalidEmail", "rejected", "invalid_number"),
    ("error", "failed", "provider_error"),
    ("spam", "complained", None),
    ("opened", "read", None),
    ("unique_opened", "read", None),
    ("uniqueOpened", "read", None),
    ("click", "clicked", None),
    ("unsubscribed", "unsubscribed", None),
    ("proxy_open", "opened", None),
    ("unique_proxy_open", "opened", None),
    ("uniqueProxyOpen", "opened", None),
]


@pytest.mark.parametrize(("word", "status", "category"), EMAIL_WORDS)
def test_email_mapping(word: str, status: str, category: str | None) -> None:
    (event,) = brevo.parse(h.request("brevo", _email(word))).events
    assert (event.provider_message_id, event.status, event.provider_status) == (MID, status, word)
    assert (event.error.category if event.error else None) == category


@pytest.mark.parametrize("word", ["deferred", "soft_bounce", "softBounce"])
def test_email_no_change(word: str) -> None:
    result = brevo.parse(h.request("brevo", _email(word)))
    assert (result.events, result.ignored, result.dead) == ([], 1, [])


SMS_WORDS = [
    ("sent", "sent", None),
    ("accepted", "sent", None),
    ("delivered", "delivered", None),
    ("soft_bounce", "undelivered", "unreachable"),
    ("hard_bounce", "undelivered", "invalid_number"),
    ("hardBounce", "undelivered", "invalid_number"),
    ("rejected", "rejected", "unknown"),
    ("blacklisted", "rejected", "opted_out"),
    ("reply", "replied", None),
    ("replied", "replied", None),
    ("unsubscribe", "unsubscribed", None),
]


@pytest.mark.parametrize(("word", "status", "category"), SMS_WORDS)
def test_sms_mapping(word: str, status: str, category: str | None) -> None:
    body = json.dumps({"id": 1, "messageId": 42, "msg_status": word}).encode()
    (event,) = brevo.parse(h.request("brevo", body)).events
    assert (event.provider_message_id, event.status, event.channel) == ("42", status, "sms")
    assert (event.error.category if event.error else None) == category


@pytest.mark.parametrize("word", ["subscribe", "skip"])
def test_sms_no_change(word: str) -> None:
    body = json.dumps({"id": 1, "messageId": 42, "msg_status": word}).encode()
    assert brevo.parse(h.request("brevo", body)).ignored == 1


def test_coverage_lists_the_sms_statuses_too() -> None:
    listed = set(coverage.statuses_of(brevo, brevo.COVERAGE))
    assert set(brevo.SMS_STATUS_MAP.values()) <= listed


def test_other_shapes() -> None:
    result = brevo.parse(h.request("brevo", b'[{"foo": 1}, 7]'))
    assert [d.reason for d in result.dead] == [
        "brevo item with neither `event` nor `msg_status`",
        "brevo item with neither `event` nor `msg_status`",
    ]
    with pytest.raises(FramingError):
        brevo.parse(h.request("brevo", b'"x"'))


# --- authentication -----------------------------------------------------------------------


def bearer(body: bytes, secret: str) -> h.WebhookRequest:
    return h.request("brevo", body, headers=brevo.sign(body, secret))


CONTRACT = h.SignatureContract(
    module=brevo,
    secret_name="BREVO_TOKEN",
    secret=TOKEN,
    body=h.fixture("brevo", "email_delivered.json"),
    sign=bearer,
    auth_headers=("authorization",),
    body_bound=False,
    # another provider's token (configured too) is not Brevo's
    extra_settings={"GUPSHUP_TOKEN": "gupshup-token"},
    wrong_account=lambda body: bearer(body, "gupshup-token"),
)

CHECKS = h.FULL_SIGNATURE_CHECKS
MIN_MUTATIONS = 20


def test_token_in_header_or_query() -> None:
    body = CONTRACT.body
    good = CONTRACT.settings()
    brevo.verify(h.request("brevo", body, headers={"token": TOKEN}), good)
    url = f"https://status.example.com/webhooks/brevo?token={TOKEN}"
    brevo.verify(h.request("brevo", body, url=url), good)
    with pytest.raises(SignatureError):
        brevo.verify(h.request("brevo", body, url=url + "x"), good)
    assert brevo.QUERY_CREDENTIALS == ("token",)
