"""Twilio status callbacks: mapping, channels, errors, signatures (incl. Twilio's quirks)."""

from __future__ import annotations

import base64
import datetime as dt
import hmac
from urllib.parse import parse_qsl

import pytest

from processors.providers import common, twilio
from processors.providers.base import FramingError, SignatureError

from . import harness as h

AC = "AC3f8a2b1c9d0e4f5a6b7c8d9e0f1a2b3c"
SM = "SM5b2f4f1b0c6e4d8a9e2c3b4a5d6e7f80"
TOKEN = "twilio-auth-token-0123456789abcdef"
PUBLIC_URL = "https://status.example.com/webhooks/twilio?tenant=acme&v=1"

CASES = [
    h.Case("delivered_sms.form", [(f"twilio:{SM}", "delivered", "delivered", "sms", None)]),
    h.Case(
        "delivered_sms.json",
        [("twilio:SM3a4b5c6d7e8f90a1b2c3d4e5f6071829", "delivered", "delivered", "sms", None)],
    ),
    h.Case(
        "failed_21408.form",
        [
            (
                "twilio:SM1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f",
                "failed",
                "failed",
                "sms",
                "account_problem",
            )
        ],
    ),
    h.Case(
        "failed_30007.form",
        [
            (
                "twilio:SM9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b",
                "undelivered",
                "undelivered",
                "sms",
                "carrier_filtered",
            )
        ],
    ),
    h.Case(
        "whatsapp_sent.form",
        [("twilio:SMa1b2c3d4e5f60718293a4b5c6d7e8f90", "sent", "sent", "whatsapp", None)],
    ),
    h.Case(
        "whatsapp_read.form",
        [("twilio:SMa1b2c3d4e5f60718293a4b5c6d7e8f90", "read", "read", "whatsapp", None)],
    ),
    h.Case(
        "whatsapp_failed_63016.form",
        [
            (
                "twilio:SMb2c3d4e5f60718293a4b5c6d7e8f90a1",
                "failed",
                "failed",
                "whatsapp",
                "outside_window",
            )
        ],
    ),
    h.Case(
        "messaging_service_accepted.form",
        [("twilio:SMc3d4e5f60718293a4b5c6d7e8f90a1b2", "accepted", "accepted", "sms", None)],
    ),
    h.Case(
        "messaging_service_sent.form",
        [("twilio:SMc3d4e5f60718293a4b5c6d7e8f90a1b2", "sent", "sent", "sms", None)],
    ),
    h.Case(
        "mms_delivered.form",
        [("twilio:MMd4e5f60718293a4b5c6d7e8f90a1b2c3", "delivered", "delivered", "mms", None)],
    ),
    h.Case(
        "inbound_received.form",
        [("twilio:SMe5f60718293a4b5c6d7e8f90a1b2c3d4", "received", "received", "sms", None)],
    ),
    h.Case(
        "messenger_delivered.form",
        [
            (
                "twilio:SMf60718293a4b5c6d7e8f90a1b2c3d4e5",
                "delivered",
                "delivered",
                "messenger",
                None,
            )
        ],
    ),
    h.Case(
        "rcs_read.form",
        [("twilio:SM0718293a4b5c6d7e8f90a1b2c3d4e5f6", "read", "read", "rcs", None)],
    ),
    # issue 16: 63018 ("Rate limit exceeded for Channel") was category unknown
    h.Case(
        "whatsapp_failed_63018.form",
        [
            (
                "twilio:SMe287d7109a5a925f182f0e07fe5b223b",
                "failed",
                "failed",
                "whatsapp",
                "rate_limited",
            )
        ],
    ),
    h.Case("unknown_status.form", [], dead=["unknown twilio MessageStatus 'teleported'"]),
    h.Case("inbound_receiving.form", [], ignored=1),
]


