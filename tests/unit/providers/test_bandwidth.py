"""Bandwidth: callback arrays split per message, errorCode categories, HTTP Basic auth."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest

from processors.providers import bandwidth
from processors.providers.base import FramingError, SignatureError

from . import harness as h

USER = "bw-callback-user"
PASSWORD = "bw-callback-password-0123456789"

CASES = [
    h.Case(
        "message_delivered.json",
        [
            (
                "bandwidth:1589228074636lm4k2je7j7jklbn2",
                "delivered",
                "message-delivered",
                "sms",
                None,
            )
        ],
    ),
    h.Case(
        "message_failed_4775.json",
        [
            (
                "bandwidth:14762070468292kw2fuqty55yp2b2",
                "failed",
                "message-failed",
                "sms",
                "opted_out",
            )
        ],
    ),
    h.Case(
        "mms_sending.json",
        [("bandwidth:16591187230024glrx5ubxdxdzbmm", "sending", "message-sending", "mms", None)],
    ),
    h.Case(
        "batch_mixed.json",
        [
            (
                "bandwidth:1661365814859loidf7mcwd4qacn7",
                "delivered",
                "message-delivered",
                "sms",
                None,
            ),
            (
                "bandwidth:1661365814859loidf7mcwd4qacn8",
                "failed",
                "message-failed",
                "sms",
                "carrier_filtered",
            ),
        ],
        ignored=1,  # the inbound message-received
        dead=[
            "unknown bandwidth callback type 'message-teleported'",
            "callback without message.id",
        ],
    ),
]


def test_time_account_and_description() -> None:
    result, _ = h.parse_case(bandwidth, h.Case("message_failed_4775.json", []))
    (event,) = result.events
    assert event.occurred_at == dt.datetime(2026, 4, 28, 14, 30, 6, tzinfo=dt.UTC).timestamp()
    assert event.account == "93de2206-9669-4e07-948d-329f4b722ee2"
    assert event.error is not None
    assert (event.error.code, event.error.description) == (
        "4775",
        "destination-rejected-due-to-user-opt-out",
    )


def _callback(kind: str, **extra: object) -> bytes:
    item = {"type": kind, "time": "2026-04-28T14:30:00Z", "message": {"id": "m-1"}, **extra}
    return json.dumps([item]).encode()


# PROVIDERS.md "Bandwidth".
@pytest.mark.parametrize(
    ("kind", "status"),
    [
        ("message-sending", "sending"),
        ("message-delivered", "delivered"),
        ("message-failed", "failed"),
    ],
)
def test_status_mapping(kind: str, status: str) -> None:
    (event,) = bandwidth.parse(h.request("bandwidth", _callback(kind))).events
    assert (event.status, event.provider_status) == (status, kind)
    assert (event.error is not None) == (status == "failed")


@pytest.mark.parametrize(
    ("code", "category"),
    [
        (4001, "blocked"),
        (4301, "content_rejected"),
        (4350, "invalid_number"),
        (4360, "expired"),
        (4432, "account_problem"),
        (4470, "carrier_filtered"),
        (4481, "blocked"),
        (4720, "invalid_number"),
        (4721, "invalid_number"),
        (4702, "unreachable"),
        (4750, "carrier_filtered"),
        (4770, "carrier_filtered"),
        (4775, "opted_out"),
        (4781, "rate_limited"),
        (4795, "account_problem"),
        (5100, "provider_error"),
        (5600, "rate_limited"),
        (5620, "provider_error"),
        (9902, "unknown"),
        (9999, "unknown"),
        ("4720", "invalid_number"),  # as text
        (4799, "carrier_filtered"),  # unlisted: by range 47xx
        (4499, "content_rejected"),  # unlisted: by range 4xxx
        (5699, "provider_error"),  # unlisted: 56xx
        (5399, "provider_error"),  # unlisted: 5xxx
        (9123, "unknown"),  # unlisted: 9xxx
        (123, "unknown"),
        ("abc", "unknown"),
    ],
)
def test_error_codes(code: object, category: str) -> None:
    body = _callback("message-failed", errorCode=code, description="x")
    (event,) = bandwidth.parse(h.request("bandwidth", body)).events
    assert event.error is not None
    assert (event.error.code, event.error.category) == (str(code), category)


def test_failed_without_code_is_unknown() -> None:
    (event,) = bandwidth.parse(h.request("bandwidth", _callback("message-failed"))).events
    assert event.error is not None and (event.error.code, event.error.category) == (None, "unknown")


def test_single_object_is_accepted() -> None:
    body = json.dumps(json.loads(_callback("message-delivered"))[0]).encode()
    assert [e.status for e in bandwidth.parse(h.request("bandwidth", body)).events] == ["delivered"]


@pytest.mark.parametrize("body", [b"", b"x", b"1", b'"message-delivered"', b"[{"])
def test_malformed_body_is_a_framing_error(body: bytes) -> None:
    with pytest.raises(FramingError):
        bandwidth.parse(h.request("bandwidth", body))


# --- authentication -------------------------------------------------------------------


def signed(body: bytes, secret: str) -> h.WebhookRequest:
    return h.request("bandwidth", body, headers=bandwidth.sign(h.URL, body, USER, secret))


CONTRACT = h.SignatureContract(
    module=bandwidth,
    secret_name="BANDWIDTH_PASSWORD",
    secret=PASSWORD,
    body=h.fixture("bandwidth", "message_delivered.json"),
    sign=signed,
    auth_headers=("authorization",),
    body_bound=False,
    extra_settings={"BANDWIDTH_USER": USER},
)


def test_basic_header_value() -> None:
    assert (
        bandwidth.calculate_signature("u", "p:w") == "Basic " + base64.b64encode(b"u:p:w").decode()
    )


@pytest.mark.parametrize(
    "auth",
    [
        "Basic " + base64.b64encode(f"other:{PASSWORD}".encode()).decode(),
        "Basic " + base64.b64encode(f"{USER}:".encode()).decode(),
        "Basic " + base64.b64encode(USER.encode()).decode(),
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"\xff\xfe:\x00").decode(),
        "Basic ",
        f"Bearer {PASSWORD}",
        PASSWORD,
    ],
)
def test_wrong_basic_credentials(auth: str) -> None:
    req = h.request("bandwidth", CONTRACT.body, headers={"authorization": auth})
    with pytest.raises(SignatureError) as info:
        bandwidth.verify(req, CONTRACT.settings())
    assert PASSWORD not in str(info.value)


def test_user_alone_does_not_enable() -> None:
    assert not bandwidth.enabled(h.settings(BANDWIDTH_USER=USER))
    assert not bandwidth.enabled(h.settings(BANDWIDTH_PASSWORD=PASSWORD))
