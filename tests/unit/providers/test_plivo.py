"""Plivo message status callbacks: statuses, ErrorCode categories, V3 signatures."""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import parse_qsl

import pytest

from processors.providers import plivo
from processors.providers.base import FramingError, SignatureError

from . import harness as h

TOKEN = "plivo-auth-token-0123456789abcdef"
PUBLIC_URL = "https://status.example.com/webhooks/plivo"
FORM = "application/x-www-form-urlencoded"

CASES = [
    h.Case(
        "delivered.form",
        [("plivo:db3ce55a-7f1d-11e1-8ea7-1231380bc196", "delivered", "delivered", "sms", None)],
    ),
    h.Case(
        "undelivered_stop.form",
        [
            (
                "plivo:c1a5e0f2-0f3b-11ee-9e7c-0242ac110002",
                "undelivered",
                "undelivered",
                "sms",
                "opted_out",
            )
        ],
    ),
    h.Case(
        "failed_invalid_destination.form",
        [
            (
                "plivo:d2b6f103-1a4c-11ee-8f8d-0242ac110003",
                "failed",
                "failed",
                "sms",
                "invalid_number",
            )
        ],
    ),
    h.Case(
        "queued.form",
        [("plivo:e3c71214-2b5d-11ee-a09e-0242ac110004", "queued", "queued", "sms", None)],
    ),
    h.Case(
        "whatsapp_read.form",
        [("plivo:f4d82325-3c6e-11ee-b1af-0242ac110005", "read", "read", "whatsapp", None)],
    ),
    h.Case("unknown_status.form", [], dead=["unknown plivo Status 'teleported'"]),
    # issue 16: every part of a multipart SMS is keyed by the parent's UUID, the one the
    # send API returned (ParentMessageUUID = the first part's MessageUUID)
    h.Case(
        "multipart_part1_sent.form",
        [("plivo:0936ec98-7c4c-11e4-9bd8-22000afa12b8", "sent", "sent", "sms", None)],
    ),
    h.Case(
        "multipart_part2_delivered.form",
        [("plivo:0936ec98-7c4c-11e4-9bd8-22000afa12b8", "delivered", "delivered", "sms", None)],
    ),
]


def _callback(status: str, code: str = "") -> bytes:
    return h.form([("MessageUUID", "u-1"), ("Status", status), ("ErrorCode", code)])


# PROVIDERS.md "Plivo".
@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("queued", "queued"),
        ("sent", "sent"),
        ("delivered", "delivered"),
        ("undelivered", "undelivered"),
        ("failed", "failed"),
        ("rejected", "rejected"),
        ("read", "read"),
    ],
)
def test_status_mapping(word: str, status: str) -> None:
    (event,) = plivo.parse(h.request("plivo", _callback(word), content_type=FORM)).events
    assert (event.status, event.provider_status) == (status, word)
    assert (event.error is not None) == (status in ("undelivered", "failed", "rejected"))


@pytest.mark.parametrize(
    ("code", "category"),
    [
        ("10", "content_rejected"),
        ("20", "provider_error"),
        ("30", "carrier_filtered"),
        ("40", "account_problem"),
        ("50", "invalid_number"),
        ("60", "provider_error"),
        ("70", "invalid_number"),
        ("80", "unreachable"),
        ("90", "unreachable"),
        ("100", "carrier_filtered"),
        ("110", "content_rejected"),
        ("200", "opted_out"),
        ("300", "provider_error"),
        ("420", "expired"),
        ("900", "account_problem"),
        ("910", "account_problem"),
        ("950", "rate_limited"),
        ("1000", "unknown"),
        ("4242", "unknown"),
    ],
)
def test_error_codes(code: str, category: str) -> None:
    req = h.request("plivo", _callback("failed", code), content_type=FORM)
    (event,) = plivo.parse(req).events
    assert event.error is not None
    assert (event.error.code, event.error.category) == (code, category)


def test_missing_fields_are_dead_items() -> None:
    no_id = plivo.parse(h.request("plivo", b"Status=sent", content_type=FORM))
    assert [d.reason for d in no_id.dead] == ["missing MessageUUID"]
    no_status = plivo.parse(h.request("plivo", b"MessageUUID=u", content_type=FORM))
    assert [d.reason for d in no_status.dead] == ["missing Status"]


