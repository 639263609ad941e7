"""Telnyx: every recipient status and delivery error, group MMS keys, Ed25519 signatures
with the timestamp window (keys generated here), robustness."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from processors.providers import telnyx
from processors.providers.base import FramingError, SignatureError

from . import harness as h

KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()
OTHER_ACCOUNT_KEY = Ed25519PrivateKey.generate()
PUBLIC = telnyx.public_key_setting(KEY)
PROFILE = "16fd2706-8baf-433b-82eb-8c7fada847da"


def row(key: str, status: str, word: str, channel: str = "sms", category: str | None = None):
    return (f"telnyx:{key}", status, word, channel, category)


CASES = [
    # Telnyx's documented deliveryUpdate example: message.sent whose recipient says queued
    h.Case(
        "sent_mms_delivery_update.json",
        [row("40385f64-5717-4562-b3fc-2c963f66afa6", "sent", "message.sent", "mms")],
    ),
    h.Case(
        "finalized_delivered.json",
        [row("b301ed3f-1490-491f-995f-6e64e69674d4", "delivered", "delivered")],
    ),
    h.Case(
        "finalized_delivery_failed_40300.json",
        [
            row(
                "c412fe40-25a1-4f2a-a06a-7f75f7a785e5",
                "undelivered",
                "delivery_failed",
                category="opted_out",
            )
        ],
    ),
    h.Case(
        "finalized_sending_failed.json",
        [
            row(
                "d523ef51-36b2-4b3f-b17f-8086a8b896f6",
                "failed",
                "sending_failed",
                category="invalid_number",
            )
        ],
    ),
    h.Case("finalized_delivery_unconfirmed.json", [], ignored=1),
    h.Case(
        "group_mms_finalized.json",
        [
            row(
                "f7450173-58d5-4d51-d39b-a2a8cad0b8b8:+12125556792", "delivered", "delivered", "mms"
            ),
            row(
                "f7450173-58d5-4d51-d39b-a2a8cad0b8b8:+12125556793",
                "undelivered",
                "delivery_failed",
                "mms",
                "unknown",
            ),
        ],
    ),
    h.Case(
        "received_inbound.json",
        [row("a9b8c7d6-e5f4-4a3b-9c2d-1e0f9a8b7c6d", "received", "message.received")],
    ),
    h.Case("unknown_status.json", [], dead=["unknown telnyx status 'teleported'"]),
]


def _event(word: str, kind: str = "message.finalized", errors: list | None = None) -> bytes:
    payload = {
        "id": "m-1",
        "type": "SMS",
        "messaging_profile_id": PROFILE,
        "to": [{"phone_number": "+12125550000", "status": word}],
        "errors": errors or [],
    }
    data = {"event_type": kind, "id": "e-1", "occurred_at": "2026-04-28T14:00:00Z"}
    return json.dumps({"data": {**data, "payload": payload}}).encode()


# PROVIDERS-NEXT.md "Telnyx": every status word.
@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("scheduled", "scheduled"),
        ("queued", "queued"),
        ("sending", "sending"),
        ("sent", "sent"),
        ("delivered", "delivered"),
        ("delivery_failed", "undelivered"),
        ("sending_failed", "failed"),
        ("expired", "expired"),
        ("cancelled", "canceled"),
    ],
)
def test_status_mapping(word: str, status: str) -> None:
    (event,) = telnyx.parse(h.request("telnyx", _event(word))).events
    assert (event.status, event.provider_status) == (status, word)
    assert (event.error is not None) == (status in ("undelivered", "failed", "expired", "canceled"))
    assert event.account == PROFILE
    assert event.occurred_at == 1777384800.0


def test_delivery_unconfirmed_is_no_change() -> None:
    result = telnyx.parse(h.request("telnyx", _event("delivery_unconfirmed")))
    assert (result.events, result.ignored, result.dead) == ([], 1, [])


@pytest.mark.parametrize("word", ["scheduled", "queued", "sending"])
def test_message_sent_is_at_least_sent(word: str) -> None:
    (event,) = telnyx.parse(h.request("telnyx", _event(word, "message.sent"))).events
    assert (event.status, event.provider_status) == ("sent", "message.sent")
    (event,) = telnyx.parse(h.request("telnyx", _event("sent", "message.sent"))).events
    assert (event.status, event.provider_status) == ("sent", "sent")


@pytest.mark.parametrize(
    ("code", "category"),
    [
        ("40001", "invalid_number"),
        ("40002", "carrier_filtered"),
        ("40003", "blocked"),
        ("40004", "unknown"),
        ("40005", "expired"),
        ("40006", "unreachable"),
        ("40008", "unknown"),
        ("40009", "content_rejected"),
        ("40011", "rate_limited"),
        ("40012", "invalid_number"),
        ("40013", "account_problem"),
        ("40014", "expired"),
        ("40015", "carrier_filtered"),
        ("40300", "opted_out"),
        ("40999", "unknown"),
    ],
)
def test_error_codes(code: str, category: str) -> None:
    errors = [{"code": code, "title": "t", "detail": "d"}]
    (event,) = telnyx.parse(h.request("telnyx", _event("delivery_failed", errors=errors))).events
    assert event.error is not None
    assert (event.error.code, event.error.category, event.error.description) == (
        code,
        category,
        "d",
    )


def test_other_products_are_ignored_unknown_message_events_dead() -> None:
    other = json.dumps({"data": {"event_type": "call.initiated", "payload": {}}}).encode()
    assert telnyx.parse(h.request("telnyx", other)).ignored == 1
    new = json.dumps({"data": {"event_type": "message.teleported", "payload": {"id": "x"}}})
    result = telnyx.parse(h.request("telnyx", new.encode()))
    assert [d.reason for d in result.dead] == ["unknown telnyx event_type 'message.teleported'"]


def test_missing_parts_are_dead_items() -> None:
    no_id = json.dumps({"data": {"event_type": "message.sent", "payload": {"to": []}}})
    assert [d.reason for d in telnyx.parse(h.request("telnyx", no_id.encode())).dead] == [
        "telnyx event without payload.id"
    ]
    no_to = json.dumps({"data": {"event_type": "message.sent", "payload": {"id": "x"}}})
    assert [d.reason for d in telnyx.parse(h.request("telnyx", no_to.encode())).dead] == [
        "telnyx message without recipients (payload.to)"
    ]


@pytest.mark.parametrize("body", [b"", b"[]", b"{}", b'{"data": []}', b"x"])
def test_not_a_telnyx_event_is_a_framing_error(body: bytes) -> None:
    with pytest.raises(FramingError):
        telnyx.parse(h.request("telnyx", body))


# --- signature ----------------------------------------------------------------------------

KEYS = {PUBLIC: KEY}


def signed_at(body: bytes, secret: str, at: float) -> h.WebhookRequest:
    key = KEYS.get(secret, OTHER_KEY)  # an unknown "secret" stands for another key pair
    return h.request("telnyx", body, headers=telnyx.sign(body, key, at))


CONTRACT = h.SignatureContract(
    module=telnyx,
    secret_name="TELNYX_PUBLIC_KEY",
    secret=PUBLIC,
    body=h.fixture("telnyx", "finalized_delivered.json"),
    sign=lambda body, secret: signed_at(body, secret, h.RECEIVED_AT),
    auth_headers=(telnyx.SIGNATURE_HEADER,),
    wrong_account=lambda body: h.request(
        "telnyx", body, headers=telnyx.sign(body, OTHER_ACCOUNT_KEY, h.RECEIVED_AT)
    ),
    sign_at=signed_at,
)

CHECKS = h.FULL_SIGNATURE_CHECKS
MIN_MUTATIONS = 20


def test_signed_bytes_are_timestamp_pipe_body() -> None:
    """The construction of Telnyx's SDK verifier, checked with the public key alone."""
    body = CONTRACT.body
    headers = telnyx.sign(body, KEY, h.RECEIVED_AT)
    signature = base64.b64decode(headers[telnyx.SIGNATURE_HEADER])
    assert len(signature) == 64
    KEY.public_key().verify(signature, f"{int(h.RECEIVED_AT)}|".encode() + body)


