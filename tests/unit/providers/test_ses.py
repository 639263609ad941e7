"""Amazon SES via SNS: SNS signatures (v1, v2), certificate and topic allow-lists, mapping,
bounce categories, subscription confirmation decisions. Never goes out on the network:
the signing certificate is a self-signed one generated here and pre-seeded."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.providers import ses
from processors.providers.base import FramingError, SignatureError
from processors.providers.ses import certificates, subscription
from processors.providers.ses import envelope as sns

from . import harness as h

TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-events"
CERT_URL = (
    "https://sns.us-east-1.amazonaws.com/"
    "SimpleNotificationService-9c6465fa7f48f5cacd23014631ec1136.pem"
)
MID = "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
CERT_PEM = ses.self_signed_certificate(KEY)
SEED = {"SES_SIGNING_CERT_URL": CERT_URL, "SES_SIGNING_CERT_PEM": CERT_PEM}
SNS_TYPE = "text/plain; charset=UTF-8"
RECEIVED_STAMP = "2026-04-28T18:13:20.000Z"  # h.RECEIVED_AT: signed when received


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Any certificate fetch is recorded and refused; the store starts empty."""
    calls: list[str] = []

    async def refuse(url: str) -> str:
        calls.append(url)
        raise OSError("tests never go out on the network")

    monkeypatch.setattr(certificates, "CERTIFICATES", certificates.CertificateStore(refuse))
    yield calls


def configured(**overrides: str) -> h.Settings:
    return h.settings(**{"SES_TOPIC_ARN": TOPIC, **SEED, **overrides})


def signed_request(
    envelope: dict[str, Any], key: rsa.RSAPrivateKey = KEY, version: str = "1"
) -> h.WebhookRequest:
    """Signed as SNS would send it now: its Timestamp is when it is received."""
    body, headers = ses.sign({**envelope, "Timestamp": RECEIVED_STAMP}, key, version)
    return h.request("ses", body, headers=headers, content_type=None)


def fixture_envelope(name: str) -> dict[str, Any]:
    return json.loads(h.fixture("ses", name))


def row(status: str, word: str, category: str | None = None) -> h.Row:
    return (f"ses:{MID}", status, word, "email", category)


def case(name: str, events: list[h.Row], **kw: Any) -> h.Case:
    return h.Case(name, events, content_type=SNS_TYPE, **kw)


CASES = [
    case("send.json", [row("sent", "Send")]),
    case("delivery.json", [row("delivered", "Delivery")]),
    case(
        "bounce_permanent_general.json",
        [row("undelivered", "Bounce/Permanent", "unreachable")],
    ),
    case(
        "bounce_permanent_noemail.json",
        [row("undelivered", "Bounce/Permanent", "unreachable")],
    ),
    case(
        "bounce_permanent_suppressed.json",
        [row("undelivered", "Bounce/Permanent", "unreachable")],
    ),
    case("bounce_transient.json", [], ignored=1),
    case("complaint.json", [row("complained", "Complaint")]),
    case("reject.json", [row("rejected", "Reject", "content_rejected")]),
    case("open.json", [row("read", "Open")]),
    case("click.json", [row("clicked", "Click")]),
    case("delivery_delay.json", [], ignored=1),
    case("rendering_failure.json", [row("failed", "Rendering Failure", "content_rejected")]),
    case("identity_bounce.json", [row("undelivered", "Bounce/Permanent", "unreachable")]),
    case("setup_notice.json", [], ignored=1),
    case("plain_text_message.json", [], ignored=1),
    case("subscription_confirmation.json", [], ignored=1),
    case("unknown_event.json", [], dead=["unknown SES event type 'Teleport'"]),
]


def ses_event(name: str) -> dict[str, Any]:
    return json.loads(fixture_envelope(name)["Message"])


def parse_event(event: dict[str, Any]) -> Any:
    envelope = ses.notification(event, TOPIC, CERT_URL, message_id="m-1")
    return ses.parse(h.request("ses", orjson.dumps(envelope), content_type=SNS_TYPE))


