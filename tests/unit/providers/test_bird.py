"""Bird (MessageBird): Channels API statuses, failures and interactions, legacy SMS status
reports; the current HMAC signature (URL-bound, timestamp window) and the legacy JWT."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from processors.config import ConfigError
from processors.providers import bird, jwt_hmac
from processors.providers.base import FramingError, SignatureError

from . import harness as h

KEY = "bird-subscription-signing-key-0123456789"
LEGACY_KEY = "messagebird-legacy-signing-key-0123456789"
URL = "https://status.example.com/webhooks/bird"
CHANNEL = "c0ffee00-1234-4abc-9def-0123456789ab"


def row(key: str, status: str, word: str, channel: str, category: str | None = None) -> h.Row:
    return (f"bird:{key}", status, word, channel, category)


CASES = [
    h.Case("sms_sent.json", [row("7f9a3e5c-1b2d-4e6f-8a9b-0c1d2e3f4a5b", "sent", "sent", "sms")]),
    h.Case(
        "sms_delivered.json",
        [row("7f9a3e5c-1b2d-4e6f-8a9b-0c1d2e3f4a5b", "delivered", "delivered", "sms")],
    ),
    h.Case(
        "sms_delivery_failed_unknown_subscriber.json",
        [
            row(
                "8a0b4f6d-2c3e-4f70-9b1c-1d2e3f4a5b6c",
                "undelivered",
                "delivery_failed",
                "sms",
                "invalid_number",
            )
        ],
    ),
    h.Case(
        "whatsapp_sent.json",
        [row("9b1c5a7e-3d4f-4081-8c2d-2e3f4a5b6c7d", "sent", "sent", "whatsapp")],
    ),
    h.Case(
        "whatsapp_interaction_read.json",
        [row("9b1c5a7e-3d4f-4081-8c2d-2e3f4a5b6c7d", "read", "read", "whatsapp")],
    ),
    h.Case(
        "whatsapp_sending_failed.json",
        [
            row(
                "1d3e7c9a-5f6b-42a3-8e4f-4a5b6c7d8e9f",
                "failed",
                "sending_failed",
                "whatsapp",
                "account_problem",
            )
        ],
    ),
    h.Case(
        "sms_inbound.json",
        [row("2e4f8dab-6a7c-43b4-9f5a-5b6c7d8e9fa0", "received", "sms.inbound", "sms")],
    ),
    h.Case("unknown_status.json", [], dead=["unknown bird status 'processing'"]),
    h.Case(
        "legacy_sms_delivered.query",
        [row("efa6405d518d4c0c88cce11f7db775fb", "delivered", "delivered", "sms")],
    ),
    h.Case(
        "legacy_sms_delivery_failed.form",
        [
            row(
                "0fb7516e629d4d1d99ddf2208ec886ac",
                "undelivered",
                "delivery_failed",
                "sms",
                "invalid_number",
            )
        ],
    ),
]


def test_account_time_and_failure_details() -> None:
    result, _ = h.parse_case(bird, h.Case("sms_delivery_failed_unknown_subscriber.json", []))
    (event,) = result.events
    assert event.account == CHANNEL
    assert event.occurred_at == 1777386660.0  # lastStatusAt 2026-04-28T14:31:00Z
    assert event.error is not None
    assert (event.error.code, event.error.description) == (
        "15005",
        "details: unknown subscriber; reason: unknown_subscriber; code: 1",
    )


def _message(word: str, failure: dict | None = None, **extra: object) -> bytes:
    payload: dict[str, object] = {"id": "m-1", "channelId": CHANNEL, "status": word, **extra}
    if failure is not None:
        payload["failure"] = failure
    return json.dumps({"service": "channels", "event": "sms.outbound", "payload": payload}).encode()


# PROVIDERS-NEXT.md "Bird": every status word.
@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("accepted", "accepted"),
        ("sent", "sent"),
        ("sending_failed", "failed"),
        ("delivered", "delivered"),
        ("delivery_failed", "undelivered"),
    ],
)
def test_status_mapping(word: str, status: str) -> None:
    (event,) = bird.parse(h.request("bird", _message(word))).events
    assert (event.status, event.provider_status) == (status, word)
    assert (event.error is not None) == (status in ("failed", "undelivered"))


@pytest.mark.parametrize("word", ["processing", "scheduled", "skipped"])
def test_undocumented_words_are_dead_letters(word: str) -> None:
    result = bird.parse(h.request("bird", _message(word)))
    assert [d.reason for d in result.dead] == [f"unknown bird status {word!r}"]


@pytest.mark.parametrize(
    ("failure", "extra", "category"),
    [
        # the SMS platform: by its GSM code...
        *[
            (
                {"code": 15005, "source": {"name": "sms-messagebird", "code": c}},
                {},
                "invalid_number",
            )
            for c in ("1", "2", "3", "5", "9", "10", "11", "12")
        ],
        *[
            ({"code": 15005, "source": {"name": "sms-messagebird", "code": c}}, {}, "unreachable")
            for c in ("8", "26", "27", "31")
        ],
        ({"code": 15005, "source": {"name": "sms-messagebird", "code": "0"}}, {}, "unknown"),
        # ... or by its reason word
        (
            {"code": 15001, "source": {"name": "sms-messagebird"}},
            {"reason": "reason: expired"},
            "expired",
        ),
        (
            {"code": 15001, "source": {"name": "sms-messagebird"}},
            {"details": "received_network_error"},
            "provider_error",
        ),
        # other sources: by the family of failure.code
        ({"code": 11001, "source": {"name": "pre-processing"}}, {}, "content_rejected"),
        ({"code": 11002, "source": {"name": "pre-processing"}}, {}, "content_rejected"),
        ({"code": 12001, "source": {"name": "accounting"}}, {}, "provider_error"),
        ({"code": 12002, "source": {"name": "touchpoint"}}, {}, "provider_error"),
        ({"code": 12003, "source": {"name": "touchpoint"}}, {}, "account_problem"),
        ({"code": 14001, "source": {"name": "contact"}}, {}, "account_problem"),
        ({"code": 15001, "source": {"name": "whatsapp"}}, {}, "unknown"),
        ({"code": "x"}, {}, "unknown"),
    ],
)
def test_failure_categories(failure: dict, extra: dict, category: str) -> None:
    body = _message("delivery_failed", failure, **extra)
    (event,) = bird.parse(h.request("bird", body)).events
    assert event.error is not None and event.error.category == category
    assert event.error.code == str(failure["code"])


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        ("read", "read"),
        ("opened", "read"),
        ("clicked", "clicked"),
        ("reported-as-spam", "complained"),
        ("unsubscribe-request", "unsubscribed"),
    ],
)
def test_interactions(kind: str, status: str) -> None:
    body = json.dumps(
        {
            "service": "channels",
            "event": "email.interaction",
            "payload": {"id": "i-1", "messageId": "m-9", "channelId": CHANNEL, "type": kind},
        }
    ).encode()
    (event,) = bird.parse(h.request("bird", body)).events
    assert (event.provider_message_id, event.status, event.channel) == ("m-9", status, "email")


def test_keyword_interaction_ignored_unknown_dead() -> None:
    def interaction(kind: str) -> bytes:
        payload = {"messageId": "m-9", "type": kind}
        return json.dumps({"event": "sms.interaction", "payload": payload}).encode()

    assert bird.parse(h.request("bird", interaction("compliance-keyword"))).ignored == 1
    result = bird.parse(h.request("bird", interaction("teleported")))
    assert [d.reason for d in result.dead] == ["unknown bird interaction 'teleported'"]
    other = json.dumps({"event": "sms.sideways", "payload": {}}).encode()
    assert [d.reason for d in bird.parse(h.request("bird", other)).dead] == [
        "unknown bird event 'sms.sideways'"
    ]


@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("scheduled", "scheduled"),
        ("sent", "sent"),
        ("buffered", "sent"),
        ("delivered", "delivered"),
        ("expired", "expired"),
        ("delivery_failed", "undelivered"),
    ],
)
def test_legacy_status_mapping(word: str, status: str) -> None:
    query = f"id=abc&status={word}&statusDatetime=2026-04-28T14%3A30%3A05%2B00%3A00".encode()
    req = h.request("bird", query, content_type=None, method="GET")
    (event,) = bird.parse(req).events
    assert (event.status, event.provider_status, event.channel) == (status, word, "sms")
    assert event.occurred_at == 1777386605.0


@pytest.mark.parametrize("body", [b"", b"[]", b"{}", b'{"payload": []}'])
def test_not_a_bird_event_is_a_framing_error(body: bytes) -> None:
    with pytest.raises(FramingError):
        bird.parse(h.request("bird", body))


# --- current signature --------------------------------------------------------------------


def signed_at(body: bytes, secret: str, at: float, url: str = URL) -> h.WebhookRequest:
    return h.request("bird", body, url=url, headers=bird.sign(url, body, secret, at))


CONTRACT = h.SignatureContract(
    module=bird,
    secret_name="BIRD_SIGNING_KEY",
    secret=KEY,
    body=h.fixture("bird", "sms_delivered.json"),
    sign=lambda body, secret: signed_at(body, secret, h.RECEIVED_AT),
    auth_headers=(bird.SIGNATURE_HEADER,),
    # signed by Bird, but for another subscription's URL: not ours
    wrong_account=lambda body: h.request(
        "bird",
        body,
        url=URL,
        headers=bird.sign("https://other.example.com/webhooks/bird", body, KEY, h.RECEIVED_AT),
    ),
    sign_at=signed_at,
    # the contract checks the window it configures; the default (9 hours) is tested below
    extra_settings={"BIRD_MAX_AGE": "300"},
)

CHECKS = h.FULL_SIGNATURE_CHECKS
MIN_MUTATIONS = 20
VERIFY_FUZZ = [(CONTRACT.settings(BIRD_LEGACY_SIGNING_KEY=LEGACY_KEY), URL)]


def test_signature_is_bird_s_documented_construction() -> None:
    """Bird's verification sample: HMAC-SHA256(key, ts \\n url \\n sha256(body) raw)."""
    body = CONTRACT.body
    stamp = str(int(h.RECEIVED_AT))
    digest = hashlib.sha256(body).digest()
    want = hmac.new(KEY.encode(), f"{stamp}\n{URL}\n".encode() + digest, hashlib.sha256).digest()
    headers = bird.sign(URL, body, KEY, h.RECEIVED_AT)
    assert base64.b64decode(headers[bird.SIGNATURE_HEADER]) == want