def test_delivered_carries_account_and_carrier_time() -> None:
    result, _ = h.parse_case(twilio, h.Case("delivered_sms.form", []))
    (event,) = result.events
    assert event.account == AC
    assert event.observed_at == h.RECEIVED_AT
    # RawDlrDoneDate=2311231355: the carrier's done date, YYMMDDhhmm in UTC
    assert event.occurred_at == dt.datetime(2023, 11, 23, 13, 55, tzinfo=dt.UTC).timestamp()


def test_without_dlr_date_there_is_no_event_time() -> None:
    result, _ = h.parse_case(twilio, h.Case("whatsapp_read.form", []))
    assert result.events[0].occurred_at is None


def test_polled_flag_is_carried() -> None:
    result, _ = h.parse_case(twilio, h.Case("whatsapp_read.form", [], polled=True))
    assert result.events[0].polled is True


def _with_fields(name: str, **fields: str) -> bytes:
    pairs = [(k, v) for k, v in parse_qsl(h.fixture("twilio", name).decode()) if k not in fields]
    return h.form(pairs + list(fields.items()))


# PROVIDERS.md: every Twilio word maps to the same name; received -> received (inbound).
@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("accepted", "accepted"),
        ("scheduled", "scheduled"),
        ("queued", "queued"),
        ("sending", "sending"),
        ("sent", "sent"),
        ("delivered", "delivered"),
        ("undelivered", "undelivered"),
        ("failed", "failed"),
        ("read", "read"),
        ("canceled", "canceled"),
        ("received", "received"),
    ],
)
def test_status_mapping(word: str, status: str) -> None:
    body = _with_fields("delivered_sms.form", MessageStatus=word, SmsStatus=word)
    result = twilio.parse(h.request("twilio", body, content_type=None))
    (event,) = result.events
    assert (event.status, event.provider_status) == (status, word)
    # without an ErrorCode only the failures that mean "did not arrive" get an error
    assert (event.error is not None) == (status in ("failed", "undelivered"))
    if event.error:
        assert (event.error.code, event.error.category) == (None, "unknown")


def test_delivery_unknown_is_ours_to_derive() -> None:
    body = _with_fields("delivered_sms.form", MessageStatus="delivery_unknown")
    result = twilio.parse(h.request("twilio", body, content_type=None))
    assert (result.events, result.ignored, result.dead) == ([], 1, [])


# PROVIDERS.md error table, plus the extra codes the module documents.
@pytest.mark.parametrize(
    ("code", "category"),
    [
        ("30003", "unreachable"),
        ("30004", "blocked"),
        ("30005", "invalid_number"),
        ("30006", "invalid_number"),
        ("30007", "carrier_filtered"),
        ("30008", "unknown"),
        ("30034", "account_problem"),
        ("21211", "invalid_number"),
        ("21408", "account_problem"),
        ("21610", "opted_out"),
        ("63016", "outside_window"),
        ("30001", "rate_limited"),
        ("30002", "account_problem"),
        ("30036", "expired"),
        # issue 16: the rest of Twilio's messaging errors (a sample of each family)
        ("63018", "rate_limited"),
        ("63017", "rate_limited"),
        ("30022", "rate_limited"),
        ("30023", "rate_limited"),
        ("30027", "rate_limited"),
        ("30017", "unreachable"),
        ("30018", "account_problem"),
        ("30019", "content_rejected"),
        ("30024", "account_problem"),
        ("30032", "account_problem"),
        ("30038", "content_rejected"),
        ("21614", "invalid_number"),
        ("63003", "invalid_number"),
        ("63024", "invalid_number"),
        ("63021", "content_rejected"),
        ("63032", "carrier_filtered"),
        ("63049", "carrier_filtered"),
        ("63038", "rate_limited"),
        ("99999", "unknown"),
    ],
)
def test_error_codes(code: str, category: str) -> None:
    body = _with_fields("failed_30007.form", ErrorCode=code)
    (event,) = twilio.parse(h.request("twilio", body, content_type=None)).events
    assert event.error is not None
    assert (event.error.code, event.error.category) == (code, category)
    assert event.error.description or category == "unknown"


