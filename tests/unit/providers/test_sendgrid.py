"""SendGrid Event Webhook: ECDSA signature, every mapping line, bounce categories, robustness."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.providers import sendgrid
from processors.providers.base import FramingError, SignatureError

from . import harness as h

SG = "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0"
SG2 = "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.1"
KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC = sendgrid.public_key_setting(KEY)
STAMP = int(h.RECEIVED_AT)


def row(status: str, word: str, category: str | None = None, key: str = SG) -> h.Row:
    return (f"sendgrid:{key}", status, word, "email", category)


CASES = [
    h.Case(
        "batch_events.json",
        [
            row("queued", "processed"),
            row("delivered", "delivered"),
            row("read", "open"),
            row("clicked", "click"),
            row("complained", "spamreport"),
            row("unsubscribed", "unsubscribe"),
            row("unsubscribed", "group_unsubscribe"),
        ],
        ignored=2,  # deferred, group_resubscribe
    ),
    h.Case("processed.json", [row("queued", "processed")]),
    h.Case("delivered.json", [row("delivered", "delivered")]),
    h.Case("open.json", [row("read", "open")]),
    h.Case("deferred.json", [], ignored=1),
    h.Case(
        "bounce_invalid_address.json",
        [row("undelivered", "bounce", "unreachable", key=SG2)],
    ),
    h.Case("bounce_blocked.json", [row("undelivered", "bounce", "blocked")]),
    h.Case("bounce_unclassified.json", [row("undelivered", "bounce", "unknown")]),
    h.Case("dropped_unsubscribed.json", [row("rejected", "dropped", "opted_out")]),
    h.Case("dropped_bounced_address.json", [row("rejected", "dropped", "unreachable")]),
    h.Case(
        "unknown_event.json",
        [row("delivered", "delivered")],
        dead=[
            "unknown sendgrid event 'teleported'",
            "sendgrid event without sg_message_id",
            "sendgrid event is not an object",
        ],
    ),
]


# PROVIDERS.md "Email", SendGrid: every mapping line.
@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("processed", "queued"),
        ("delivered", "delivered"),
        ("bounce", "undelivered"),
        ("dropped", "rejected"),
        ("open", "read"),
        ("click", "clicked"),
        ("spamreport", "complained"),
        ("unsubscribe", "unsubscribed"),
        ("group_unsubscribe", "unsubscribed"),
        ("Delivered", "delivered"),  # case-insensitive
    ],
)
def test_event_mapping(word: str, status: str) -> None:
    doc = json.loads(h.fixture("sendgrid", "processed.json"))
    doc[0]["event"] = word
    (event,) = sendgrid.parse(h.request("sendgrid", json.dumps(doc).encode())).events
    assert (event.status, event.provider_status, event.channel) == (status, word.lower(), "email")
    assert (event.error is not None) == (status in ("undelivered", "rejected"))


@pytest.mark.parametrize("word", ["deferred", "group_resubscribe", "account_status_change"])
def test_ignored_events(word: str) -> None:
    doc = json.loads(h.fixture("sendgrid", "processed.json"))
    doc[0]["event"] = word
    result = sendgrid.parse(h.request("sendgrid", json.dumps(doc).encode()))
    assert (result.events, result.dead, result.ignored) == ([], [], 1)


def test_event_details() -> None:
    result, _ = h.parse_case(sendgrid, h.Case("bounce_invalid_address.json", []))
    (event,) = result.events
    assert event.provider_message_id == SG2  # the full sg_message_id, never its prefix
    assert event.occurred_at == 1513299569.0
    assert event.account is None
    assert event.error is not None
    assert event.error.code == "5.1.1"
    assert event.error.description is not None and "does not exist" in event.error.description


@pytest.mark.parametrize(
    ("fields", "category"),
    [
        ({"bounce_classification": "Invalid Address"}, "unreachable"),
        ({"bounce_classification": "Mailbox Unavailable"}, "unreachable"),
        ({"bounce_classification": "Technical"}, "unreachable"),
        ({"bounce_classification": "Technical Failure"}, "unreachable"),
        ({"bounce_classification": "Content"}, "content_rejected"),
        ({"bounce_classification": "Reputation"}, "blocked"),
        ({"bounce_classification": "Frequency or Volume"}, "rate_limited"),
        ({"bounce_classification": "Frequency or Volume Too High"}, "rate_limited"),
        ({"type": "blocked"}, "blocked"),
        ({"status": "5.1.1", "reason": "550 5.1.1 user unknown"}, "unreachable"),
        ({"status": "5.2.2", "reason": "552 5.2.2 mailbox full"}, "unreachable"),
        ({"status": "5.3.4", "reason": "552 5.3.4 message too big"}, "content_rejected"),
        ({"status": "5.7.1", "reason": "554 5.7.1 rejected by policy"}, "blocked"),
        ({"status": "5.4.7", "reason": "delivery time expired"}, "expired"),
        ({"status": "5.0.0", "reason": "550 No Such User Here"}, "unreachable"),
        ({"status": "5.0.0", "reason": "message contains a virus"}, "content_rejected"),
        ({"status": "5.0.0", "reason": "554 rejected"}, "blocked"),
        ({"status": "5.0.0", "reason": "500 unknown recipient"}, "unknown"),
        ({}, "unknown"),
    ],
)
def test_bounce_categories(fields: dict[str, str], category: str) -> None:
    item = {"event": "bounce", "sg_message_id": SG, "timestamp": 1513299569, **fields}
    (event,) = sendgrid.parse(h.request("sendgrid", json.dumps([item]).encode())).events
    assert event.error is not None and event.error.category == category


@pytest.mark.parametrize(
    ("reason", "category"),
    [
        ("Bounced Address", "unreachable"),
        ("Invalid", "unreachable"),
        ("Unsubscribed Address", "opted_out"),
        ("Spam Reporting Address", "opted_out"),
        ("Spam Content (if Spam Checker app is enabled)", "content_rejected"),
        ("Spam Content", "content_rejected"),
        ("Recipient List over Package Quota", "account_problem"),
        ("Invalid SMTPAPI header", "unknown"),
        ("Something new", "unknown"),
    ],
)
def test_dropped_categories(reason: str, category: str) -> None:
    item = {"event": "dropped", "sg_message_id": SG, "reason": reason, "status": "5.0.0"}
    (event,) = sendgrid.parse(h.request("sendgrid", json.dumps([item]).encode())).events
    assert event.error is not None
    assert (event.error.category, event.error.description) == (category, reason)


@pytest.mark.parametrize("body", [b"", b"nope", b"{}", b'{"event": "delivered"}', b'"x"', b"1"])
def test_wrong_framing(body: bytes) -> None:
    with pytest.raises(FramingError):
        sendgrid.parse(h.request("sendgrid", body))


def test_empty_array_is_nothing() -> None:
    result = sendgrid.parse(h.request("sendgrid", b"[]"))
    assert (result.events, result.dead, result.ignored) == ([], [], 0)


# --- signature ----------------------------------------------------------------------------


def signed(body: bytes, secret: str) -> h.WebhookRequest:
    key = KEY if secret == PUBLIC else OTHER_KEY
    return h.request("sendgrid", body, headers=sendgrid.sign(body, key, STAMP))


CONTRACT = h.SignatureContract(
    module=sendgrid,
    secret_name="SENDGRID_PUBLIC_KEY",
    secret=PUBLIC,
    body=h.fixture("sendgrid", "batch_events.json"),
    sign=signed,
    auth_headers=(sendgrid.SIGNATURE_HEADER,),
)

MIN_MUTATIONS = 20


def test_signature_covers_the_timestamp() -> None:
    body = CONTRACT.body
    headers = sendgrid.sign(body, KEY, STAMP)
    headers[sendgrid.TIMESTAMP_HEADER] = str(STAMP + 1)
    with pytest.raises(SignatureError):
        sendgrid.verify(h.request("sendgrid", body, headers=headers), CONTRACT.settings())


def test_missing_timestamp_is_refused() -> None:
    req = signed(CONTRACT.body, PUBLIC)
    headers = {k: v for k, v in req.headers.items() if k != sendgrid.TIMESTAMP_HEADER}
    with pytest.raises(SignatureError, match="Timestamp"):
        sendgrid.verify(h.with_changes(req, headers=headers), CONTRACT.settings())


def test_signature_matches_sendgrid_published_example() -> None:
    """The key, signature and timestamp from SendGrid's own eventwebhook library tests."""
    public = (
        "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7"
        "yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA=="
    )
    signature = (
        "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWY"
        "NH2j/0="
    )
    payload = b'{"category":"example_payload","event":"test_event","message_id":"message_id"}'
    headers = {sendgrid.SIGNATURE_HEADER: signature, sendgrid.TIMESTAMP_HEADER: "1588788367"}
    configured = h.settings(SENDGRID_PUBLIC_KEY=public)
    then = 1588788367.0  # received when SendGrid signed it: inside the replay window
    sendgrid.verify(h.request("sendgrid", payload, headers=headers, received_at=then), configured)
    with pytest.raises(SignatureError, match="does not match"):
        sendgrid.verify(
            h.request("sendgrid", payload + b" ", headers=headers, received_at=then), configured
        )
    # Finding: no window was enforced, a POST signed years ago still passed.
    with pytest.raises(SignatureError, match="replay window"):
        sendgrid.verify(h.request("sendgrid", payload, headers=headers), configured)