def test_max_age_widens_the_window_for_retries() -> None:
    old = signed_at(CONTRACT.body, KEY, h.RECEIVED_AT - 8 * 3600)
    with pytest.raises(SignatureError, match="window"):
        bird.verify(old, CONTRACT.settings())  # the contract's 300 s
    bird.verify(old, h.settings(BIRD_SIGNING_KEY=KEY))  # by default Bird's 8-hour retries pass
    too_old = signed_at(CONTRACT.body, KEY, h.RECEIVED_AT - 10 * 3600)
    with pytest.raises(SignatureError, match="window"):
        bird.verify(too_old, h.settings(BIRD_SIGNING_KEY=KEY))
    with pytest.raises(ConfigError, match="MSGSTATUS_BIRD_MAX_AGE"):  # refused at start
        CONTRACT.settings(BIRD_MAX_AGE="soon")


def test_the_query_string_is_part_of_the_signed_url() -> None:
    with_query = URL + "?tenant=acme"
    req = signed_at(CONTRACT.body, KEY, h.RECEIVED_AT, url=with_query)
    bird.verify(req, CONTRACT.settings())
    with pytest.raises(SignatureError):
        bird.verify(h.with_changes(req, url=URL), CONTRACT.settings())


# --- legacy MessageBird-Signature-JWT -------------------------------------------------------