# PROVIDERS.md "Email", Amazon SES: every mapping line (eventType and notificationType).
@pytest.mark.parametrize("field", ["eventType", "notificationType"])
@pytest.mark.parametrize(
    ("fixture", "status"),
    [
        ("send.json", "sent"),
        ("delivery.json", "delivered"),
        ("bounce_permanent_general.json", "undelivered"),
        ("reject.json", "rejected"),
        ("complaint.json", "complained"),
        ("open.json", "read"),
        ("click.json", "clicked"),
        ("bounce_transient.json", None),
        ("delivery_delay.json", None),
    ],
)
def test_event_mapping(field: str, fixture: str, status: str | None) -> None:
    event = ses_event(fixture)
    event[field] = event.pop("eventType")
    result = parse_event(event)
    assert not result.dead
    assert [e.status for e in result.events] == ([status] if status else [])
    assert result.ignored == (0 if status else 1)


def test_event_details() -> None:
    result = parse_event(ses_event("bounce_permanent_general.json"))
    (event,) = result.events
    assert event.account == "123456789012"
    assert event.occurred_at == pytest.approx(1501893662.669)  # bounce.timestamp
    assert event.error is not None
    assert event.error.code == "General"
    assert event.error.description == "smtp; 550 5.1.1 user unknown"
    (sent,) = parse_event(ses_event("send.json")).events
    assert sent.occurred_at == pytest.approx(1501893602.012)  # mail.timestamp


@pytest.mark.parametrize(
    ("bounce_type", "subtype", "status", "diagnostic", "category"),
    [
        ("Permanent", "General", "5.1.1", "smtp; 550 5.1.1 user unknown", "unreachable"),
        ("Permanent", "General", "5.7.1", "smtp; 554 5.7.1 blocked by policy", "blocked"),
        ("Permanent", "General", None, None, "unknown"),
        ("Permanent", "NoEmail", None, None, "unreachable"),
        ("Permanent", "Suppressed", None, None, "unreachable"),
        ("Permanent", "OnAccountSuppressionList", None, None, "opted_out"),
        ("Permanent", "MailboxFull", None, None, "unreachable"),
        ("Permanent", "MessageTooLarge", None, None, "content_rejected"),
        ("Permanent", "ContentRejected", None, None, "content_rejected"),
        ("Permanent", "AttachmentRejected", None, None, "content_rejected"),
        ("Undetermined", "Undetermined", None, "smtp; 550 5.2.1 mailbox disabled", "unreachable"),
        ("Undetermined", "Undetermined", None, None, "unknown"),
    ],
)
def test_bounce_categories(
    bounce_type: str, subtype: str, status: str | None, diagnostic: str | None, category: str
) -> None:
    event = ses_event("bounce_permanent_general.json")
    event["bounce"]["bounceType"] = bounce_type
    event["bounce"]["bounceSubType"] = subtype
    recipient = event["bounce"]["bouncedRecipients"][0]
    for name, value in (("status", status), ("diagnosticCode", diagnostic)):
        if value is None:
            recipient.pop(name)
        else:
            recipient[name] = value
    (out,) = parse_event(event).events
    assert out.status == "undelivered"
    assert out.error is not None and out.error.category == category


def test_unknown_bounce_type_is_dead_lettered() -> None:
    event = ses_event("bounce_permanent_general.json")
    event["bounce"]["bounceType"] = "Sideways"
    result = parse_event(event)
    assert [d.reason for d in result.dead] == ["unknown SES bounceType 'Sideways'"]


def test_not_spam_complaint_is_ignored() -> None:
    event = ses_event("complaint.json")
    event["complaint"]["complaintFeedbackType"] = "not-spam"
    result = parse_event(event)
    assert (result.events, result.ignored) == ([], 1)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda e: e["mail"].pop("messageId"), "without mail.messageId"),
        (lambda e: e.pop("eventType"), "without eventType/notificationType"),
        (lambda e: e["bounce"].pop("bounceType"), "without bounceType"),
    ],
)
def test_incomplete_events_are_dead_lettered(mutate: Any, reason: str) -> None:
    event = ses_event("bounce_permanent_general.json")
    mutate(event)
    result = parse_event(event)
    assert len(result.dead) == 1 and reason in result.dead[0].reason


