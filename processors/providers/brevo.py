"""Brevo (formerly Sendinblue) transactional webhooks: email events and SMS statuses.

Sources (PROVIDERS-NEXT.md "Brevo"):
https://developers.brevo.com/docs/transactional-webhooks (payloads, the example our
fixtures follow), https://developers.brevo.com/docs/batch-webhooks,
https://developers.brevo.com/reference/gettransacemailcontent (event names),
https://developers.brevo.com/docs/username-and-password-authentication, and the official
SDK's webhook models (github.com/getbrevo/brevo-python).

One JSON object per POST, or a JSON array of them (batched webhooks: up to 500 per call).
An email event has `event`, `email`, `message-id` (our key, angle brackets removed: the send
API returns it bracketed, webhooks show it bare), `ts_event` / `ts_epoch` (UTC; `date` is
Central European time and unused) and `reason` on bounces, blocks, errors and deferrals.
An SMS status has `msg_status`, `messageId` (our key), `to`, `reference`. Account: the
webhook's `id` (the same on every call of one webhook). Event names arrive in snake_case in
payloads and camelCase in subscriptions (`hard_bounce` / `hardBounce`): both are read.
SMS events carry only `date`, whose zone is not documented, so they have no event time.

Brevo signs nothing; a webhook can send a bearer token (`"auth": {"type": "bearer"}`), custom
headers, or be called on a URL holding one: the shared token MSGSTATUS_BREVO_TOKEN is read
from `Authorization: Bearer`, a `token` header, or `?token=` (never stored).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from processors.model import CanonicalEvent, ErrorInfo
from processors.providers import auth, common, query_string
from processors.providers.base import DeadItem, ParseResult, WebhookRequest
from processors.providers.coverage import DR, DRR, QUERY_TOKEN, Coverage

NAME = "brevo"
CONTENT_TYPES: tuple[str, ...] = ("application/json",)
FRAMING = "json"
SIGNATURE_HEADERS: tuple[str, ...] = ()  # a shared token: never kept
# Channels, signature and receipts as `msgstatus providers` and the README show them.
COVERAGE = Coverage(
    channels=("email", "sms"),
    signature=QUERY_TOKEN,
    receipts={"email": DRR, "sms": DR},
    extra_statuses=("replied",),  # SMS replies
)
QUERY_CREDENTIALS: tuple[str, ...] = (query_string.TOKEN_PARAM,)
SECRET = "BREVO_TOKEN"

# Email `event` (normalized: lower case, no `_`) -> canonical.
STATUS_MAP: dict[str, str] = {
    "request": "sent",  # pushed for delivery
    "delivered": "delivered",
    "hardbounce": "undelivered",  # permanently rejected by the receiving server
    "blocked": "rejected",  # prevented, e.g. blacklisted
    "invalidemail": "rejected",
    "error": "failed",  # error during transfer
    "spam": "complained",
    "opened": "read",
    "uniqueopened": "read",  # the first opening
    "click": "clicked",
    "unsubscribed": "unsubscribed",
    "proxyopen": "opened",  # opened by a privacy proxy: not proof of a human read
    "uniqueproxyopen": "opened",
}
IGNORED_STATUSES: frozenset[str] = frozenset({"deferred", "softbounce"})  # retried by Brevo
STATUSES = common.StatusTable(STATUS_MAP, IGNORED_STATUSES)
EMAIL_ERRORS: dict[str, tuple[str, str]] = dict(
    common.check_error_table(
        {
            "hardbounce": ("invalid_number", "Hard bounce"),
            "blocked": ("blocked", "Blocked"),
            "invalidemail": ("invalid_number", "Invalid email address"),
            "error": ("provider_error", "Error during transfer"),
        }
    )
)

# SMS `msg_status` (normalized) -> canonical.
SMS_STATUS_MAP: dict[str, str] = {
    "sent": "sent",
    "accepted": "sent",
    "delivered": "delivered",
    "softbounce": "undelivered",
    "hardbounce": "undelivered",
    "rejected": "rejected",
    "blacklisted": "rejected",
    "reply": "replied",
    "replied": "replied",
    "unsubscribe": "unsubscribed",
    "unsubscribed": "unsubscribed",
}
SMS_STATUSES = common.StatusTable(SMS_STATUS_MAP, frozenset({"subscribe", "skip"}))
SMS_ERRORS: dict[str, tuple[str, str]] = dict(
    common.check_error_table(
        {
            "softbounce": ("unreachable", "Soft bounce"),
            "hardbounce": ("invalid_number", "Hard bounce"),
            "rejected": ("unknown", "Rejected"),
            "blacklisted": ("opted_out", "Blacklisted"),
        }
    )
)
_NOT_LETTERS = re.compile(r"[^a-z]")


# The shared token (Bearer, `token` header or `?token=`) must be MSGSTATUS_BREVO_TOKEN.
AUTH = auth.QueryToken(NAME, SECRET)
enabled, verify, _ = AUTH.exports()


def sign(body: bytes, token: str) -> dict[str, str]:
    """Headers of a Brevo webhook configured with `auth: {type: bearer}` (tests, demo)."""
    del body
    return {"content-type": "application/json", "authorization": f"Bearer {token}"}


# --- parsing ----------------------------------------------------------------------------


def normalized(word: str) -> str:
    """`hard_bounce`, `hardBounce`, `Hard-Bounce` -> `hardbounce`."""
    return _NOT_LETTERS.sub("", word.lower())


def _email(result: ParseResult, request: WebhookRequest, item: Mapping[str, Any]) -> None:
    word = common.text(item.get("event"), max_len=64) or ""
    key = normalized(word)
    status = STATUSES.resolve(key, result, dict(item), f"unknown brevo email event {word[:64]!r}")
    if status is None:
        return
    message_id = (common.text(item.get("message-id"), max_len=512) or "").strip("<> ")
    if not message_id:
        result.dead.append(DeadItem("brevo email event without message-id", dict(item)))
        return
    error = None
    if key in EMAIL_ERRORS:
        category, generic = EMAIL_ERRORS[key]
        description = common.text(item.get("reason")) or generic
        error = ErrorInfo(code=word, category=category, description=description)
    at = common.event_time(item.get("ts_epoch")) or common.event_time(item.get("ts_event"))
    result.events.append(
        CanonicalEvent(
            provider=NAME,
            provider_message_id=message_id,
            status=status,
            provider_status=word,
            channel="email",
            observed_at=request.received_at,
            occurred_at=at or common.event_time(item.get("ts")),
            account=common.text(item.get("id"), max_len=64),
            error=error,
            polled=request.polled,
        )
    )


def _sms(result: ParseResult, request: WebhookRequest, item: Mapping[str, Any]) -> None:
    word = common.text(item.get("msg_status"), max_len=64) or ""
    key = normalized(word)
    status = SMS_STATUSES.resolve(
        key, result, dict(item), f"unknown brevo SMS status {word[:64]!r}"
    )
    if status is None:
        return
    message_id = common.text(item.get("messageId"), max_len=128)
    if message_id is None:
        result.dead.append(DeadItem("brevo SMS status without messageId", dict(item)))
        return
    error = None
    if key in SMS_ERRORS:
        category, generic = SMS_ERRORS[key]
        error = ErrorInfo(code=word, category=category, description=generic)
    result.events.append(
        CanonicalEvent(
            provider=NAME,
            provider_message_id=message_id,
            status=status,
            provider_status=word,
            channel="sms",
            observed_at=request.received_at,
            occurred_at=None,
            account=common.text(item.get("id"), max_len=64),
            error=error,
            polled=request.polled,
        )
    )


def _one(result: ParseResult, item: Any, request: WebhookRequest) -> None:
    obj = common.mapping(item)
    if "msg_status" in obj:
        _sms(result, request, obj)
    elif "event" in obj:
        _email(result, request, obj)
    else:
        result.dead.append(DeadItem("brevo item with neither `event` nor `msg_status`", item))


# One event object or a batch (array) of them; FramingError for anything else.
parse = common.object_or_array(_one, "body must be a Brevo event object or an array of them")