LEGACY_SETTINGS = h.settings(BIRD_LEGACY_SIGNING_KEY=LEGACY_KEY)


def legacy_get(query: bytes, *, at: float = h.RECEIVED_AT, key: str = LEGACY_KEY, **kw):
    url = f"{URL}?{query.decode()}"
    token = bird.legacy_token(key, url, b"", at, **kw)
    headers = {bird.LEGACY_HEADER: token}
    return h.request("bird", query, url=url, headers=headers, content_type=None, method="GET")


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_legacy_get_status_report(alg: str) -> None:
    query = h.fixture("bird", "legacy_sms_delivered.query")
    req = legacy_get(query, alg=alg)
    assert bird.enabled(LEGACY_SETTINGS)
    bird.verify(req, LEGACY_SETTINGS)
    assert bird.parse(req).events[0].status == "delivered"


def test_legacy_post_binds_url_and_body() -> None:
    body = h.fixture("bird", "legacy_sms_delivery_failed.form")
    token = bird.legacy_token(LEGACY_KEY, URL, body, h.RECEIVED_AT)
    req = h.request(
        "bird",
        body,
        url=URL,
        headers={bird.LEGACY_HEADER: token},
        content_type="application/x-www-form-urlencoded",
    )
    bird.verify(req, LEGACY_SETTINGS)
    with pytest.raises(SignatureError, match="payload_hash"):
        bird.verify(
            h.with_changes(req, body=body.replace(b"status=delivery_failed", b"status=delivered")),
            LEGACY_SETTINGS,
        )
    with pytest.raises(SignatureError, match="url_hash"):
        bird.verify(h.with_changes(req, url=URL + "?x=1"), LEGACY_SETTINGS)


def test_legacy_refusals() -> None:
    query = h.fixture("bird", "legacy_sms_delivered.query")
    with pytest.raises(SignatureError, match="expired"):
        bird.verify(legacy_get(query, at=h.RECEIVED_AT - 3600), LEGACY_SETTINGS)
    with pytest.raises(SignatureError, match="not yet valid"):
        bird.verify(legacy_get(query, at=h.RECEIVED_AT + 600), LEGACY_SETTINGS)
    with pytest.raises(SignatureError, match="does not match"):
        bird.verify(legacy_get(query, key=LEGACY_KEY + "x"), LEGACY_SETTINGS)
    other_url = legacy_get(query)
    with pytest.raises(SignatureError, match="url_hash"):
        bird.verify(h.with_changes(other_url, url=URL + "?id=other"), LEGACY_SETTINGS)
    claims = {"iss": "Someone", "nbf": int(h.RECEIVED_AT), "exp": int(h.RECEIVED_AT) + 60}
    wrong_iss = h.with_changes(
        legacy_get(query), headers={bird.LEGACY_HEADER: jwt_hmac.encode(claims, LEGACY_KEY)}
    )
    with pytest.raises(SignatureError, match="iss"):
        bird.verify(wrong_iss, LEGACY_SETTINGS)
    # a legacy token is not looked at unless the legacy key is configured
    with pytest.raises(SignatureError, match="missing messagebird-signature"):
        bird.verify(legacy_get(query), CONTRACT.settings())