def test_every_table_entry_is_a_twilio_code_with_a_title() -> None:
    """The table is literal data: 5-digit codes of the messaging ranges, each titled."""
    assert len(twilio.ERROR_CODES) >= 70
    for code, (category, title) in twilio.ERROR_CODES.items():
        assert code.isdigit() and len(code) == 5, code
        assert code[:2] in ("14", "21", "30", "63"), code
        assert title.strip() and category


def test_error_message_from_twilio_wins_over_the_table() -> None:
    body = _with_fields("failed_30007.form", ErrorMessage="Carrier says no")
    (event,) = twilio.parse(h.request("twilio", body, content_type=None)).events
    assert event.error is not None and event.error.description == "Carrier says no"


def test_error_code_on_a_non_failure_is_kept_zero_is_not() -> None:
    with_code = _with_fields("delivered_sms.form", ErrorCode="30008")
    (event,) = twilio.parse(h.request("twilio", with_code, content_type=None)).events
    assert event.error is not None and event.error.code == "30008"
    zero = _with_fields("delivered_sms.form", ErrorCode="0")
    (event,) = twilio.parse(h.request("twilio", zero, content_type=None)).events
    assert event.error is None


@pytest.mark.parametrize(
    ("fields", "channel"),
    [
        ({"ChannelPrefix": "whatsapp"}, "whatsapp"),
        ({"From": "whatsapp:+14155238886"}, "whatsapp"),
        ({"To": "messenger:123"}, "messenger"),
        ({"To": "rcs:+15558675310"}, "rcs"),
        ({"NumMedia": "2"}, "mms"),
        ({"MessageSid": "MM1234"}, "mms"),
        ({"NumMedia": "0", "MessageSid": "SM1234"}, "sms"),
        ({"To": "+15558675310", "NumMedia": "junk"}, "sms"),
    ],
)
def test_channel(fields: dict[str, str], channel: str) -> None:
    assert twilio.channel_of(fields) == channel


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2311231355", dt.datetime(2023, 11, 23, 13, 55, tzinfo=dt.UTC).timestamp()),
        ("2313231355", None),  # month 13
        ("23112313", None),
        ("", None),
        (None, None),
    ],
)
def test_dlr_done_date(raw: str | None, expected: float | None) -> None:
    assert twilio.dlr_done_date(raw) == expected


def test_missing_sid_or_status_is_a_dead_item() -> None:
    no_sid = twilio.parse(h.request("twilio", b"MessageStatus=sent", content_type=None))
    assert [d.reason for d in no_sid.dead] == ["missing MessageSid"]
    no_status = twilio.parse(h.request("twilio", b"MessageSid=SM1", content_type=None))
    assert [d.reason for d in no_status.dead] == ["missing MessageStatus"]


@pytest.mark.parametrize("body", [b"", b"\xff\xfe", b"just text", b"[1, 2]"])
def test_not_a_form_is_a_framing_error(body: bytes) -> None:
    ctype = "application/json" if body.startswith(b"[") else "application/x-www-form-urlencoded"
    with pytest.raises(FramingError):
        twilio.parse(h.request("twilio", body, content_type=ctype))


# --- signatures -------------------------------------------------------------------------


def signed(
    body: bytes, secret: str, *, sign_url: str = PUBLIC_URL, url: str = PUBLIC_URL
) -> h.WebhookRequest:
    return h.request(
        "twilio", body, url=url, headers=twilio.sign(sign_url, body, secret), content_type=None
    )


def _form_request(body: bytes, signature: str) -> h.WebhookRequest:
    return h.request(
        "twilio",
        body,
        url=PUBLIC_URL,
        headers={"x-twilio-signature": signature},
        content_type="application/x-www-form-urlencoded",
    )