@pytest.mark.parametrize(
    "body",
    [b"", b"x", b"[]", b"{}", b'{"Type": 1}', b'{"Message": "{}"}', b'"Notification"'],
)
def test_wrong_framing(body: bytes) -> None:
    with pytest.raises(FramingError):
        ses.parse(h.request("ses", body, content_type=SNS_TYPE))


def test_other_envelope_problems_are_dead_items() -> None:
    bad_type = ses.parse(h.request("ses", b'{"Type": "Bogus"}'))
    assert [d.reason for d in bad_type.dead] == ["unknown SNS message Type 'Bogus'"]
    no_message = ses.parse(h.request("ses", b'{"Type": "Notification"}'))
    assert [d.reason for d in no_message.dead] == ["SNS notification without a Message string"]
    not_object = ses.parse(h.request("ses", b'{"Type": "Notification", "Message": "[1]"}'))
    assert [d.reason for d in not_object.dead] == ["SES notification Message is not a JSON object"]


# --- signature ----------------------------------------------------------------------------


def contract_sign(body: bytes, secret: str) -> h.WebhookRequest:
    envelope = {**json.loads(body), "TopicArn": secret}
    return signed_request(envelope)


CONTRACT = h.SignatureContract(
    module=ses,
    secret_name="SES_TOPIC_ARN",
    secret=TOPIC,
    body=h.fixture("ses", "delivery.json"),
    sign=contract_sign,
    auth_headers=(),
    extra_settings=SEED,
)

# the credential is inside the signed body: there is no header to leave out
CHECKS = tuple(c for c in h.SIGNATURE_CHECKS if c != "missing_header")
MIN_MUTATIONS = 20
VERIFY_FUZZ = [(configured(), None)]


# The proof is in the body, so "missing header" is replaced by the signature-field tests.


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize(
    "name", ["delivery.json", "bounce_permanent_general.json", "subscription_confirmation.json"]
)
def test_signature_versions_and_types(version: str, name: str, no_network: list[str]) -> None:
    ses.verify(signed_request(fixture_envelope(name), version=version), configured())
    assert no_network == []  # the pre-seeded certificate was used


def test_unsubscribe_confirmation_is_verified_like_a_confirmation() -> None:
    envelope = {**fixture_envelope("subscription_confirmation.json")}
    envelope["Type"] = "UnsubscribeConfirmation"
    ses.verify(signed_request(envelope), configured())
    assert ses.parse(signed_request(envelope)).ignored == 1


def test_subject_is_signed_when_present() -> None:
    event = ses_event("send.json")
    envelope = ses.notification(event, TOPIC, CERT_URL, message_id="m", subject="Hi")
    req = signed_request(envelope)
    ses.verify(req, configured())
    changed = orjson.loads(req.body)
    changed["Subject"] = "Hello"
    with pytest.raises(SignatureError, match="does not match"):
        ses.verify(h.with_changes(req, body=orjson.dumps(changed)), configured())