def test_timestamp_is_signed_too() -> None:
    body = CONTRACT.body
    headers = telnyx.sign(body, KEY, h.RECEIVED_AT)
    moved = headers | {telnyx.TIMESTAMP_HEADER: str(int(h.RECEIVED_AT) + 1)}
    with pytest.raises(SignatureError, match="does not match"):
        telnyx.verify(h.request("telnyx", body, headers=moved), CONTRACT.settings())


def test_several_accounts_and_bad_key_setting() -> None:
    body = CONTRACT.body
    second = h.Settings(
        secrets={"TELNYX_PUBLIC_KEY": telnyx.public_key_setting(OTHER_ACCOUNT_KEY)},
        accounts={"telnyx": ({"public_key": PUBLIC},)},
    )
    telnyx.verify(signed_at(body, PUBLIC, h.RECEIVED_AT), second)
    for bad in ("not base64!", base64.b64encode(b"short").decode()):
        with pytest.raises(SignatureError, match="32-byte"):
            telnyx.verify(signed_at(body, PUBLIC, h.RECEIVED_AT), h.settings(TELNYX_PUBLIC_KEY=bad))


@pytest.mark.parametrize("stamp", ["", "abc", "-5", "1.5", "9" * 20, "\u00b2"])
def test_malformed_timestamp_is_refused(stamp: str) -> None:
    body = CONTRACT.body
    headers = telnyx.sign(body, KEY, h.RECEIVED_AT) | {telnyx.TIMESTAMP_HEADER: stamp}
    with pytest.raises(SignatureError):
        telnyx.verify(h.request("telnyx", body, headers=headers), CONTRACT.settings())
