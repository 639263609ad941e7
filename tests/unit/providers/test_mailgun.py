"""Mailgun webhooks: body signature within the replay window, every mapping line, failure
categories, robustness."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.providers import mailgun
from processors.providers.base import FramingError, SignatureError

from . import harness as h

MG_ID = "20130503182626.18666.16540@sandbox.mailgun.org"
KEY = "key-mailgun-signing-0f3c9a"
TOKEN = "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0"
STAMP = int(h.RECEIVED_AT) - 30


def row(status: str, word: str, category: str | None = None) -> h.Row:
    return (f"mailgun:{MG_ID}", status, word, "email", category)


CASES = [
    h.Case("accepted.json", [row("queued", "accepted")]),
    h.Case("delivered.json", [row("delivered", "delivered")]),
    h.Case("failed_permanent_bounce.json", [row("undelivered", "failed/permanent", "unreachable")]),
    h.Case(
        "failed_permanent_suppress_bounce.json",
        [row("undelivered", "failed/permanent", "unreachable")],
    ),
    h.Case(
        "failed_permanent_suppress_unsubscribe.json",
        [row("undelivered", "failed/permanent", "opted_out")],
    ),
    h.Case("failed_temporary.json", [], ignored=1),
    h.Case("opened.json", [row("read", "opened")]),
    h.Case("clicked.json", [row("clicked", "clicked")]),
    h.Case("complained.json", [row("complained", "complained")]),
    h.Case("unsubscribed.json", [row("unsubscribed", "unsubscribed")]),
    h.Case("rejected.json", [row("rejected", "rejected", "unknown")]),
    h.Case("stored.json", [], ignored=1),
    h.Case("unknown_event.json", [], dead=["unknown mailgun event 'teleported'"]),
    h.Case("missing_message_id.json", [], dead=["without message.headers.message-id"]),
]


def event_data(name: str = "delivered.json") -> dict[str, Any]:
    return json.loads(h.fixture("mailgun", name))["event-data"]


def parse_data(data: dict[str, Any]) -> Any:
    return mailgun.parse(h.request("mailgun", mailgun.sign(data, KEY, STAMP, TOKEN)))


# PROVIDERS.md "Email", Mailgun: every mapping line.
@pytest.mark.parametrize(
    ("word", "severity", "status"),
    [
        ("accepted", None, "queued"),
        ("delivered", None, "delivered"),
        ("failed", "permanent", "undelivered"),
        ("failed", "temporary", None),
        ("opened", None, "read"),
        ("clicked", None, "clicked"),
        ("complained", None, "complained"),
        ("unsubscribed", None, "unsubscribed"),
        ("rejected", None, "rejected"),
        ("stored", None, None),
        ("DELIVERED", None, "delivered"),
    ],
)
def test_event_mapping(word: str, severity: str | None, status: str | None) -> None:
    data = event_data()
    data["event"] = word
    if severity:
        data["severity"] = severity
    result = parse_data(data)
    assert not result.dead
    assert [e.status for e in result.events] == ([status] if status else [])
    assert result.ignored == (0 if status else 1)


def test_event_details() -> None:
    (event,) = parse_data(event_data("failed_permanent_bounce.json")).events
    assert event.provider_message_id == MG_ID
    assert event.account == "sandbox.mailgun.org"
    assert event.occurred_at == pytest.approx(1521472262.908181 + 3)
    assert event.error is not None
    assert event.error.code == "550"
    assert event.error.description is not None and "does not exist" in event.error.description


def test_angle_brackets_are_stripped() -> None:
    data = event_data()
    data["message"]["headers"]["message-id"] = f"<{MG_ID}>"
    (event,) = parse_data(data).events
    assert event.message_key == f"mailgun:{MG_ID}"


@pytest.mark.parametrize(
    ("reason", "status", "category"),
    [
        ("suppress-bounce", {"code": 605}, "unreachable"),
        ("suppress-unsubscribe", {"code": 606}, "opted_out"),
        ("suppress-complaint", {"code": 607}, "opted_out"),
        ("espblock", {"code": 550}, "blocked"),
        ("old", {}, "expired"),
        ("bounce", {"code": 550, "message": "550 5.1.1 no such user"}, "unreachable"),
        ("bounce", {"code": 552, "message": "5.2.2 mailbox full"}, "unreachable"),
        ("bounce", {"code": 554, "message": "5.7.1 rejected as spam by policy"}, "blocked"),
        ("bounce", {"code": 550, "enhanced-code": "5.6.0", "message": ""}, "content_rejected"),
        ("generic", {"code": 550, "message": "Requested action not taken"}, "unreachable"),
        ("generic", {"code": 500, "message": "?"}, "unknown"),
        ("generic", {}, "unknown"),
    ],
)
def test_failure_categories(reason: str, status: dict[str, Any], category: str) -> None:
    data = event_data("failed_permanent_bounce.json")
    data["reason"] = reason
    data["delivery-status"] = status
    (event,) = parse_data(data).events
    assert event.error is not None and event.error.category == category


def test_failed_without_or_with_unknown_severity_is_dead_lettered() -> None:
    data = event_data("failed_permanent_bounce.json")
    data.pop("severity")
    assert [d.reason for d in parse_data(data).dead] == ["mailgun failed event without severity"]
    data["severity"] = "sideways"
    assert [d.reason for d in parse_data(data).dead] == ["unknown mailgun severity 'sideways'"]


@pytest.mark.parametrize(
    "body", [b"", b"x", b"[]", b"{}", b'{"event-data": []}', b'{"signature": {}}', b"1"]
)
def test_wrong_framing(body: bytes) -> None:
    with pytest.raises(FramingError):
        mailgun.parse(h.request("mailgun", body))


# --- signature ----------------------------------------------------------------------------


def contract_sign(body: bytes, secret: str) -> h.WebhookRequest:
    data = json.loads(body)["event-data"]
    return h.request("mailgun", mailgun.sign(data, secret, STAMP, TOKEN))


CONTRACT = h.SignatureContract(
    module=mailgun,
    secret_name="MAILGUN_SIGNING_KEY",
    secret=KEY,
    body=h.fixture("mailgun", "delivered.json"),
    sign=contract_sign,
    auth_headers=(),
)

# the credential is inside the signed body: there is no header to leave out
CHECKS = tuple(c for c in h.SIGNATURE_CHECKS if c != "missing_header")
MIN_MUTATIONS = 20


# The proof is in the body: "missing header" becomes the missing-field tests below.


def test_signature_is_mailgun_hmac() -> None:
    """The documented recipe: hex HMAC-SHA256(key, timestamp + token)."""
    import hashlib
    import hmac

    expected = hmac.new(KEY.encode(), f"{STAMP}{TOKEN}".encode(), hashlib.sha256).hexdigest()
    assert mailgun.calculate_signature(KEY, str(STAMP), TOKEN) == expected


def resigned(**block: Any) -> h.WebhookRequest:
    doc = orjson.loads(mailgun.sign(event_data(), KEY, STAMP, TOKEN))
    doc["signature"].update(block)
    for name in [k for k, v in block.items() if v is None]:
        doc["signature"].pop(name)
    return h.request("mailgun", orjson.dumps(doc))


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"signature": None}, "missing"),
        ({"token": None}, "missing"),
        ({"timestamp": None}, "missing"),
        ({"signature": ""}, "missing"),
        ({"token": TOKEN + "x"}, "does not match"),
        ({"signature": "0" * 64}, "does not match"),
        ({"timestamp": "abc"}, "unix seconds"),
        ({"timestamp": 1.5}, "missing"),
    ],
)
def test_signature_fields(block: dict[str, Any], message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        mailgun.verify(resigned(**block), CONTRACT.settings())


def test_integer_timestamp_and_uppercase_hex_are_accepted() -> None:
    doc = orjson.loads(mailgun.sign(event_data(), KEY, STAMP, TOKEN))
    doc["signature"]["timestamp"] = STAMP
    doc["signature"]["signature"] = doc["signature"]["signature"].upper()
    mailgun.verify(h.request("mailgun", orjson.dumps(doc)), CONTRACT.settings())


@pytest.mark.parametrize(
    ("age", "accepted"), [(0, True), (299, True), (301, False), (-301, False), (86_400, False)]
)
def test_replay_window_from_received_at(age: int, accepted: bool) -> None:
    body = mailgun.sign(event_data(), KEY, int(h.RECEIVED_AT) - age, TOKEN)
    req = h.request("mailgun", body)
    if accepted:
        mailgun.verify(req, CONTRACT.settings())
    else:
        with pytest.raises(SignatureError, match="300 s replay window"):
            mailgun.verify(req, CONTRACT.settings())


def test_the_token_is_the_replay_key() -> None:
    """The signature covers timestamp + token only: the gateway remembers tokens
    (tests/unit/test_hostile_gateway.py shows the forged second body refused)."""
    req = h.request("mailgun", mailgun.sign(event_data(), KEY, STAMP, TOKEN))
    key = mailgun.replay_key(req, CONTRACT.settings())
    assert key is not None and key.key == TOKEN and key.ttl >= 2 * 300
    with pytest.raises(SignatureError, match="token"):
        mailgun.verify(resigned(token="tok\nen"), CONTRACT.settings())


# --- robustness -------------------------------------------------------------------------


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=30,
)
EVENT_DATA = st.fixed_dictionaries(
    {"event": st.sampled_from([*mailgun.STATUS_MAP, "failed"]) | JSON},
    optional={
        "severity": st.sampled_from(["permanent", "temporary"]) | JSON,
        "reason": JSON,
        "delivery-status": JSON,
        "message": st.fixed_dictionaries({"headers": st.fixed_dictionaries({"message-id": JSON})})
        | JSON,
        "timestamp": JSON,
        "reject": JSON,
    },
)


@settings(max_examples=300, deadline=None)
@given(EVENT_DATA, JSON)
def test_random_events_never_crash(data: object, signature: object) -> None:
    body = json.dumps({"signature": signature, "event-data": data}).encode()
    h.parse_never_raises(mailgun, body, "application/json")