def test_string_to_sign_is_aws_canonical_form() -> None:
    envelope = {
        "Type": "Notification",
        "MessageId": "id-1",
        "TopicArn": TOPIC,
        "Message": "hello\nworld",
        "Timestamp": "2026-04-28T18:13:20.000Z",
        "UnsubscribeURL": "ignored",
    }
    assert (
        sns.string_to_sign(envelope)
        == (
            "Message\nhello\nworld\nMessageId\nid-1\nTimestamp\n2026-04-28T18:13:20.000Z\n"
            f"TopicArn\n{TOPIC}\nType\nNotification\n"
        ).encode()
    )
    confirmation = fixture_envelope("subscription_confirmation.json")
    fields = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
    expected = "".join(f"{name}\n{confirmation[name]}\n" for name in fields)
    assert sns.string_to_sign(confirmation) == expected.encode()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda e: e.update(Message="tampered"), "does not match"),
        (lambda e: e.update(Timestamp="2030-01-01T00:00:00.000Z"), "does not match"),
        (lambda e: e.update(Signature=""), "without a Signature"),
        (lambda e: e.pop("Signature"), "without a Signature"),
        (lambda e: e.update(Signature="%%%"), "cannot verify"),
        (lambda e: e.update(SignatureVersion="3"), "SignatureVersion"),
        (lambda e: e.pop("SignatureVersion"), "SignatureVersion"),
        (lambda e: e.update(TopicArn=TOPIC + "x"), "TopicArn"),
        (lambda e: e.pop("MessageId"), "cannot verify"),
        (lambda e: e.update(Type="Other"), "not an SNS Notification"),
        (lambda e: e.update(SigningCertURL=CERT_URL.replace("https", "http")), "SigningCertURL"),
        (lambda e: e.update(SigningCertURL="https://evil.example.com/a.pem"), "SigningCertURL"),
    ],
)
def test_tampered_or_incomplete_envelopes(mutate: Any, message: str) -> None:
    req = signed_request(fixture_envelope("delivery.json"))
    envelope = orjson.loads(req.body)
    mutate(envelope)
    with pytest.raises(SignatureError, match=message):
        ses.verify(h.with_changes(req, body=orjson.dumps(envelope)), configured())


def test_signed_with_another_key_is_refused() -> None:
    with pytest.raises(SignatureError, match="does not match"):
        ses.verify(signed_request(fixture_envelope("delivery.json"), OTHER_KEY), configured())


def test_topic_allow_list_takes_several_arns() -> None:
    other = "arn:aws:sns:eu-west-1:123456789012:other"
    settings_ = configured(SES_TOPIC_ARN=f"{other}, {TOPIC}")
    ses.verify(signed_request(fixture_envelope("delivery.json")), settings_)
    assert ses.enabled(settings_) and sns.topic_arns(settings_) == {other, TOPIC}
    assert not ses.enabled(h.settings(SES_TOPIC_ARN=" , "))


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        (CERT_URL, True),
        ("https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem", True),
        ("https://sns.us-east-1.amazonaws.com:443/SimpleNotificationService-abc.pem", True),
        ("http://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem", False),
        ("https://sns.us-east-1.amazonaws.com.evil.com/SimpleNotificationService-abc.pem", False),
        ("https://evil.com/sns.us-east-1.amazonaws.com/x.pem", False),
        ("https://sns.us-east-1.amazonaws.com@evil.com/x.pem", False),
        ("https://user@sns.us-east-1.amazonaws.com/x.pem", False),
        ("https://sns.us-east-1.amazonaws.com:8443/x.pem", False),
        ("https://sns.us-east-1.amazonaws.com/x.pem?redirect=evil", False),
        ("https://sns.us-east-1.amazonaws.com/x.txt", False),
        ("https://sns.us-east-1.amazonaws.com/../x.pem", False),
        ("https://SNS.US-EAST-1.amazonaws.com/x.pem", True),  # DNS names ignore case
        ("https://sqs.us-east-1.amazonaws.com/x.pem", False),
        ("https://sns.amazonaws.com/x.pem", False),
        ("https://sns.us-east-1.amazonaws.com:abc/x.pem", False),
        ("", False),
        (None, False),
        (42, False),
    ],
)
def test_certificate_url_allow_list(url: Any, allowed: bool) -> None:
    assert certificates.certificate_url_allowed(url) is allowed


# --- certificate cache ----------------------------------------------------------------------

UNSEEDED_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0123abcd.pem"


def unseeded(**changes: Any) -> h.WebhookRequest:
    envelope = {**fixture_envelope("delivery.json"), "SigningCertURL": UNSEEDED_URL, **changes}
    return signed_request(envelope)