@pytest.mark.parametrize("body", [b"", b"\xff\xfe", b"just text", b"%%%"])
def test_not_a_form_is_a_framing_error(body: bytes) -> None:
    with pytest.raises(FramingError):
        plivo.parse(h.request("plivo", body, content_type=FORM))


# --- signatures -------------------------------------------------------------------------


def signed(
    body: bytes, secret: str, *, sign_url: str = PUBLIC_URL, url: str = PUBLIC_URL
) -> h.WebhookRequest:
    return h.request("plivo", body, url=url, headers=plivo.sign(sign_url, body, secret))


CONTRACT = h.SignatureContract(
    module=plivo,
    secret_name="PLIVO_AUTH_TOKEN",
    secret=TOKEN,
    body=h.fixture("plivo", "delivered.form"),
    sign=signed,
    auth_headers=("x-plivo-signature-v3",),
)

VERIFY_FUZZ = [(CONTRACT.settings(), PUBLIC_URL), (CONTRACT.settings(), "https://[::1:bad/x")]


def _reference(url: str, nonce: str, post: dict[str, str], query: str = "") -> str:
    """plivo-python's validate_v3_signature construction, written out independently."""
    base = url
    if query:
        pairs = sorted(parse_qsl(query))
        base += "?" + "&".join(f"{k}={v}" for k, v in pairs) + "."
    else:
        base += "?"
    base += "".join(f"{k}{post[k]}" for k in sorted(post))
    digest = hmac.new(TOKEN.encode(), f"{base}.{nonce}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def test_construction_matches_plivos_sdk() -> None:
    post = {"To": "14155556789", "MessageUUID": "u-1", "Status": "delivered"}
    assert plivo.calculate_signature(TOKEN, PUBLIC_URL, "12345", post) == (
        _reference(PUBLIC_URL, "12345", post)
    )
    with_query = PUBLIC_URL + "?tenant=acme&a=1"
    assert plivo.calculate_signature(TOKEN, with_query, "n", post) == (
        _reference(PUBLIC_URL, "n", post, "tenant=acme&a=1")
    )
    assert plivo.signed_base(PUBLIC_URL, []) == PUBLIC_URL
    assert plivo.signed_base(PUBLIC_URL + "?b=2&a=1", []) == PUBLIC_URL + "?a=1&b=2"


def test_nonce_is_signed_and_required() -> None:
    req = signed(CONTRACT.body, TOKEN)
    other_nonce = dict(req.headers) | {"x-plivo-signature-v3-nonce": "another"}
    with pytest.raises(SignatureError):
        plivo.verify(h.with_changes(req, headers=other_nonce), CONTRACT.settings())
    no_nonce = {k: v for k, v in req.headers.items() if k != "x-plivo-signature-v3-nonce"}
    with pytest.raises(SignatureError, match="Nonce"):
        plivo.verify(h.with_changes(req, headers=no_nonce), CONTRACT.settings())


def test_public_url_is_what_is_signed() -> None:
    body = CONTRACT.body
    plivo.verify(signed(body, TOKEN), CONTRACT.settings())
    with pytest.raises(SignatureError):
        plivo.verify(
            signed(body, TOKEN, url="http://10.0.0.7:8080/webhooks/plivo"), CONTRACT.settings()
        )
    query_url = PUBLIC_URL + "?tenant=acme"
    plivo.verify(signed(body, TOKEN, sign_url=query_url, url=query_url), CONTRACT.settings())
    with pytest.raises(SignatureError):
        plivo.verify(signed(body, TOKEN, sign_url=PUBLIC_URL, url=query_url), CONTRACT.settings())


def test_several_signatures_and_the_messaging_header_name() -> None:
    req = signed(CONTRACT.body, TOKEN)
    good = req.headers["x-plivo-signature-v3"]
    several = dict(req.headers) | {"x-plivo-signature-v3": f"bm90LWl0, {good}"}
    plivo.verify(h.with_changes(req, headers=several), CONTRACT.settings())
    ma = {k: v for k, v in req.headers.items() if k != "x-plivo-signature-v3"}
    ma["x-plivo-signature-ma-v3"] = good
    plivo.verify(h.with_changes(req, headers=ma), CONTRACT.settings())


def test_every_post_param_is_signed() -> None:
    req = signed(CONTRACT.body, TOKEN)
    extra = req.body + b"&Injected=1"
    with pytest.raises(SignatureError):
        plivo.verify(h.with_changes(req, body=extra), CONTRACT.settings())
