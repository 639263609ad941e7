"""Mailgun webhooks: one JSON event per POST, the signature inside the body.

`{"signature": {"timestamp", "token", "signature"}, "event-data": {...}}`; the signature
is hex HMAC-SHA256(MSGSTATUS_MAILGUN_SIGNING_KEY, timestamp + token). A timestamp further
than MSGSTATUS_REPLAY_WINDOW (5 minutes) from when we received the POST is refused,
measured against `received_at` so a stored raw record re-verifies the same way. The
signature does not cover `event-data`: the gateway remembers every token it accepted
(processors/providers/replay.py) and refuses it with any other body.

Key: `event-data.message.headers.message-id` (the Message-Id Mailgun answered on send,
without angle brackets); account: the domain part of that id, i.e. the sending domain
for ids Mailgun generated. Channel email.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from processors.config import Settings
from processors.model import CanonicalEvent, ErrorInfo
from processors.providers import common, email_errors
from processors.providers.base import (
    DeadItem,
    FramingError,
    ParseResult,
    SignatureError,
    WebhookRequest,
    constant_time_equal,
)
from processors.providers.coverage import DRR, Coverage
from processors.providers.freshness import require_fresh
from processors.providers.replay import ReplayKey, usable_key, window_ttl

NAME = "mailgun"
CONTENT_TYPES: tuple[str, ...] = ("application/json",)
FRAMING = "json"
SIGNATURE_HEADERS: tuple[str, ...] = ()  # the signature travels in the body
# Channels, signature and receipts as `msgstatus providers` and the README show them.
COVERAGE = Coverage(
    channels=("email",),
    signature="HMAC-SHA256 of timestamp + token (in the body)",
    receipts={"email": DRR},
    extra_statuses=("undelivered",),
)
SECRET = "MAILGUN_SIGNING_KEY"
CHANNEL = "email"

# `event-data.event` (PROVIDERS.md "Email"); `failed` is decided by its severity below.
STATUS_MAP: dict[str, str] = {
    "accepted": "queued",
    "delivered": "delivered",
    "rejected": "rejected",  # Mailgun refused to send or forward it
    "opened": "read",
    "clicked": "clicked",
    "complained": "complained",
    "unsubscribed": "unsubscribed",
}
# stored: an inbound message was stored; list_*: mailing-list uploads. No message status.
IGNORED_EVENTS: frozenset[str] = frozenset(
    {"stored", "list_member_uploaded", "list_member_upload_error", "list_uploaded"}
)
EVENTS = common.StatusTable(STATUS_MAP, IGNORED_EVENTS)
FAILED_EVENT = "failed"
# failed.severity: permanent is final; temporary means Mailgun retries, no change yet.
SEVERITIES = common.StatusTable({"permanent": "undelivered"}, frozenset({"temporary"}))
# failed.reason -> category; `bounce` and `generic` are decided by the SMTP answer.
FAILURE_REASONS: dict[str, tuple[str, str]] = dict(
    common.check_error_table(
        {
            "suppress-bounce": ("unreachable", "Not delivering to a previously bounced address"),
            "suppress-unsubscribe": ("opted_out", "Not delivering to an unsubscribed address"),
            "suppress-complaint": ("opted_out", "Not delivering to an address that complained"),
            "espblock": ("blocked", "Blocked by the recipient's email service provider"),
            "old": ("expired", "Mailgun stopped retrying: the message is too old"),
        }
    )
)


def enabled(settings: Settings) -> bool:
    return settings.secret(SECRET) is not None


# --- signature ----------------------------------------------------------------------------


def calculate_signature(signing_key: str, timestamp: str, token: str) -> str:
    """hex HMAC-SHA256(signing key, timestamp + token)."""
    return common.hmac_hex(signing_key, (timestamp + token).encode(), "sha256")


def signature_block(signing_key: str, timestamp: int, token: str) -> dict[str, str]:
    """The body's `signature` object Mailgun would send (tests and the demo sender)."""
    stamp = str(timestamp)
    return {
        "timestamp": stamp,
        "token": token,
        "signature": calculate_signature(signing_key, stamp, token),
    }


def sign(event_data: Mapping[str, Any], signing_key: str, timestamp: int, token: str) -> bytes:
    """A whole signed webhook body for `event_data`."""
    return orjson.dumps(
        {"signature": signature_block(signing_key, timestamp, token), "event-data": event_data}
    )


def _signature_block(body: bytes) -> tuple[str, str, str]:
    """(timestamp, token, signature) of the body's `signature` object; empty when absent."""
    try:
        data = orjson.loads(body)
    except (orjson.JSONDecodeError, ValueError, TypeError, RecursionError):
        raise SignatureError("cannot verify: body is not JSON") from None
    block = common.mapping(common.mapping(data).get("signature"))
    raw_stamp = block.get("timestamp")
    if isinstance(raw_stamp, int) and not isinstance(raw_stamp, bool):
        raw_stamp = str(raw_stamp)
    stamp = raw_stamp if isinstance(raw_stamp, str) else ""
    token = block.get("token") if isinstance(block.get("token"), str) else ""
    given = block.get("signature") if isinstance(block.get("signature"), str) else ""
    return stamp, token, given


