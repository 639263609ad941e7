"""Infobip: results[] split per message, status groups, error categories, HTTP Basic auth."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from processors.providers import infobip
from processors.providers.base import FramingError

from . import harness as h

USER = "infobip-webhook-user"
PASSWORD = "infobip-webhook-password-0123456789"

CASES = [
    h.Case(
        "delivered.json",
        [("infobip:MESSAGE-ID-123-xyz", "delivered", "DELIVERED_TO_HANDSET", "sms", None)],
    ),
    h.Case(
        "undeliverable_unknown_subscriber.json",
        [
            (
                "infobip:MESSAGE-ID-789-a",
                "undelivered",
                "UNDELIVERABLE_NOT_DELIVERED",
                "sms",
                "invalid_number",
            )
        ],
    ),
    h.Case(
        "batch_mixed.json",
        [
            ("infobip:MESSAGE-ID-456-a", "sent", "PENDING_ENROUTE", "sms", None),
            (
                "infobip:MESSAGE-ID-456-b",
                "undelivered",
                "UNDELIVERABLE_NOT_DELIVERED",
                "sms",
                "unreachable",
            ),
            ("infobip:MESSAGE-ID-456-c", "rejected", "REJECTED_DND", "sms", "opted_out"),
            ("infobip:MESSAGE-ID-456-d", "expired", "EXPIRED_EXPIRED", "sms", "expired"),
        ],
        dead=["result without messageId", "unknown infobip status group 'TELEPORTED'"],
    ),
    # issue 16: statuses whose group claims more than Infobip knows
    h.Case(
        "expired_dlr_unknown.json",
        [("infobip:MESSAGE-ID-790-a", "sent", "EXPIRED_DLR_UNKNOWN", "sms", None)],
    ),
    h.Case(
        "delivered_to_operator.json",
        [("infobip:MESSAGE-ID-790-b", "sent", "DELIVERED_TO_OPERATOR", "sms", None)],
    ),
    h.Case(
        "undeliverable_not_sent.json",
        [("infobip:MESSAGE-ID-790-c", "failed", "UNDELIVERABLE_NOT_SENT", "sms", "unknown")],
    ),
    h.Case(
        "signals_blocked.json",
        [("infobip:MESSAGE-ID-790-d", "rejected", "SIGNALS_BLOCKED", "sms", "carrier_filtered")],
    ),
]


def test_done_at_is_the_event_time() -> None:
    result, _ = h.parse_case(infobip, h.Case("delivered.json", []))
    expected = dt.datetime(2026, 4, 28, 14, 30, 5, tzinfo=dt.UTC).timestamp()
    assert result.events[0].occurred_at == expected


OK_ERROR = {"groupId": 0, "groupName": "OK", "id": 0, "name": "NO_ERROR"}


def _result(group: str, name: str = "X", error: dict[str, object] | None = None, **extra: object):
    item = {
        "messageId": "m-1",
        "status": {"groupName": group, "name": name},
        "error": error if error is not None else OK_ERROR,
        **extra,
    }
    return json.dumps({"results": [item]}).encode()


# PROVIDERS.md "Infobip": status.groupName.
@pytest.mark.parametrize(
    ("group", "status"),
    [
        ("PENDING", "sent"),
        ("DELIVERED", "delivered"),
        ("UNDELIVERABLE", "undelivered"),
        ("EXPIRED", "expired"),
        ("REJECTED", "rejected"),
    ],
)
def test_status_mapping(group: str, status: str) -> None:
    (event,) = infobip.parse(h.request("infobip", _result(group))).events
    assert event.status == status
    assert (event.error is not None) == (status in ("undelivered", "expired", "rejected"))


@pytest.mark.parametrize(
    ("group", "name", "status"),
    [
        ("EXPIRED", "EXPIRED_DLR_UNKNOWN", "sent"),  # outcome unknown: not `expired`
        ("DELIVERED", "DELIVERED_TO_OPERATOR", "sent"),  # not the handset yet
        ("DELIVERED", "DELIVERED_TO_HANDSET", "delivered"),
        ("EXPIRED", "EXPIRED_EXPIRED", "expired"),
        ("UNDELIVERABLE", "UNDELIVERABLE_NOT_SENT", "failed"),
        ("EXPIRED", "SIGNALS_BLOCKED", "rejected"),
        ("REJECTED", "SIGNALS_BLOCKED", "rejected"),
        ("PENDING", "PENDING_ACCEPTED", "sent"),
    ],
)
def test_honest_status_names(group: str, name: str, status: str) -> None:
    """Infobip's own table calls DELIVERED_TO_OPERATOR intermediate and EXPIRED_DLR_UNKNOWN
    an unknown outcome; the group name alone would claim delivery or expiry."""
    (event,) = infobip.parse(h.request("infobip", _result(group, name))).events
    assert (event.status, event.provider_status) == (status, name)
    if status == "sent":
        assert event.error is None


@pytest.mark.parametrize(
    ("error", "status_name", "code", "category"),
    [
        ({"groupName": "HANDSET_ERRORS", "id": 1}, "X", "1", "invalid_number"),
        ({"groupName": "HANDSET_ERRORS", "id": 6}, "X", "6", "unreachable"),
        ({"groupName": "USER_ERRORS", "id": 13}, "X", "13", "blocked"),
        ({"groupName": "OPERATOR_ERRORS", "id": 34}, "X", "34", "provider_error"),
        ({"groupName": "HANDSET_ERRORS", "id": 4444}, "X", "4444", "unreachable"),  # by group
        ({"groupName": "OPERATOR_ERRORS", "id": 5555}, "X", "5555", "provider_error"),
        ({"groupName": "NEW_ERRORS", "id": 6666}, "X", "6666", "unknown"),
        (OK_ERROR, "REJECTED_DND", "REJECTED_DND", "opted_out"),
        (OK_ERROR, "REJECTED_NOT_ENOUGH_CREDITS", "REJECTED_NOT_ENOUGH_CREDITS", "account_problem"),
        (OK_ERROR, "REJECTED_FLOODING_FILTER", "REJECTED_FLOODING_FILTER", "rate_limited"),
        (OK_ERROR, "REJECTED_DESTINATION", "REJECTED_DESTINATION", "invalid_number"),
        (OK_ERROR, "REJECTED_NETWORK", "REJECTED_NETWORK", "unreachable"),
        (OK_ERROR, "REJECTED_SOMETHING_NEW", "REJECTED_SOMETHING_NEW", "unknown"),
    ],
)
def test_error_categories(
    error: dict[str, object], status_name: str, code: str, category: str
) -> None:
    body = _result("REJECTED", status_name, error)
    (event,) = infobip.parse(h.request("infobip", body)).events
    assert event.error is not None
    assert (event.error.code, event.error.category) == (code, category)


def test_no_error_on_success() -> None:
    (event,) = infobip.parse(h.request("infobip", _result("DELIVERED"))).events
    assert event.error is None


def test_other_channels() -> None:
    (event,) = infobip.parse(h.request("infobip", _result("DELIVERED", channel="WHATSAPP"))).events
    assert event.channel == "whatsapp"
    (event,) = infobip.parse(h.request("infobip", _result("DELIVERED", channel="FAX"))).events
    assert event.channel == "sms"


@pytest.mark.parametrize("body", [b"", b"x", b"[]", b"{}", b'{"results": {}}', b"{"])
def test_malformed_body_is_a_framing_error(body: bytes) -> None:
    with pytest.raises(FramingError):
        infobip.parse(h.request("infobip", body))


# --- authentication -------------------------------------------------------------------


def signed(body: bytes, secret: str) -> h.WebhookRequest:
    return h.request("infobip", body, headers=infobip.sign(h.URL, body, USER, secret))


CONTRACT = h.SignatureContract(
    module=infobip,
    secret_name="INFOBIP_PASSWORD",
    secret=PASSWORD,
    body=h.fixture("infobip", "delivered.json"),
    sign=signed,
    auth_headers=("authorization",),
    body_bound=False,
    extra_settings={"INFOBIP_USER": USER},
)