async def test_uncached_certificate_is_fetched_once_before_verify() -> None:
    calls: list[str] = []

    async def fake_fetch(url: str) -> str:
        calls.append(url)
        return CERT_PEM

    certificates.CERTIFICATES.fetcher = fake_fetch
    unpinned = h.settings(SES_TOPIC_ARN=TOPIC)
    with pytest.raises(SignatureError, match="unavailable"):  # verify() itself never fetches
        ses.verify(unseeded(), unpinned)
    for _ in range(3):
        await ses.prepare(unseeded(), unpinned)
        ses.verify(unseeded(), unpinned)
    assert calls == [UNSEEDED_URL]


async def test_failed_fetch_refuses_and_is_not_retried_at_once(no_network: list[str]) -> None:
    unpinned = h.settings(SES_TOPIC_ARN=TOPIC)
    for _ in range(3):
        await ses.prepare(unseeded(), unpinned)
        with pytest.raises(SignatureError, match="certificate"):
            ses.verify(unseeded(), unpinned)
    assert no_network == [UNSEEDED_URL]


async def test_not_allow_listed_certificate_is_never_fetched(no_network: list[str]) -> None:
    req = unseeded(SigningCertURL="https://x.example/a.pem")
    await ses.prepare(req, h.settings(SES_TOPIC_ARN=TOPIC))
    with pytest.raises(SignatureError):
        ses.verify(req, configured())
    assert no_network == []


async def test_other_topics_never_cause_a_fetch(no_network: list[str]) -> None:
    req = unseeded(TopicArn="arn:aws:sns:us-east-1:999999999999:stranger")
    await ses.prepare(req, h.settings(SES_TOPIC_ARN=TOPIC))
    assert no_network == []


async def test_pinned_certificate_is_the_only_one(no_network: list[str]) -> None:
    """With a pinned (pre-seeded) certificate nothing is fetched, and an envelope that
    names another certificate URL is refused."""
    await ses.prepare(unseeded(), configured())
    with pytest.raises(SignatureError, match="pinned"):
        ses.verify(unseeded(), configured())
    assert no_network == []
    spelled = CERT_URL.replace("sns.us-east-1", "SNS.US-EAST-1").replace(".com/", ".com:443/")
    ses.verify(
        signed_request({**fixture_envelope("delivery.json"), "SigningCertURL": spelled}),
        configured(),
    )


def test_seeded_pem_with_escaped_newlines() -> None:
    escaped = CERT_PEM.replace("\n", "\\n")
    ses.verify(
        signed_request(fixture_envelope("delivery.json")),
        configured(SES_SIGNING_CERT_PEM=escaped),
    )


def test_unusable_seeded_pem_refuses() -> None:
    with pytest.raises(SignatureError, match="MSGSTATUS_SES_SIGNING_CERT_PEM"):
        ses.verify(
            signed_request(fixture_envelope("delivery.json")),
            configured(SES_SIGNING_CERT_PEM="-----BEGIN CERTIFICATE-----\nnope\n"),
        )


async def test_fetch_certificate_refuses_foreign_urls_before_connecting() -> None:
    with pytest.raises(ValueError, match="not an SNS URL"):
        await certificates.fetch_certificate("https://evil.example.com/a.pem")


# --- hostile input (issue 12) -----------------------------------------------------------------


@pytest.mark.parametrize("field", ["Type", "TopicArn", "SignatureVersion", "SigningCertURL"])
@pytest.mark.parametrize("value", [["Notification"], {"a": 1}, 1, None, True])
def test_non_string_envelope_fields_are_a_signature_error(field: str, value: Any) -> None:
    """Finding: a list or object as Type/TopicArn/SignatureVersion raised TypeError
    (unhashable) in verify(): a 500 without authentication."""
    envelope = {**orjson.loads(signed_request(fixture_envelope("delivery.json")).body)}
    envelope[field] = value
    with pytest.raises(SignatureError):
        ses.verify(h.request("ses", orjson.dumps(envelope), content_type=None), configured())