CONTRACT = h.SignatureContract(
    module=twilio,
    secret_name="TWILIO_AUTH_TOKEN",
    secret=TOKEN,
    body=h.fixture("twilio", "delivered_sms.form"),
    sign=signed,
    auth_headers=("x-twilio-signature",),
)

VERIFY_FUZZ = [
    (CONTRACT.settings(), PUBLIC_URL + "&bodySHA256=x"),
    (CONTRACT.settings(), "https://[::1:bad/x"),
]


def test_official_validator_vectors() -> None:
    """twilio-python's published test vectors: our function computes the same MACs."""
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Digits": "1234",
        "From": "+14158675309",
        "To": "+18005551212",
        "Caller": "+14158675309",
    }
    assert twilio.calculate_signature("12345", url, params) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    body = b'{"property": "value", "boolean": true}'
    assert twilio.body_sha256(body) == (
        "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
    )
    req = h.request(
        "twilio",
        body,
        url=url + "&bodySHA256=" + twilio.body_sha256(body),
        headers={"x-twilio-signature": "a9nBmqA0ju/hNViExpshrM61xv4="},
    )
    twilio.verify(req, h.settings(TWILIO_AUTH_TOKEN="12345"))


def test_public_url_with_query_string_is_what_is_signed() -> None:
    good = h.settings(TWILIO_AUTH_TOKEN=TOKEN)
    body = h.fixture("twilio", "delivered_sms.form")
    twilio.verify(signed(body, TOKEN), good)
    bare = PUBLIC_URL.split("?")[0]
    with pytest.raises(SignatureError):  # signed without the query string: not Twilio's URL
        twilio.verify(signed(body, TOKEN, sign_url=bare), good)
    with pytest.raises(SignatureError):  # the server's internal URL is not the public one
        twilio.verify(signed(body, TOKEN, url="http://10.0.0.7:8080/webhooks/twilio"), good)


@pytest.mark.parametrize(
    ("sign_url", "request_url"),
    [
        ("https://status.example.com:443/webhooks/twilio?tenant=acme", PUBLIC_URL.split("&")[0]),
        (PUBLIC_URL.split("&")[0], "https://status.example.com:443/webhooks/twilio?tenant=acme"),
        (
            "http://status.example.com:80/webhooks/twilio",
            "http://status.example.com/webhooks/twilio",
        ),
        (
            "http://status.example.com/webhooks/twilio",
            "http://status.example.com:80/webhooks/twilio",
        ),
        (
            "https://status.example.com/webhooks/twilio",
            "https://status.example.com:8443/webhooks/twilio",
        ),
    ],
)
def test_explicit_port_variants_are_accepted(sign_url: str, request_url: str) -> None:
    """Twilio signs sometimes with, sometimes without the port; its validators try both."""
    body = h.fixture("twilio", "messaging_service_sent.form")
    twilio.verify(signed(body, TOKEN, sign_url=sign_url, url=request_url), CONTRACT.settings())


def test_hmac_b64_keyed_once_equals_a_fresh_hmac() -> None:
    """common.hmac_b64 copies a cached keyed HMAC: repeated calls must not leak state."""
    for key, digest in (("k1", "sha1"), ("k2", "sha256"), (b"k1", "sha1")):
        for message in (b"", b"a", b"https://a.example/x" * 20, b"a"):
            raw = key.encode() if isinstance(key, str) else key
            want = base64.b64encode(hmac.new(raw, message, digest).digest()).decode()
            assert common.hmac_b64(key, message, digest) == want


def test_url_variants() -> None:
    assert twilio.url_variants("https://a.example/x?q=1") == [
        "https://a.example/x?q=1",
        "https://a.example:443/x?q=1",
    ]
    assert twilio.url_variants("http://a.example:80/x") == [
        "http://a.example:80/x",
        "http://a.example/x",
    ]
    assert twilio.url_variants("https://a.example:bad/x") == ["https://a.example:bad/x"]