@pytest.mark.parametrize(
    ("age", "accepted"), [(0, True), (-299, True), (301, False), (-301, False)]
)
def test_replay_window(age: int, accepted: bool) -> None:
    body = h.fixture("sendgrid", "delivered.json")
    headers = sendgrid.sign(body, KEY, int(h.RECEIVED_AT) - age)
    req = h.request("sendgrid", body, headers=headers)
    configured = h.settings(SENDGRID_PUBLIC_KEY=sendgrid.public_key_setting(KEY))
    if accepted:
        sendgrid.verify(req, configured)
    else:
        with pytest.raises(SignatureError, match="replay window"):
            sendgrid.verify(req, configured)


def test_pem_public_key_is_accepted_too() -> None:
    from cryptography.hazmat.primitives import serialization

    pem = (
        KEY.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    sendgrid.verify(signed(CONTRACT.body, PUBLIC), h.settings(SENDGRID_PUBLIC_KEY=pem))


@pytest.mark.parametrize(
    "configured",
    [
        "not base64 !!",
        "AAAA",
        # an RSA key is not SendGrid's kind of key
        "MFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu"
        "KUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQ==",
    ],
)
def test_unusable_configured_key_refuses(configured: str) -> None:
    with pytest.raises(SignatureError, match="MSGSTATUS_SENDGRID_PUBLIC_KEY"):
        sendgrid.verify(signed(CONTRACT.body, PUBLIC), h.settings(SENDGRID_PUBLIC_KEY=configured))


# --- robustness -------------------------------------------------------------------------


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=30,
)
EVENT = st.fixed_dictionaries(
    {},
    optional={
        "event": st.sampled_from(sorted(sendgrid.STATUS_MAP)) | JSON,
        "sg_message_id": st.text(max_size=40) | JSON,
        "timestamp": JSON,
        "reason": JSON,
        "status": JSON,
        "type": JSON,
        "bounce_classification": JSON,
    },
)


@settings(max_examples=300, deadline=None)
@given(st.lists(EVENT | JSON, max_size=5))
def test_random_events_never_crash(doc: object) -> None:
    h.parse_never_raises(sendgrid, json.dumps(doc).encode(), "application/json")