@pytest.mark.parametrize(
    "spelling",
    [
        "https://SNS.eu-west-1.amazonaws.com/SimpleNotificationService-0123abcd.pem",
        "https://sns.eu-west-1.amazonaws.com:443/SimpleNotificationService-0123abcd.pem",
        "https://sns.EU-WEST-1.AMAZONAWS.COM:443/SimpleNotificationService-0123abcd.pem",
    ],
)
def test_one_certificate_url_has_one_spelling(spelling: str) -> None:
    assert certificates.certificate_url(spelling) == UNSEEDED_URL


@pytest.mark.parametrize(
    "url",
    [
        "https://sns.eu-west-1.amazonaws.com/Simple\tNotificationService-0123abcd.pem",
        "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0123abcd.pem\n",
        "https://sns.eu-\rwest-1.amazonaws.com/SimpleNotificationService-0123abcd.pem",
        " https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0123abcd.pem",
        "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0123abcd.pem?",
        "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0123abcd.pem#",
        "https://sns.eu-west-1.amazonaws.com/Simple\u00e9.pem",
    ],
)
def test_whitespace_and_control_characters_are_not_stripped_but_refused(url: str) -> None:
    """Finding: urlsplit drops tabs and newlines, so each was a new cache key."""
    assert certificates.certificate_url(url) is None


async def test_bogus_urls_cannot_evict_the_good_certificate() -> None:
    """Finding: 64 bogus URLs evicted the good certificate and bypassed the retry delay."""
    fetched: list[str] = []

    async def fetch(url: str) -> str:
        fetched.append(url)
        if url == UNSEEDED_URL:
            return CERT_PEM
        raise OSError("404")

    store = certificates.CertificateStore(fetch)
    await store.ensure(UNSEEDED_URL)
    for i in range(certificates.MAX_FAILED + 50):
        store._fetches.clear()  # rate limit aside: only eviction is under test here
        await store.ensure(f"https://sns.eu-west-1.amazonaws.com/bogus-{i}.pem")
    assert store.key(UNSEEDED_URL) is not None
    assert fetched.count(UNSEEDED_URL) == 1


async def test_certificate_fetches_are_rate_limited() -> None:
    fetched: list[str] = []

    async def fetch(url: str) -> str:
        fetched.append(url)
        raise OSError("404")

    store = certificates.CertificateStore(fetch)
    for i in range(50):
        await store.ensure(f"https://sns.eu-west-1.amazonaws.com/bogus-{i}.pem")
    assert len(fetched) == certificates.FETCH_RATE


async def test_concurrent_requests_share_one_fetch() -> None:
    import asyncio

    release = asyncio.Event()
    fetched: list[str] = []

    async def slow(url: str) -> str:
        fetched.append(url)
        await release.wait()
        return CERT_PEM

    store = certificates.CertificateStore(slow)
    waiting = [asyncio.ensure_future(store.ensure(UNSEEDED_URL)) for _ in range(20)]
    await asyncio.sleep(0.01)
    release.set()
    await asyncio.gather(*waiting)
    assert fetched == [UNSEEDED_URL] and store.key(UNSEEDED_URL) is not None


@pytest.mark.parametrize(
    ("stamp", "accepted"),
    [
        ("2026-04-28T18:13:20.000Z", True),
        ("2026-04-28T17:14:00.000Z", True),  # 59 minutes: SNS may still be retrying
        ("2026-04-28T17:10:00.000Z", False),
        ("2026-04-28T19:20:00.000Z", False),
        ("2017-08-05T00:41:02.700Z", False),
        ("not a time", False),
    ],
)
def test_sns_timestamp_replay_window(stamp: str, accepted: bool) -> None:
    body, headers = ses.sign({**fixture_envelope("delivery.json"), "Timestamp": stamp}, KEY)
    req = h.request("ses", body, headers=headers, content_type=None)
    if accepted:
        ses.verify(req, configured())
    else:
        with pytest.raises(SignatureError, match="Timestamp"):
            ses.verify(req, configured())


def test_message_id_is_the_replay_key() -> None:
    req = signed_request(fixture_envelope("delivery.json"))
    key = ses.replay_key(req, configured())
    assert key is not None and key.key == fixture_envelope("delivery.json")["MessageId"]


