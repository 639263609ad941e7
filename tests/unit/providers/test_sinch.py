"""Sinch: recipient and batch delivery reports, status words, codes, HTTP Basic auth."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from processors.providers import sinch
from processors.providers.base import FramingError, SignatureError

from . import harness as h

USER = "sinch-callback-user"
PASSWORD = "sinch-callback-password-0123456789"
B1 = "sinch:01JB1J1M5BM5XQ8Q0ZWBM44E14"
B2 = "sinch:01J06CY78GZ2F74YZNNH2VBWR"

CASES = [
    h.Case("recipient_delivered.json", [(B1, "delivered", "Delivered", "sms", None)]),
    h.Case("recipient_dispatched.json", [(B1, "sent", "Dispatched", "sms", None)]),
    h.Case(
        "recipient_failed_unroutable.json", [(f"{B2}6", "failed", "Failed", "sms", "unreachable")]
    ),
    h.Case("batch_aborted.json", [(f"{B2}7", "failed", "Aborted", "sms", "account_problem")]),
    h.Case("recipient_unknown.json", [], ignored=1),
    h.Case("mms_recipient_expired.json", [(f"{B2}9", "expired", "Expired", "mms", "expired")]),
    h.Case(
        "batch_mixed.json",
        [(f"{B2}A", "delivered", "Delivered", "sms", None)],
        dead=["unknown sinch status 'Teleported'", "delivery report without status"],
    ),
    h.Case("inbound_mo.json", [], ignored=1),
]


def test_operator_time_wins_over_report_time() -> None:
    result, _ = h.parse_case(sinch, h.Case("recipient_delivered.json", []))
    expected = dt.datetime(2026, 4, 28, 14, 30, tzinfo=dt.UTC).timestamp()
    assert result.events[0].occurred_at == expected
    result, _ = h.parse_case(sinch, h.Case("recipient_dispatched.json", []))
    assert result.events[0].occurred_at == pytest.approx(1777386598.536)


def _report(status: str, code: int = 0) -> bytes:
    report = {
        "type": "recipient_delivery_report_sms",
        "batch_id": "b-1",
        "recipient": "447700900123",
        "code": code,
        "status": status,
        "at": "2026-04-28T14:30:00Z",
    }
    return json.dumps(report).encode()


# PROVIDERS.md "Sinch".
@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("Queued", "queued"),
        ("Dispatched", "sent"),
        ("Delivered", "delivered"),
        ("Failed", "failed"),
        ("Aborted", "failed"),
        ("Expired", "expired"),
        ("Rejected", "rejected"),
        ("Cancelled", "canceled"),
        ("Deleted", "canceled"),
    ],
)
def test_status_mapping(word: str, status: str) -> None:
    (event,) = sinch.parse(h.request("sinch", _report(word))).events
    assert (event.status, event.provider_status) == (status, word)
    failure = status in ("failed", "expired", "rejected", "canceled")
    assert (event.error is not None) == failure


def test_unknown_is_no_change() -> None:
    result = sinch.parse(h.request("sinch", _report("Unknown")))
    assert (result.events, result.ignored, result.dead) == ([], 1, [])


@pytest.mark.parametrize(
    ("code", "category"),
    [
        (402, "unreachable"),
        (403, "provider_error"),
        (404, "unreachable"),
        (405, "content_rejected"),
        (406, "expired"),
        (407, "unknown"),
        (408, "provider_error"),
        (410, "account_problem"),
        (411, "content_rejected"),
        (412, "account_problem"),
        (413, "account_problem"),
        (414, "content_rejected"),
        (415, "carrier_filtered"),
        (416, "content_rejected"),
        (417, "unreachable"),
        (418, "content_rejected"),
        (61, "unknown"),  # carrier-specific code
    ],
)
def test_error_codes(code: int, category: str) -> None:
    (event,) = sinch.parse(h.request("sinch", _report("Failed", code))).events
    assert event.error is not None
    assert (event.error.code, event.error.category) == (str(code), category)


@pytest.mark.parametrize("code", [0, 400, 401])
def test_progress_codes_are_not_errors(code: int) -> None:
    (event,) = sinch.parse(h.request("sinch", _report("Dispatched", code))).events
    assert event.error is None
    (event,) = sinch.parse(h.request("sinch", _report("Expired", code))).events
    assert event.error is not None and (event.error.code, event.error.category) == (None, "expired")


def test_unknown_callback_type_is_dead() -> None:
    body = json.dumps({"type": "teleport_report", "batch_id": "b"}).encode()
    result = sinch.parse(h.request("sinch", body))
    assert [d.reason for d in result.dead] == ["unknown sinch callback type 'teleport_report'"]


@pytest.mark.parametrize("body", [b"", b"x", b"1", b'"Delivered"', b"{"])
def test_malformed_body_is_a_framing_error(body: bytes) -> None:
    with pytest.raises(FramingError):
        sinch.parse(h.request("sinch", body))


# --- authentication -------------------------------------------------------------------


def signed(body: bytes, secret: str) -> h.WebhookRequest:
    return h.request("sinch", body, headers=sinch.sign(h.URL, body, USER, secret))


CONTRACT = h.SignatureContract(
    module=sinch,
    secret_name="SINCH_PASSWORD",
    secret=PASSWORD,
    body=h.fixture("sinch", "recipient_delivered.json"),
    sign=signed,
    auth_headers=("authorization",),
    body_bound=False,
    extra_settings={"SINCH_USER": USER},
)


def test_wrong_user_is_rejected() -> None:
    req = h.request("sinch", CONTRACT.body, headers=sinch.sign(h.URL, b"", "mallory", PASSWORD))
    with pytest.raises(SignatureError):
        sinch.verify(req, CONTRACT.settings())
