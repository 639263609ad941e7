"""`/v1/events`: strict validation with precise reasons; Bearer and Standard Webhooks."""

from __future__ import annotations

import base64
import json
from dataclasses import replace

import pytest

from processors.model import STATUSES
from processors.providers import events
from processors.providers.base import FramingError, SignatureError

from . import harness as h

API_TOKEN = "api-token-9f8e7d"  # the read token: never accepted here
EVENTS_TOKEN = "events-token-3c2b1a"
WHSEC = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
NOW = int(h.RECEIVED_AT)

CASES = [
    h.Case(
        "register_sent.json",
        [("ryze:3EB08FCF27E532F1B0F5", "sent", "sent", "whatsapp", None)],
    ),
    h.Case(
        "send_failure.json",
        [("telegram:tg-4711", "failed", "HTTP 403", "telegram", "blocked")],
    ),
    h.Case(
        "batch_mixed.json",
        [
            ("line:461230966842064897", "delivered", "delivered", "line", None),
            ("web:w-1", "read", "read", "api", "unknown"),
        ],
        dead=[
            "provider must match",
            "provider_message_id must be a non-empty string",
            "status delivery_unknown is derived by msgstatus",
            "status must be a canonical status, got 'DELIVERED'",
            "channel must be one of",
            "occurred_at 'yesterday' is not RFC 3339",
            "item must be a JSON object",
        ],
    ),
]


def test_registration_fields() -> None:
    result, _ = h.parse_case(events, h.Case("register_sent.json", []))
    (event,) = result.events
    assert event.provider == "ryze" and event.account == "acme-support"
    assert event.occurred_at == 1777386575.0
    result, _ = h.parse_case(events, h.Case("batch_mixed.json", []))
    assert result.events[0].occurred_at == 1777386500.123  # unix milliseconds


def test_error_object() -> None:
    result, _ = h.parse_case(events, h.Case("send_failure.json", []))
    error = result.events[0].error
    assert error is not None
    assert error.to_dict() == {
        "code": "403",
        "category": "blocked",
        "description": "Forbidden: bot was blocked by the user",
    }


def _item(**fields: object) -> bytes:
    base: dict[str, object] = {"provider": "web", "provider_message_id": "m1", "status": "sent"}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


@pytest.mark.parametrize("status", sorted(STATUSES - {"delivery_unknown"}))
def test_every_canonical_status_is_accepted(status: str) -> None:
    (event,) = events.parse(h.request("events", _item(status=status))).events
    assert event.status == status and event.channel == "api"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"provider": "x" * 33}, "provider must match"),
        ({"provider": "twilio!"}, "provider must match"),
        ({"provider": ...}, "provider must match"),
        ({"provider_message_id": 12}, "provider_message_id must be"),
        ({"provider_message_id": "x" * 257}, "provider_message_id must be"),
        ({"provider_message_id": "   "}, "provider_message_id must be"),
        ({"status": ...}, "status must be a canonical status"),
        ({"status": "Sent"}, "status must be a canonical status"),
        ({"channel": 3}, "channel must be one of"),
        ({"occurred_at": True}, "occurred_at must be"),
        ({"occurred_at": ""}, "occurred_at must not be empty"),
        ({"occurred_at": [1]}, "occurred_at must be"),
        ({"occurred_at": -5}, "is not RFC 3339 or unix seconds"),
        ({"error": "boom"}, "error must be an object or null"),
        ({"error": {"code": [1]}}, "error.code must be"),
        ({"error": {"description": 5}}, "error.description must be"),
        ({"account": ""}, "account must be a non-empty string"),
        ({"account": 7}, "account must be a non-empty string"),
        ({"provider_status": {"a": 1}}, "provider_status must be"),
    ],
)
def test_invalid_items(fields: dict[str, object], reason: str) -> None:
    result = events.parse(h.request("events", _item(**fields)))
    assert not result.events
    (dead,) = result.dead
    assert reason in dead.reason


def test_optional_fields_may_be_null() -> None:
    body = _item(channel=None, occurred_at=None, error=None, account=None)
    (event,) = events.parse(h.request("events", body)).events
    assert (event.channel, event.occurred_at, event.error, event.account) == (
        "api",
        None,
        None,
        None,
    )


def test_empty_array_is_fine() -> None:
    result = events.parse(h.request("events", b"[]"))
    assert (result.events, result.dead, result.ignored) == ([], [], 0)


@pytest.mark.parametrize("body", [b"", b"{", b"1", b'"x"', b"null", b"true"])
def test_wrong_framing(body: bytes) -> None:
    with pytest.raises(FramingError):
        events.parse(h.request("events", body))


# --- authentication ---------------------------------------------------------------------

BODY = h.fixture("events", "register_sent.json")


def bearer(token: str) -> h.WebhookRequest:
    return h.request("events", BODY, headers={"authorization": f"Bearer {token}"})


def sw_signed(body: bytes, secret: str, *, timestamp: int = NOW) -> h.WebhookRequest:
    return h.request(
        "events", body, headers=events.sign(body, secret, "msg_2KWPBgLlAfxdpx2A", timestamp)
    )


