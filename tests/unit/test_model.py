"""processors.model: times, the event dataclasses and the fixed vocabulary of DESIGN.md 5/6."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from processors import model
from processors.model import (
    CHANNELS,
    ENGAGEMENT,
    ERROR_CATEGORIES,
    FAILURES,
    INBOUND,
    MILESTONES,
    PROGRESS,
    RANK,
    STATUSES,
    CanonicalEvent,
    ErrorInfo,
    parse_time,
    rfc3339,
)

# 2023-11-14T22:13:20Z
T0 = 1_700_000_000


# --- vocabulary (DESIGN.md section 5 and 6) --------------------------------------------


def test_progress_rank_order_is_exactly_the_design():
    assert PROGRESS == (
        "accepted",
        "scheduled",
        "queued",
        "sending",
        "sent",
        "delivery_unknown",
        "delivered",
        "read",
        "played",
    )
    assert [RANK[s] for s in PROGRESS] == list(range(len(PROGRESS)))
    assert RANK["sent"] < RANK["delivery_unknown"] < RANK["delivered"]


def test_status_families():
    assert frozenset({"failed", "undelivered", "rejected", "expired", "canceled"}) == FAILURES
    assert frozenset({"received"}) == INBOUND
    assert (
        frozenset({"deleted", "replied", "opened", "clicked", "complained", "unsubscribed"})
        == ENGAGEMENT
    )
    families = [set(PROGRESS), set(FAILURES), set(INBOUND), set(ENGAGEMENT)]
    assert sum(len(f) for f in families) == len(STATUSES) == 21
    assert set().union(*families) == STATUSES
    assert MILESTONES == ("sent", "delivered", "read")
    assert all(m in RANK for m in MILESTONES)


def test_error_categories_and_channels():
    assert (
        frozenset(
            {
                "invalid_number",
                "unreachable",
                "blocked",
                "carrier_filtered",
                "opted_out",
                "outside_window",
                "rate_limited",
                "account_problem",
                "content_rejected",
                "expired",
                "provider_error",
                "unknown",
            }
        )
        == ERROR_CATEGORIES
    )
    assert (
        frozenset(
            [
                "sms",
                "mms",
                "whatsapp",
                "messenger",
                "instagram",
                "rcs",
                "viber",
                "line",
                "telegram",
                "tiktok",
                "email",
                "web",
                "api",
            ]
        )
        == CHANNELS
    )


def test_predicates():
    assert model.is_progress("delivered") and not model.is_progress("failed")
    assert model.is_failure("rejected") and not model.is_failure("read")
    assert not model.is_progress("clicked") and not model.is_failure("clicked")
    assert model.reports_delivery("sms")
    assert model.reports_delivery("whatsapp")
    assert model.reports_delivery(None)
    for channel in ("instagram", "tiktok", "line", "telegram"):
        assert not model.reports_delivery(channel)


# --- rfc3339 ---------------------------------------------------------------------------


def test_rfc3339_none():
    assert rfc3339(None) is None


@pytest.mark.parametrize(
    ("ts", "text"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (T0, "2023-11-14T22:13:20.000Z"),
        (T0 + 0.25, "2023-11-14T22:13:20.250Z"),
        (T0 + 0.1234, "2023-11-14T22:13:20.123Z"),  # milliseconds, truncated
    ],
)
def test_rfc3339_utc_with_milliseconds(ts, text):
    assert rfc3339(ts) == text


def test_rfc3339_round_trips_through_parse_time():
    for ts in (0.0, T0, T0 + 0.5, T0 + 0.999):
        assert parse_time(rfc3339(ts)) == pytest.approx(ts, abs=1e-3)


# --- parse_time ------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "garbage", "not-a-date", "2024-13-45T99:00:00Z", "-5"])
def test_parse_time_rejects_garbage(value):
    assert parse_time(value) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (T0, float(T0)),  # unix seconds, int
        (T0 + 0.5, T0 + 0.5),  # unix seconds, float
        (T0 * 1000, float(T0)),  # unix milliseconds
        (T0 * 1000 + 123, T0 + 0.123),
        (str(T0), float(T0)),  # unix seconds as a string (Meta, WhatsApp)
        (f"  {T0} ", float(T0)),
        (str(T0 * 1000 + 250), T0 + 0.25),  # milliseconds as a string
    ],
)
def test_parse_time_unix_seconds_and_milliseconds(value, expected):
    result = parse_time(value)
    assert isinstance(result, float)
    assert result == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2023-11-14T22:13:20Z", T0),
        ("2023-11-14T22:13:20.250Z", T0 + 0.25),
        ("2023-11-14T22:13:20+00:00", T0),
        ("2023-11-14T23:13:20+01:00", T0),
        ("2023-11-14T17:13:20-05:00", T0),
        ("2023-11-14T22:13:20", T0),  # no zone: taken as UTC
        ("2023-11-14 22:13:20", T0),  # space separator (RFC 3339 allows it)
        ("2023-11-14T22:13:20.123456", T0 + 0.123456),
    ],
)
def test_parse_time_rfc3339(value, expected):
    assert parse_time(value) == pytest.approx(expected, abs=1e-6)


def test_parse_time_without_zone_is_utc_not_local(monkeypatch):
    # Whatever the machine's zone, a zone-less provider time means UTC.
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        naive = dt.datetime(2023, 11, 14, 22, 13, 20)
        assert parse_time(naive.isoformat()) == T0
    finally:
        monkeypatch.undo()
        time.tzset()


def test_parse_time_decimal_seconds_string():
    assert parse_time(f"{T0}.5") == pytest.approx(T0 + 0.5)


def test_parse_time_lower_case_z():
    assert parse_time("2023-11-14t22:13:20z") == T0


# --- ErrorInfo -------------------------------------------------------------------------


def test_error_info_round_trip():
    err = ErrorInfo(code="30003", category="unreachable", description="Unreachable handset")
    assert err.to_dict() == {
        "code": "30003",
        "category": "unreachable",
        "description": "Unreachable handset",
    }
    assert ErrorInfo.from_dict(err.to_dict()) == err
    assert ErrorInfo.from_dict(json.loads(json.dumps(err.to_dict()))) == err


def test_error_info_round_trip_with_nones():
    err = ErrorInfo(code=None, category="unknown")
    assert err.description is None
    assert ErrorInfo.from_dict(err.to_dict()) == err


def test_error_info_from_dict_lenient():
    assert ErrorInfo.from_dict(None) is None
    assert ErrorInfo.from_dict({}) is None
    parsed = ErrorInfo.from_dict({"code": 131047})
    assert parsed == ErrorInfo(code="131047", category="unknown", description=None)
    assert ErrorInfo.from_dict({"code": "x", "category": ""}).category == "unknown"


def test_error_info_is_frozen():
    err = ErrorInfo(code="1", category="blocked")
    with pytest.raises(AttributeError):
        err.code = "2"  # type: ignore[misc]


# --- CanonicalEvent --------------------------------------------------------------------


def _event(**overrides) -> CanonicalEvent:
    fields = {
        "provider": "twilio",
        "provider_message_id": "SM123",
        "status": "undelivered",
        "provider_status": "undelivered",
        "channel": "sms",
        "observed_at": T0 + 5.5,
        "occurred_at": T0 + 1.25,
        "account": "AC1",
        "error": ErrorInfo(code="30003", category="unreachable", description="handset off"),
        "polled": True,
    }
    fields.update(overrides)
    return CanonicalEvent(**fields)


def test_canonical_event_round_trip():
    event = _event()
    data = event.to_dict()
    assert set(data) == {
        "provider",
        "provider_message_id",
        "status",
        "provider_status",
        "channel",
        "observed_at",
        "occurred_at",
        "account",
        "error",
        "polled",
    }
    assert data["error"] == {
        "code": "30003",
        "category": "unreachable",
        "description": "handset off",
    }
    assert CanonicalEvent.from_dict(data) == event
    # and through JSON, as it travels on status.canonical
    assert CanonicalEvent.from_dict(json.loads(json.dumps(data))) == event


def test_canonical_event_round_trip_minimal():
    event = _event(occurred_at=None, account=None, error=None, polled=False, status="sent")
    data = event.to_dict()
    assert data["error"] is None and data["occurred_at"] is None and data["account"] is None
    assert CanonicalEvent.from_dict(json.loads(json.dumps(data))) == event


def test_canonical_event_from_dict_defaults():
    event = CanonicalEvent.from_dict(
        {"provider": "ryze", "provider_message_id": "m1", "status": "sent", "observed_at": T0}
    )
    assert event.provider_status == "sent"  # falls back to the canonical word
    assert event.channel == "api"
    assert event.occurred_at is None and event.account is None and event.error is None
    assert event.polled is False
    assert isinstance(event.observed_at, float)


def test_message_key_and_event_time():
    event = _event()
    assert event.message_key == "twilio:SM123"
    assert event.event_time == T0 + 1.25
    assert _event(occurred_at=None).event_time == T0 + 5.5
    assert _event(occurred_at=0.0).event_time == 0.0  # a zero time is still a time
