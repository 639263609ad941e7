"""Octopods (WhatsApp, SMS, Viber Business Messages): status pushes and poll answers.

Octopods documents its status vocabulary and polling API (seeds/001), not a push format,
so a push is assumed to be the polling item JSON (PROVIDERS.md "Octopods"):
`{"message_id", "channel", "message_status": {"message_status": "DELIVERED",
"failure_reason": null}, "updated_at"}`; one item, an array of items, or a list answer
holding them under `data`, `messages` or `results`.

- DELETED means the recipient deleted the message after it was delivered: two events,
  `delivered` (even if DELIVERED was never seen) and the engagement `deleted`.
- UNKNOWN means "not available yet, ask again": known, no status change (ignored).
- FAILED carries a free-text failure reason; when it is (or starts with) the code of the
  provider Octopods relayed to (Twilio, WhatsApp), that code's category is used.

Octopods signs nothing: header `token` or `Authorization: Bearer` must equal
MSGSTATUS_OCTOPODS_TOKEN.

Polled (`msgstatus poller`): `GET {url}/api/v1/{whatsapp|sms}/messages/{id}` with a Bearer
token (only WhatsApp and SMS have a documented status endpoint). While SENT or UNKNOWN
Octopods asks to re-poll after 10-30 s, hence the wide jitter around the interval.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from processors.model import CanonicalEvent, ErrorInfo
from processors.providers import auth, common, meta, twilio
from processors.providers.base import (
    DeadItem,
    ParseResult,
    Pending,
    Polling,
    WebhookRequest,
)
from processors.providers.coverage import DR, DRR, TOKEN, Coverage

NAME = "octopods"
CONTENT_TYPES: tuple[str, ...] = ("application/json",)
FRAMING = "json"
SIGNATURE_HEADERS: tuple[str, ...] = ()  # the credential is the token itself: never kept
# Channels, signature and receipts as `msgstatus providers` and the README show them.
COVERAGE = Coverage(
    channels=("whatsapp", "sms", "viber"),
    signature=TOKEN,
    receipts={"whatsapp": DRR, "sms": DR, "viber": DR},
    extra_statuses=("deleted",),
)
SECRET = "OCTOPODS_TOKEN"

# Octopods' six words (seeds/001). DELETED is handled below: delivered + engagement.
STATUS_MAP: dict[str, str] = {
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",  # WhatsApp only
    "failed": "failed",
    "deleted": "delivered",  # plus the engagement `deleted`
}
IGNORED_STATUSES: frozenset[str] = frozenset({"unknown"})  # "not yet available"
STATUSES = common.StatusTable(STATUS_MAP, IGNORED_STATUSES)
DELETED = "deleted"

# Octopods has no codes of its own; it relays Twilio's (SMS) and WhatsApp's when it can.
ERROR_CODES: dict[str, tuple[str, str]] = dict(
    common.check_error_table({**twilio.ERROR_CODES, **meta.ERROR_CODES})
)
CHANNELS: dict[str, str] = {
    "whatsapp": "whatsapp",
    "sms": "sms",
    "viber": "viber",
    "vbm": "viber",  # Viber Business Messages
}
DEFAULT_CHANNEL = "whatsapp"
_LIST_KEYS = ("data", "messages", "results")
_POLL_PATH = re.compile(r"/api/v1/(whatsapp|sms|viber)/messages(?:/|$)")
_LEADING_CODE = re.compile(r"\s*\(?#?(\d{3,6})\b")


# --- authentication -------------------------------------------------------------------

# `token` header or `Authorization: Bearer` equal to MSGSTATUS_OCTOPODS_TOKEN.
AUTH = auth.SharedToken(NAME, SECRET, "Octopods")
enabled, verify, calculate_signature, sign = AUTH.exports()


# --- parsing ----------------------------------------------------------------------------


def _channel_from_url(url: str) -> str | None:
    try:
        match = _POLL_PATH.search(urlsplit(url).path)
    except ValueError:
        return None
    return CHANNELS[match.group(1)] if match else None


def _status_fields(obj: Mapping[str, Any]) -> tuple[str | None, Any]:
    """(status word, failure reason): nested `message_status` object, or flat fields."""
    nested = obj.get("message_status")
    if isinstance(nested, Mapping):
        word = common.text(nested.get("message_status"), max_len=64) or common.text(
            nested.get("status"), max_len=64
        )
        reason = nested.get("failure_reason", obj.get("failure_reason"))
        return word, reason
    word = common.text(nested, max_len=64) or common.text(obj.get("status"), max_len=64)
    return word, obj.get("failure_reason")


def error_of(reason: Any) -> ErrorInfo:
    """A failure reason (text, or `{code, message}`) -> ErrorInfo; category by code."""
    described = common.mapping(reason)
    text = (
        common.text(described.get("message"))
        or common.text(described.get("description"))
        or common.text(reason)
    )
    code = common.text(described.get("code"), max_len=32)
    if code is None and text is not None:
        match = _LEADING_CODE.match(text)
        code = match.group(1) if match else None
    if code is None:
        return ErrorInfo(code=None, category="unknown", description=text)
    return common.error_info(code, ERROR_CODES, text)


def _one(result: ParseResult, item: Any, request: WebhookRequest) -> None:
    obj = common.mapping(item)
    if not obj:
        result.dead.append(DeadItem("item is not a JSON object", item))
        return
    message_id = common.text(obj.get("message_id"), max_len=256) or common.text(
        obj.get("id"), max_len=256
    )
    if message_id is None:
        result.dead.append(DeadItem("missing message_id", item))
        return
    word, reason = _status_fields(obj)
    if word is None:
        result.dead.append(DeadItem("missing message_status", item))
        return
    status = STATUSES.resolve(word, result, item, f"unknown octopods status {word!r}")
    if status is None:
        return
    named = (common.text(obj.get("channel"), max_len=32) or "").lower()
    channel = CHANNELS.get(named) or _channel_from_url(request.url) or DEFAULT_CHANNEL
    at = common.event_time(obj.get("updated_at")) or common.event_time(obj.get("timestamp"))

    def event(canonical: str, error: ErrorInfo | None = None) -> None:
        result.events.append(
            CanonicalEvent(
                provider=NAME,
                provider_message_id=message_id,
                status=canonical,
                provider_status=word,
                channel=channel,
                observed_at=request.received_at,
                occurred_at=at,
                account=common.text(obj.get("account")),
                error=error,
                polled=request.polled,
            )
        )

    event(status, error_of(reason) if status == "failed" else None)
    if word.strip().lower() == DELETED:
        event("deleted")  # engagement: the recipient deleted it after delivery


def _listed(answer: Mapping[str, Any]) -> list[Any] | None:
    """The items of a list answer (`{"data": [...]}` and the like), else None."""
    return next((answer[k] for k in _LIST_KEYS if isinstance(answer.get(k), list)), None)


# An item, an array of items or a list answer; FramingError when no JSON object/array.
parse = common.object_or_array(_one, unwrap=_listed)


# --- polling ----------------------------------------------------------------------------

# message channel -> path segment of the status endpoint
POLL_PATHS: dict[str, str] = {"whatsapp": "whatsapp", "sms": "sms"}


def poll_url(base_url: str, channel: str, message_id: str) -> str:
    path = POLL_PATHS[channel]
    return f"{base_url.rstrip('/')}/api/v1/{path}/messages/{quote(message_id, safe='')}"


def poll_request(base_url: str, token: str, message: Pending) -> tuple[str, dict[str, str]]:
    url = poll_url(base_url, message.channel, message.message_id)
    return url, {"authorization": f"Bearer {token}", "accept": "application/json"}


def poll_error(body: bytes) -> str | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    error = data.get("error", data.get("message"))
    if isinstance(error, dict):
        error = error.get("message")
    return error[:200] if isinstance(error, str) else None


POLLING = Polling(
    request=poll_request,
    error_message=poll_error,
    channels=frozenset(POLL_PATHS),
    rate_limit=60,  # not published by Octopods: a cautious assumption
    jitter=(2 / 3, 2.0),  # 10-30 s with the default 15 s interval
)