def test_bearer_ok_and_bad() -> None:
    good = h.settings(events_token=EVENTS_TOKEN)
    assert events.enabled(good)
    events.verify(bearer(EVENTS_TOKEN), good)
    for req in (bearer("nope"), bearer(""), h.request("events", BODY)):
        with pytest.raises(SignatureError):
            events.verify(req, good)
    basic = h.request("events", BODY, headers={"authorization": f"Basic {EVENTS_TOKEN}"})
    with pytest.raises(SignatureError):
        events.verify(basic, good)


def test_the_read_token_cannot_write() -> None:
    """Finding: MSGSTATUS_API_TOKEN (the query API's read token) could post events for
    any provider. Writing takes MSGSTATUS_EVENTS_TOKEN."""
    both = h.settings(api_token=API_TOKEN, events_token=EVENTS_TOKEN)
    with pytest.raises(SignatureError, match="MSGSTATUS_EVENTS_TOKEN"):
        events.verify(bearer(API_TOKEN), both)
    assert not events.enabled(h.settings(api_token=API_TOKEN))
    events.verify(bearer(EVENTS_TOKEN), both)


CONTRACT = h.SignatureContract(
    module=events,
    secret_name="EVENTS_WEBHOOK_SECRET",
    secret=WHSEC,
    body=BODY,
    sign=sw_signed,
    auth_headers=("webhook-signature",),
)

VERIFY_FUZZ = [(h.settings(events_token=EVENTS_TOKEN, EVENTS_WEBHOOK_SECRET=WHSEC), None)]


def test_standard_webhooks_reference_vector() -> None:
    """The example in the Standard Webhooks spec's reference libraries."""
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    payload = b'{"test": 2432232314}'
    assert events.calculate_signature(
        secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, payload
    ) == ("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")


@pytest.mark.parametrize("skew", [-301, 301, -100_000])
def test_standard_webhooks_expired_or_future(skew: int) -> None:
    req = sw_signed(BODY, WHSEC, timestamp=NOW + skew)
    with pytest.raises(SignatureError, match="replay window"):
        events.verify(req, CONTRACT.settings())


def test_standard_webhooks_window_is_the_setting() -> None:
    req = sw_signed(BODY, WHSEC, timestamp=NOW - 1000)
    wide = h.settings(EVENTS_WEBHOOK_SECRET=WHSEC)
    events.verify(req, replace(wide, replay_window=1200.0))
    with pytest.raises(SignatureError, match="replay window"):
        events.verify(req, replace(wide, replay_window=900.0))


def test_webhook_id_is_the_replay_key_of_signed_requests_only() -> None:
    signed = sw_signed(BODY, WHSEC)
    key = events.replay_key(signed, CONTRACT.settings())
    assert key is not None and key.key == "msg_2KWPBgLlAfxdpx2A" and key.ttl >= 600
    assert events.replay_key(bearer(EVENTS_TOKEN), CONTRACT.settings()) is None
    odd = h.with_changes(signed, headers={**signed.headers, "webhook-id": "id\udcff"})
    with pytest.raises(SignatureError, match="webhook-id"):
        events.verify(odd, CONTRACT.settings())


@pytest.mark.parametrize("skew", [-299, 0, 299])
def test_standard_webhooks_within_tolerance(skew: int) -> None:
    events.verify(sw_signed(BODY, WHSEC, timestamp=NOW + skew), CONTRACT.settings())


def test_standard_webhooks_several_signatures_and_bad_ones() -> None:
    req = sw_signed(BODY, WHSEC)
    good = req.headers["webhook-signature"]
    other = events.calculate_signature("whsec_" + base64.b64encode(b"old").decode(), "x", 1, BODY)
    rotated = h.with_changes(
        req, headers={**req.headers, "webhook-signature": f"{other} v1a,abc {good}"}
    )
    events.verify(rotated, CONTRACT.settings())
    for value in (other, "v1,", "garbage", "v2," + good[3:]):
        bad = h.with_changes(req, headers={**req.headers, "webhook-signature": value})
        with pytest.raises(SignatureError):
            events.verify(bad, CONTRACT.settings())
    for header in ("webhook-id", "webhook-timestamp"):
        missing = h.with_changes(req, headers={k: v for k, v in req.headers.items() if k != header})
        with pytest.raises(SignatureError):
            events.verify(missing, CONTRACT.settings())
    bad_ts = h.with_changes(req, headers={**req.headers, "webhook-timestamp": "soon"})
    with pytest.raises(SignatureError):
        events.verify(bad_ts, CONTRACT.settings())


def test_wrong_bearer_falls_back_to_a_valid_signature() -> None:
    req = sw_signed(BODY, WHSEC)
    both = h.with_changes(req, headers={**req.headers, "authorization": "Bearer stale"})
    events.verify(both, h.settings(events_token=EVENTS_TOKEN, EVENTS_WEBHOOK_SECRET=WHSEC))


def test_enabled_by_either_credential() -> None:
    assert not events.enabled(h.settings())
    assert events.enabled(h.settings(events_token=EVENTS_TOKEN))
    assert events.enabled(h.settings(EVENTS_WEBHOOK_SECRET=WHSEC))


def test_signature_on_a_token_only_setup_is_refused() -> None:
    with pytest.raises(SignatureError, match="not enabled"):
        events.verify(sw_signed(BODY, WHSEC), h.settings(events_token=EVENTS_TOKEN))
