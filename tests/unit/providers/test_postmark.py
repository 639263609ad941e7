"""Postmark: every record type and bounce type, subscription changes, Basic auth."""

from __future__ import annotations

import json

import pytest

from processors.providers import postmark
from processors.providers.base import FramingError

from . import harness as h

USER = "postmark-hook"
PASSWORD = "postmark-hook-password-0123456789"
ZERO = "00000000-0000-0000-0000-000000000000"


def row(key: str, status: str, word: str, category: str | None = None) -> h.Row:
    return (f"postmark:{key}", status, word, "email", category)


CASES = [
    h.Case(
        "bounce_hard.json",
        [
            row(
                "883953f4-6105-42a2-a16a-77a8eac79483",
                "undelivered",
                "HardBounce",
                "invalid_number",
            )
        ],
    ),
    h.Case("delivery.json", [row(ZERO, "delivered", "Delivery")]),
    h.Case("open.json", [row(ZERO, "read", "Open")]),
    h.Case("click.json", [row(ZERO, "clicked", "Click")]),
    h.Case("spam_complaint.json", [row(ZERO, "complained", "SpamComplaint")]),
    h.Case(
        "subscription_change_unsubscribed.json", [row(ZERO, "unsubscribed", "SubscriptionChange")]
    ),
    h.Case("subscription_change_reactivated.json", [], ignored=1),
    h.Case("bounce_soft.json", [], ignored=1),
    h.Case("unknown_record_type.json", [], dead=["unknown postmark RecordType 'Teleport'"]),
]


def test_account_and_times() -> None:
    result, _ = h.parse_case(postmark, h.Case("bounce_hard.json", []))
    (event,) = result.events
    assert event.account == "23:outbound"
    assert event.occurred_at == pytest.approx(1406914090.2735393)  # 13:28:10.27 -04:00
    result, _ = h.parse_case(postmark, h.Case("delivery.json", []))
    assert result.events[0].occurred_at == pytest.approx(1572971634.9070259)


def _bounce(kind: str | None, code: int | None) -> bytes:
    record: dict[str, object] = {
        "RecordType": "Bounce",
        "MessageID": "m-1",
        "ServerID": 1,
        "MessageStream": "outbound",
        "Description": "desc",
        "BouncedAt": "2026-04-28T14:00:00Z",
    }
    if kind is not None:
        record["Type"] = kind
    if code is not None:
        record["TypeCode"] = code
    return json.dumps(record).encode()


# PROVIDERS-NEXT.md "Postmark": every bounce type (Type, TypeCode -> status, category).
BOUNCE_TYPES = [
    ("HardBounce", 1, "undelivered", "invalid_number"),
    ("Transient", 2, None, None),
    ("Unsubscribe", 16, "unsubscribed", None),
    ("Subscribe", 32, None, None),
    ("AutoResponder", 64, None, None),
    ("AddressChange", 128, None, None),
    ("DnsError", 256, None, None),
    ("SpamNotification", 512, "undelivered", "carrier_filtered"),
    ("OpenRelayTest", 1024, None, None),
    ("Unknown", 2048, "undelivered", "unknown"),
    ("SoftBounce", 4096, None, None),
    ("VirusNotification", 8192, "undelivered", "content_rejected"),
    ("ChallengeVerification", 16384, None, None),
    ("BadEmailAddress", 100000, "undelivered", "invalid_number"),
    ("SpamComplaint", 100001, "complained", None),
    ("ManuallyDeactivated", 100002, "rejected", "opted_out"),
    ("Unconfirmed", 100003, None, None),
    ("Blocked", 100006, "undelivered", "blocked"),
    ("SMTPApiError", 100007, "failed", "provider_error"),
    ("InboundError", 100008, None, None),
    ("DMARCPolicy", 100009, "undelivered", "account_problem"),
    ("TemplateRenderingFailed", 100010, "failed", "content_rejected"),
]


@pytest.mark.parametrize(("kind", "code", "status", "category"), BOUNCE_TYPES)
@pytest.mark.parametrize("by", ["type", "code", "both"])
def test_bounce_types(
    kind: str, code: int, status: str | None, category: str | None, by: str
) -> None:
    body = _bounce(kind if by != "code" else None, code if by != "type" else None)
    result = postmark.parse(h.request("postmark", body))
    if status is None:
        assert (result.events, result.ignored, result.dead) == ([], 1, [])
        return
    (event,) = result.events
    assert (event.status, event.provider_status) == (status, kind)
    if category is None:
        assert event.error is None
    else:
        assert event.error is not None
        assert (event.error.code, event.error.category, event.error.description) == (
            kind,
            category,
            "desc",
        )


def test_every_documented_type_is_in_the_table() -> None:
    assert {kind for kind, *_ in BOUNCE_TYPES} == set(postmark.BOUNCES)


def test_unknown_bounce_type_is_a_dead_letter() -> None:
    result = postmark.parse(h.request("postmark", _bounce("Teleported", 77)))
    assert [d.reason for d in result.dead] == ["unknown postmark bounce type 'Teleported'"]


@pytest.mark.parametrize(
    ("change", "counts"),
    [
        ({}, True),
        ({"Origin": "Customer"}, False),
        ({"Origin": "Admin"}, False),
        ({"SuppressSending": False}, False),
        ({"SuppressionReason": "HardBounce"}, False),
        ({"SuppressionReason": "SpamComplaint"}, False),
        ({"MessageID": None}, False),
    ],
)
def test_subscription_changes(change: dict[str, object], counts: bool) -> None:
    record = json.loads(h.fixture("postmark", "subscription_change_unsubscribed.json"))
    record.update(change)
    result = postmark.parse(h.request("postmark", json.dumps(record).encode()))
    assert [e.status for e in result.events] == (["unsubscribed"] if counts else [])
    assert result.ignored == (0 if counts else 1)


def test_missing_message_id_is_a_dead_letter() -> None:
    body = json.dumps({"RecordType": "Delivery", "ServerID": 1}).encode()
    result = postmark.parse(h.request("postmark", body))
    assert [d.reason for d in result.dead] == ["postmark record without MessageID"]


@pytest.mark.parametrize("body", [b"", b"[]", b"[{}]", b"nope"])
def test_not_an_object_is_a_framing_error(body: bytes) -> None:
    with pytest.raises(FramingError):
        postmark.parse(h.request("postmark", body))


# --- authentication -----------------------------------------------------------------------


def basic(body: bytes, secret: str, user: str = USER) -> h.WebhookRequest:
    return h.request("postmark", body, headers=postmark.sign(body, user, secret))


CONTRACT = h.SignatureContract(
    module=postmark,
    secret_name="POSTMARK_PASSWORD",
    secret=PASSWORD,
    body=h.fixture("postmark", "delivery.json"),
    sign=basic,
    auth_headers=("authorization",),
    body_bound=False,
    extra_settings={"POSTMARK_USER": USER},
    wrong_account=lambda body: basic(body, PASSWORD, user="another-server"),
)

CHECKS = h.FULL_SIGNATURE_CHECKS
MIN_MUTATIONS = 20
