"""Canonical statuses, their ranks and the event that flows through the stream.

Everything downstream of a provider speaks only these words (DESIGN.md section 5), so
the transition rules and the public schema can be written once.
"""

from __future__ import annotations

import datetime as _dt
import math
import time
from dataclasses import dataclass
from typing import Any

PROGRESS: tuple[str, ...] = (
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
RANK: dict[str, int] = {status: rank for rank, status in enumerate(PROGRESS)}
FAILURES: frozenset[str] = frozenset({"failed", "undelivered", "rejected", "expired", "canceled"})
INBOUND: frozenset[str] = frozenset({"received"})
ENGAGEMENT: frozenset[str] = frozenset(
    {"deleted", "replied", "opened", "clicked", "complained", "unsubscribed"}
)
STATUSES: frozenset[str] = frozenset(PROGRESS) | FAILURES | INBOUND | ENGAGEMENT
# Milestones a jump may skip; listed in `implied` so consumers can fill their timelines.
MILESTONES: tuple[str, ...] = ("sent", "delivered", "read")

ERROR_CATEGORIES: frozenset[str] = frozenset(
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
CHANNELS: frozenset[str] = frozenset(
    {
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
    }
)
# Channels whose providers never send a delivery receipt (PROVIDERS.md capability
# table): a message there may rest in `sent` forever, so `delivery_unknown` would lie.
NO_DELIVERY_RECEIPTS: frozenset[str] = frozenset({"instagram", "tiktok", "line", "telegram"})


def is_progress(status: str) -> bool:
    return status in RANK


def is_failure(status: str) -> bool:
    return status in FAILURES


def reports_delivery(channel: str | None) -> bool:
    return channel not in NO_DELIVERY_RECEIPTS


@dataclass(slots=True, frozen=True)
class ErrorInfo:
    code: str | None
    category: str
    description: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "category": self.category, "description": self.description}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ErrorInfo | None:
        if not data:
            return None
        code = data.get("code")
        return cls(
            code=None if code is None else str(code),
            category=data.get("category") or "unknown",
            description=data.get("description"),
        )


@dataclass(slots=True)
class CanonicalEvent:
    """One provider status of one message, in our words. Times are epoch seconds."""

    provider: str
    provider_message_id: str
    status: str
    provider_status: str
    channel: str
    observed_at: float
    occurred_at: float | None = None
    account: str | None = None
    error: ErrorInfo | None = None
    polled: bool = False

    @property
    def message_key(self) -> str:
        return f"{self.provider}:{self.provider_message_id}"

    @property
    def event_time(self) -> float:
        """When it happened: the provider's time if it gave one, else when we heard it."""
        return self.occurred_at if self.occurred_at is not None else self.observed_at

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "provider_message_id": self.provider_message_id,
            "status": self.status,
            "provider_status": self.provider_status,
            "channel": self.channel,
            "observed_at": self.observed_at,
            "occurred_at": self.occurred_at,
            "account": self.account,
            "error": self.error.to_dict() if self.error else None,
            "polled": self.polled,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CanonicalEvent:
        return cls(
            provider=data["provider"],
            provider_message_id=data["provider_message_id"],
            status=data["status"],
            provider_status=data.get("provider_status") or data["status"],
            channel=data.get("channel") or "api",
            observed_at=float(data["observed_at"]),
            occurred_at=None if data.get("occurred_at") is None else float(data["occurred_at"]),
            account=data.get("account"),
            error=ErrorInfo.from_dict(data.get("error")),
            polled=bool(data.get("polled", False)),
        )


def rfc3339(ts: float | None) -> str | None:
    """Epoch seconds -> RFC 3339 UTC with milliseconds (what the public schema shows).

    Hand-rolled (every emitted event carries three of these): the same result as
    datetime.fromtimestamp(ts, utc).isoformat(timespec="milliseconds") at a fifth of
    the cost.
    """
    if ts is None:
        return None
    seconds = math.floor(ts)
    micros = round((ts - seconds) * 1_000_000)
    if micros >= 1_000_000:
        seconds += 1
        micros -= 1_000_000
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(seconds))}.{micros // 1000:03d}Z"


def parse_time(value: Any) -> float | None:
    """Provider times come as unix seconds, milliseconds or RFC 3339: accept all three."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        text = str(value).strip()
        try:
            number = float(text)
        except ValueError:
            text = text.upper().replace("Z", "+00:00")
            try:
                moment = _dt.datetime.fromisoformat(text)
            except ValueError:
                return None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=_dt.UTC)
            return moment.timestamp()
    if number != number or number < 0 or number in (float("inf"), float("-inf")):
        return None
    return number / 1000.0 if number > 1e11 else number