def verify(request: WebhookRequest, settings: Settings) -> None:
    """HMAC over the body's timestamp + token, within the replay window; raises
    SignatureError only.

    The signature does not cover `event-data`: only the gateway's memory of used tokens
    (`replay_key()`) stops a signature block seen once from carrying other events.
    """
    key = settings.secret(SECRET)
    if key is None:
        raise SignatureError("mailgun is not configured (MSGSTATUS_MAILGUN_SIGNING_KEY unset)")
    stamp, token, given = _signature_block(request.body)
    if not stamp or not token or not given:
        raise SignatureError("missing signature.timestamp, .token or .signature in the body")
    if not (stamp.isascii() and stamp.isdigit()) or len(stamp) > 12:
        raise SignatureError("signature.timestamp must be unix seconds")
    if usable_key(token) is None:
        raise SignatureError("signature.token must be printable ASCII, at most 256 characters")
    if not constant_time_equal(calculate_signature(key, stamp, token), given.strip().lower()):
        raise SignatureError("signature does not match")
    require_fresh(float(stamp), request.received_at, settings.replay_window, "mailgun")


def replay_key(request: WebhookRequest, settings: Settings) -> ReplayKey | None:
    """The signature's token: Mailgun never sends one twice, so a second body with the
    same token is a forgery (or, with the same body, a retry already stored)."""
    _, token, _ = _signature_block(request.body)
    key = usable_key(token)
    return ReplayKey(key, window_ttl(settings.replay_window)) if key else None


# --- parsing ----------------------------------------------------------------------------


def message_id(event_data: Mapping[str, Any]) -> str | None:
    headers = common.mapping(common.mapping(event_data.get("message")).get("headers"))
    raw = common.text(headers.get("message-id"), max_len=512)
    if raw is None:
        return None
    return common.text(raw.strip().removeprefix("<").removesuffix(">"), max_len=256)


def failure_error(event_data: Mapping[str, Any]) -> ErrorInfo:
    reason = (common.text(event_data.get("reason"), max_len=64) or "").lower()
    status = common.mapping(event_data.get("delivery-status"))
    code = common.text(status.get("code"), max_len=16)
    texts = (
        common.text(status.get("enhanced-code"), max_len=16),
        common.text(status.get("message"), max_len=2048),
        common.text(status.get("description"), max_len=2048),
    )
    description = texts[2] or texts[1]
    if reason in FAILURE_REASONS:
        category, generic = FAILURE_REASONS[reason]
        return ErrorInfo(code=code, category=category, description=description or generic)
    category = email_errors.classify(*texts, code) or "unknown"
    return ErrorInfo(code=code, category=category, description=description)


def rejected_error(event_data: Mapping[str, Any]) -> ErrorInfo:
    reject = common.mapping(event_data.get("reject"))
    reason = common.text(reject.get("reason"), max_len=1024)
    description = common.text(reject.get("description"), max_len=2048) or reason
    category = email_errors.classify(reason, description) or "unknown"
    return ErrorInfo(code=None, category=category, description=description)


@common.guarded
def parse(request: WebhookRequest) -> ParseResult:
    """One event per POST; FramingError when it is no Mailgun webhook object."""
    data = common.load_json(request.body)
    if not isinstance(data, dict) or not isinstance(data.get("event-data"), dict):
        raise FramingError("body must be a Mailgun webhook: a JSON object with `event-data`")
    event_data: dict[str, Any] = data["event-data"]
    result = ParseResult()
    word = common.text(event_data.get("event"), max_len=64)
    if word is None:
        result.dead.append(DeadItem("mailgun event-data without `event`", event_data))
        return result
    key = word.lower()
    error: ErrorInfo | None = None
    provider_status = key
    if key == FAILED_EVENT:
        severity = common.text(event_data.get("severity"), max_len=32)
        if severity is None:
            result.dead.append(DeadItem("mailgun failed event without severity", event_data))
            return result
        # an ignored (temporary) failure: Mailgun retries, the outcome follows
        status = SEVERITIES.resolve(
            severity, result, event_data, f"unknown mailgun severity {severity!r}"
        )
        if status is None:
            return result
        provider_status = f"failed/{severity.lower()}"
        error = failure_error(event_data)
    else:
        status = EVENTS.resolve(word, result, event_data, f"unknown mailgun event {word!r}")
        if status is None:
            return result
        if key == "rejected":
            error = rejected_error(event_data)
    mid = message_id(event_data)
    if mid is None:
        result.dead.append(DeadItem("mailgun event without message.headers.message-id", event_data))
        return result
    _, at, domain = mid.rpartition("@")
    result.events.append(
        CanonicalEvent(
            provider=NAME,
            provider_message_id=mid,
            status=status,
            provider_status=provider_status,
            channel=CHANNEL,
            observed_at=request.received_at,
            occurred_at=common.event_time(event_data.get("timestamp")),
            account=domain if at and domain else None,
            error=error,
            polled=request.polled,
        )
    )
    return result
