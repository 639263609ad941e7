"""`POST /v1/events`: the user's own senders report events already in our words.

Used to register outbound messages (with the account a poller needs), report send-time
failures, and cover channels without provider webhooks. Validation is strict and each
rejected item gets a precise reason, because the sender is ours to fix
(DESIGN.md section 7). Authenticated by `Authorization: Bearer MSGSTATUS_EVENTS_TOKEN`
(the write token; MSGSTATUS_API_TOKEN only reads) or a Standard Webhooks signature
(MSGSTATUS_EVENTS_WEBHOOK_SECRET): `webhook-timestamp` within MSGSTATUS_REPLAY_WINDOW of
when the gateway received the request, and `webhook-id` remembered by the gateway.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping
from typing import Any

from processors.config import Settings
from processors.model import (
    CHANNELS,
    ERROR_CATEGORIES,
    FAILURES,
    RANK,
    STATUSES,
    CanonicalEvent,
    ErrorInfo,
)
from processors.providers import common
from processors.providers.base import (
    DeadItem,
    ParseResult,
    Registration,
    SignatureError,
    WebhookRequest,
    constant_time_equal,
)
from processors.providers.coverage import DRR, ORDER, Coverage
from processors.providers.freshness import require_fresh
from processors.providers.replay import ReplayKey, usable_key, window_ttl

NAME = "events"
CONTENT_TYPES: tuple[str, ...] = ("application/json",)
FRAMING = "json"
# Standard Webhooks headers carry no secret; the Bearer token does, so it is not kept.
SIGNATURE_HEADERS: tuple[str, ...] = ("webhook-id", "webhook-timestamp", "webhook-signature")
# Served on POST /v1/events too (DESIGN.md section 7), besides /webhooks/events.
ENDPOINT = "/v1/events"
# Channels, signature and receipts as `msgstatus providers` and the README show them.
COVERAGE = Coverage(
    channels=("any",),
    signature="Bearer token or Standard Webhooks (HMAC-SHA256)",
    receipts={"api": DRR, "web": DRR},
    statuses=tuple(s for s in ORDER if s != "delivery_unknown"),
)
SECRET = "EVENTS_WEBHOOK_SECRET"

# Reporters speak canonical statuses already; only the emitter derives delivery_unknown.
ACCEPTED_STATUSES: frozenset[str] = STATUSES - {"delivery_unknown"}
PROVIDER_RE = re.compile(r"[a-z0-9_-]{1,32}")
MAX_ID_LEN = 256
DEFAULT_CHANNEL = "api"


def enabled(settings: Settings) -> bool:
    return settings.events_token is not None or settings.secret(SECRET) is not None


# --- authentication -------------------------------------------------------------------


def _secret_key(secret: str) -> bytes:
    """`whsec_<base64>` -> key bytes; a secret that is not base64 is used as given."""
    raw = secret.removeprefix("whsec_")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return raw.encode()


def calculate_signature(secret: str, msg_id: str, timestamp: int | str, body: bytes) -> str:
    """One `webhook-signature` entry: `v1,<base64 HMAC-SHA256(key, "{id}.{ts}.{body}")>`."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + common.hmac_b64(_secret_key(secret), signed, "sha256")


def sign(body: bytes, secret: str, msg_id: str, timestamp: int) -> dict[str, str]:
    """Standard Webhooks headers for `body` (tests and the demo sender use it)."""
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": calculate_signature(secret, msg_id, timestamp, body),
    }


def _verify_standard_webhooks(request: WebhookRequest, secret: str, window: float) -> None:
    msg_id = (request.header("webhook-id") or "").strip()
    stamp = (request.header("webhook-timestamp") or "").strip()
    given = request.header("webhook-signature") or ""
    if not msg_id or not stamp:
        raise SignatureError("webhook-id and webhook-timestamp headers are required")
    if usable_key(msg_id) is None:
        raise SignatureError("webhook-id must be printable ASCII, at most 256 characters")
    if not (stamp.isascii() and stamp.isdigit()) or len(stamp) > 12:
        raise SignatureError("webhook-timestamp must be unix seconds")
    expected = calculate_signature(secret, msg_id, stamp, request.body)
    candidates = [part for part in given.split() if part.startswith("v1,")]
    if not candidates:
        raise SignatureError("webhook-signature has no v1 signature")
    if not any(constant_time_equal(expected, candidate) for candidate in candidates):
        raise SignatureError("webhook-signature does not match")
    # The time we received it, not now: a replayed raw record re-verifies the same way.
    require_fresh(float(stamp), request.received_at, window, "webhook-timestamp")


def verify(request: WebhookRequest, settings: Settings) -> None:
    """Bearer write token first, else Standard Webhooks signature; SignatureError only."""
    auth = request.header("authorization") or ""
    scheme, _, credential = auth.strip().partition(" ")
    if scheme.lower() == "bearer" and credential.strip():
        if settings.events_token is not None and constant_time_equal(
            settings.events_token, credential.strip()
        ):
            return
        if not request.header("webhook-signature"):
            raise SignatureError("invalid bearer token (the write token, MSGSTATUS_EVENTS_TOKEN)")
    secret = settings.secret(SECRET)
    if request.header("webhook-signature"):
        if secret is None:
            raise SignatureError("signed requests are not enabled (no webhook secret set)")
        _verify_standard_webhooks(request, secret, settings.replay_window)
        return
    raise SignatureError("missing `Authorization: Bearer` or Standard Webhooks signature")