# --- subscription confirmation -----------------------------------------------------------------


def confirmation_request(**changes: Any) -> h.WebhookRequest:
    envelope = {**fixture_envelope("subscription_confirmation.json"), **changes}
    return signed_request(envelope)


def test_subscribe_url_of_a_confirmation() -> None:
    url = subscription.subscribe_url(confirmation_request())
    assert url is not None
    assert url.startswith("https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&")


@pytest.mark.parametrize(
    "changes",
    [
        {"SubscribeURL": "https://evil.example.com/?Action=ConfirmSubscription"},
        {"SubscribeURL": "http://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription"},
        {"SubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Publish"},
        {"SubscribeURL": 7},
        {"Type": "UnsubscribeConfirmation"},
        {"Type": "Notification"},
    ],
)
def test_no_subscribe_url(changes: dict[str, Any]) -> None:
    envelope = {**fixture_envelope("subscription_confirmation.json"), **changes}
    assert subscription.subscribe_url(h.request("ses", orjson.dumps(envelope))) is None


def test_subscribe_url_of_junk_is_none() -> None:
    for body in (b"", b"[]", b"{", b'{"Type": "SubscriptionConfirmation"}'):
        assert subscription.subscribe_url(h.request("ses", body)) is None


@pytest.mark.parametrize(
    ("switch", "expected"),
    [(None, True), ("1", True), ("0", False), ("false", False), ("off", False)],
)
def test_auto_confirm_decision(switch: str | None, expected: bool) -> None:
    overrides = {} if switch is None else {"SES_AUTO_CONFIRM": switch}
    url = subscription.auto_confirm_url(confirmation_request(), configured(**overrides))
    assert (url is not None) is expected


def test_auto_confirm_only_for_allow_listed_topics() -> None:
    req = confirmation_request(TopicArn="arn:aws:sns:us-east-1:999999999999:stranger")
    assert subscription.auto_confirm_url(req, configured()) is None
    notification = signed_request(fixture_envelope("delivery.json"))
    assert subscription.auto_confirm_url(notification, configured()) is None


async def test_schedule_confirmation_runs_in_background(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    seen: list[str] = []

    async def fake_confirm(url: str) -> bool:
        seen.append(url)
        return True

    monkeypatch.setattr(subscription, "confirm_subscription", fake_confirm)
    assert subscription.schedule_confirmation(confirmation_request(), configured())
    off = configured(SES_AUTO_CONFIRM="0")
    assert not subscription.schedule_confirmation(confirmation_request(), off)
    assert seen == []  # nothing ran yet: the answer is not delayed
    await asyncio.sleep(0)
    await asyncio.gather(*list(subscription._BACKGROUND))
    assert len(seen) == 1 and seen[0].startswith("https://sns.us-east-1.amazonaws.com/")


async def test_confirm_subscription_refuses_foreign_hosts() -> None:
    url = "https://evil.example.com/?Action=ConfirmSubscription"
    assert await subscription.confirm_subscription(url) is False


# --- robustness -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["delivery.json", "bounce_permanent_general.json", "reject.json"])
def test_inner_event_mutations_never_crash(name: str) -> None:
    event = ses_event(name)
    for mutated in h.mutations(event):
        envelope = ses.notification(json.dumps(mutated), TOPIC, CERT_URL, message_id="m")
        h.parse_never_raises(ses, json.dumps(envelope).encode(), SNS_TYPE)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=30,
)
SES_EVENT = st.fixed_dictionaries(
    {"eventType": st.sampled_from(["Bounce", "Send", "Delivery", "Complaint", "Reject"]) | JSON},
    optional={"mail": JSON, "bounce": JSON, "complaint": JSON, "reject": JSON},
)


@settings(max_examples=300, deadline=None)
@given(SES_EVENT | JSON)
def test_random_events_never_crash(event: object) -> None:
    envelope = {"Type": "Notification", "Message": json.dumps(event)}
    h.parse_never_raises(ses, json.dumps(envelope).encode(), SNS_TYPE)