def test_messaging_service_callback_signs_every_param() -> None:
    """The helpdesk failure mode: Messaging Service callbacks add MessagingServiceSid.

    Any fixed list of expected params breaks; every param the request carries is signed.
    """
    body = h.fixture("twilio", "messaging_service_sent.form")
    assert b"MessagingServiceSid=" in body
    twilio.verify(signed(body, TOKEN), CONTRACT.settings())
    pairs = [p for p in parse_qsl(body.decode()) if p[0] != "MessagingServiceSid"]
    partial = twilio.calculate_signature(TOKEN, PUBLIC_URL, pairs)
    req = _form_request(body, partial)
    with pytest.raises(SignatureError):
        twilio.verify(req, CONTRACT.settings())
    (event,) = twilio.parse(req).events
    assert event.status == "sent"


def test_repeated_params_include_every_value_sorted() -> None:
    pairs = [("MessageSid", SM), ("MessageStatus", "sent"), ("Tag", "b"), ("Tag", "a")]
    assert twilio.calculate_signature(TOKEN, PUBLIC_URL, pairs) == twilio.calculate_signature(
        TOKEN,
        PUBLIC_URL,
        [("Tag", "a"), ("Tag", "b"), ("MessageStatus", "sent"), ("MessageSid", SM)],
    )
    expected_payload = f"{PUBLIC_URL}MessageSid{SM}MessageStatussentTagaTagb"
    assert twilio.calculate_signature(TOKEN, PUBLIC_URL, pairs) == (
        common.hmac_b64(TOKEN, expected_payload.encode(), "sha1")
    )
    body = h.form(pairs)
    twilio.verify(signed(body, TOKEN), CONTRACT.settings())
    first_only = twilio.calculate_signature(TOKEN, PUBLIC_URL, pairs[:3])
    req = _form_request(body, first_only)
    with pytest.raises(SignatureError):
        twilio.verify(req, CONTRACT.settings())


def _json_request(body: bytes, *, hash_of: bytes | None = None) -> h.WebhookRequest:
    url = f"{PUBLIC_URL}&bodySHA256={twilio.body_sha256(body if hash_of is None else hash_of)}"
    headers = twilio.sign(url, body, TOKEN, json_body=True)
    return h.request("twilio", body, url=url, headers=headers, content_type=None)


def test_json_body_with_body_sha256() -> None:
    body = h.fixture("twilio", "delivered_sms.json")
    req = _json_request(body)
    twilio.verify(req, CONTRACT.settings())
    assert twilio.parse(req).events[0].status == "delivered"


def test_json_body_tampered_or_without_hash_is_rejected() -> None:
    body = h.fixture("twilio", "delivered_sms.json")
    tampered = body.replace(b'"delivered"', b'"read"', 1)
    with pytest.raises(SignatureError, match="bodySHA256"):
        twilio.verify(h.with_changes(_json_request(body), body=tampered), CONTRACT.settings())
    no_hash = h.request(
        "twilio",
        body,
        url=PUBLIC_URL,
        headers=twilio.sign(PUBLIC_URL, body, TOKEN, json_body=True),
    )
    with pytest.raises(SignatureError, match="bodySHA256"):
        twilio.verify(no_hash, CONTRACT.settings())


def test_garbage_body_is_a_signature_error_not_a_crash() -> None:
    req = h.request(
        "twilio",
        b"\xff\xfe",
        url=PUBLIC_URL,
        headers={"x-twilio-signature": "abc"},
        content_type="application/x-www-form-urlencoded",
    )
    with pytest.raises(SignatureError):
        twilio.verify(req, CONTRACT.settings())


# --- robustness -------------------------------------------------------------------------

FORM_JUNK = (
    "",
    " ",
    "x" * 5000,
    "9" * 400,
    "-1",
    "\x00",
    "\u00b2",
    "\u00b2" * 10,
    "whatsapp:",
    "MM",
    "%",
    "1e400",
)