def replay_key(request: WebhookRequest, settings: Settings) -> ReplayKey | None:
    """`webhook-id` of a signed request (Standard Webhooks: the same id on every retry).
    Bearer requests carry none: the sender's own retries are new requests."""
    if not request.header("webhook-signature"):
        return None
    key = usable_key(request.header("webhook-id"))
    return ReplayKey(key, window_ttl(settings.replay_window)) if key else None


# --- parsing ----------------------------------------------------------------------------


def _occurred_at(value: Any) -> tuple[float | None, str | None]:
    """(epoch seconds, None) or (None, reason) for an RFC 3339 string or a unix number."""
    if value is None:
        return None, None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None, "occurred_at must be an RFC 3339 string or unix seconds"
    if isinstance(value, float) and not math.isfinite(value):
        return None, "occurred_at must be a finite number"
    if isinstance(value, str) and not value.strip():
        return None, "occurred_at must not be empty"
    ts = common.event_time(value)
    if ts is None:
        return None, f"occurred_at {str(value)[:64]!r} is not RFC 3339 or unix seconds"
    return ts, None


def _error(value: Any) -> tuple[ErrorInfo | None, str | None]:
    if value is None:
        return None, None
    if not isinstance(value, Mapping):
        return None, "error must be an object or null"
    code = value.get("code")
    if code is not None and (isinstance(code, bool) or not isinstance(code, (str, int))):
        return None, "error.code must be a string or an integer"
    description = value.get("description")
    if description is not None and not isinstance(description, str):
        return None, "error.description must be a string"
    category = value.get("category")
    return (
        ErrorInfo(
            code=None if code is None else str(code),
            category=category
            if isinstance(category, str) and category in ERROR_CATEGORIES
            else "unknown",
            description=description,
        ),
        None,
    )


def _optional_text(obj: Mapping[str, Any], key: str) -> tuple[str | None, str | None]:
    value = obj.get(key)
    if value is None:
        return None, None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_ID_LEN:
        return None, f"{key} must be a non-empty string of at most {MAX_ID_LEN} characters"
    return value, None


def _event(item: Any, request: WebhookRequest) -> CanonicalEvent | str:
    """The event for one item, or the reason it is rejected."""
    if not isinstance(item, Mapping):
        return "item must be a JSON object"
    provider = item.get("provider")
    if not isinstance(provider, str) or not PROVIDER_RE.fullmatch(provider):
        return "provider must match ^[a-z0-9_-]{1,32}$"
    message_id = item.get("provider_message_id")
    if not isinstance(message_id, str) or not message_id.strip() or len(message_id) > MAX_ID_LEN:
        return f"provider_message_id must be a non-empty string of at most {MAX_ID_LEN} characters"
    status = item.get("status")
    if status == "delivery_unknown":
        return "status delivery_unknown is derived by msgstatus and cannot be reported"
    if not isinstance(status, str) or status not in ACCEPTED_STATUSES:
        return f"status must be a canonical status, got {str(status)[:64]!r}"
    channel = item.get("channel")
    if channel is None:
        channel = DEFAULT_CHANNEL
    if not isinstance(channel, str) or channel not in CHANNELS:
        return f"channel must be one of {', '.join(sorted(CHANNELS))}"
    occurred_at, reason = _occurred_at(item.get("occurred_at"))
    if reason:
        return reason
    error, reason = _error(item.get("error"))
    if reason:
        return reason
    account, reason = _optional_text(item, "account")
    if reason:
        return reason
    provider_status, reason = _optional_text(item, "provider_status")
    if reason:
        return reason
    reason = _conversation_problem(item, channel)
    if reason:
        return reason
    return CanonicalEvent(
        provider=provider,
        provider_message_id=message_id,
        status=status,
        provider_status=provider_status or status,
        channel=channel,
        observed_at=request.received_at,
        occurred_at=occurred_at,
        account=account,
        error=error,
        polled=request.polled,
    )


# --- Messenger conversations (watermark expansion, processors/stream/watermarks.py) -----

CONVERSATION_RE = re.compile(r"[^:\s]{1,128}:[^:\s]{1,128}")
CONVERSATION_CHANNELS = frozenset({"messenger"})


def _conversation_problem(item: Mapping[str, Any], channel: str) -> str | None:
    """Why the optional `conversation` ("<page_id>:<user_psid>") is unusable, or None."""
    value = item.get("conversation")
    if value is None:
        return None
    if channel not in CONVERSATION_CHANNELS:
        return "conversation is only meaningful for channel messenger"
    if not isinstance(value, str) or not CONVERSATION_RE.fullmatch(value):
        return "conversation must look like <page_id>:<user_psid>"
    return None


def _registration(item: Mapping[str, Any], event: CanonicalEvent) -> Registration | None:
    """An outbound Messenger message reported with its conversation joins the index that
    watermarks expand over; a send-time failure leaves it (no watermark may deliver it)."""
    conversation = item.get("conversation")
    if not isinstance(conversation, str):
        return None
    if event.status not in RANK and event.status not in FAILURES:
        return None  # engagement and inbound events say nothing about the index
    return Registration(
        conversation=conversation,
        provider=event.provider,
        provider_message_id=event.provider_message_id,
        sent_at_ms=round(event.event_time * 1000),
        account=event.account,
        channel=event.channel,
        withdrawn=event.status in FAILURES,
    )


def _one(result: ParseResult, item: Any, request: WebhookRequest) -> None:
    outcome = _event(item, request)
    if isinstance(outcome, str):
        result.dead.append(DeadItem(outcome, item))
    else:
        result.events.append(outcome)
        registration = _registration(item, outcome)
        if registration is not None:
            result.registrations.append(registration)


# One object or an array of them; FramingError when the body is neither.
parse = common.object_or_array(_one, "body must be a JSON object or an array of objects")
