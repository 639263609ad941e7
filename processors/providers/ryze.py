"""RyzeAPI (WhatsApp via WhatsMeow): `message.status` pushes and status poll answers.

The push format is not public, so both the assumed push shape
`{"event": "message.status", "instance", "data": {...}}` and the documented flat poll
answer `{"success": true, "message_id", "status", "status_code", ...}` are accepted
(PROVIDERS.md "RyzeAPI"). RyzeAPI signs nothing: a shared token authenticates pushes.

Polled (`msgstatus poller`): `GET {url}/api/chat/status/{instance}?messageId={id}` with the
header `token`; the instance is the message's `account` (from its `/v1/events`
registration). The answer has no instance, so the request URL kept on the raw record
names it for parse().
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit

import orjson

from processors.model import CanonicalEvent, ErrorInfo
from processors.providers import auth, common
from processors.providers.base import (
    DeadItem,
    ParseResult,
    Pending,
    Polling,
    WebhookRequest,
)
from processors.providers.coverage import DRR, TOKEN, Coverage

NAME = "ryze"
CONTENT_TYPES: tuple[str, ...] = ("application/json",)
FRAMING = "json"
# The credential is the token itself: never copy it onto the raw record.
SIGNATURE_HEADERS: tuple[str, ...] = ()
# Channels, signature and receipts as `msgstatus providers` and the README show them.
COVERAGE = Coverage(
    channels=("whatsapp",),
    signature=TOKEN,
    receipts={"whatsapp": DRR},
)
SECRET = "RYZE_TOKEN"
STATUS_EVENT = "message.status"

# `status` (string) and `status_code` (WhatsMeow number) -> canonical.
STATUS_MAP: dict[str, str] = {
    "pending": "queued",
    "sent": "sent",
    "delivered": "delivered",
    "received": "received",  # inbound (direction "received")
    "read": "read",
    "played": "played",  # audio/video only
    "error": "failed",
}
STATUS_CODE_MAP: dict[int, str] = {
    0: "queued",
    1: "sent",
    2: "delivered",
    3: "received",
    4: "read",
    5: "played",
    -1: "failed",
}
IGNORED_STATUSES: frozenset[str] = frozenset()  # none documented
STATUSES = common.StatusTable(STATUS_MAP, IGNORED_STATUSES)
CODES = common.StatusTable({str(code): status for code, status in STATUS_CODE_MAP.items()})
# RyzeAPI documents no failure reasons: a failure is "unknown" unless it names a code here.
ERROR_CODES: dict[str, tuple[str, str]] = dict(common.check_error_table({}))

_POLL_PATH = re.compile(r"/api/chat/status/([^/?#]+)")


# --- authentication -------------------------------------------------------------------

# `token` header or `Authorization: Bearer` equal to MSGSTATUS_RYZE_TOKEN.
AUTH = auth.SharedToken(NAME, SECRET, "RyzeAPI")
enabled, verify, calculate_signature, sign = AUTH.exports()


# --- parsing ----------------------------------------------------------------------------


def _instance_from_url(url: str) -> str | None:
    """A poll answer lacks the instance; the poller's request URL names it."""
    try:
        match = _POLL_PATH.search(urlsplit(url).path)
    except ValueError:
        return None
    return common.text(unquote(match.group(1))) if match else None


def _instance(value: Any) -> str | None:
    if isinstance(value, Mapping):
        return common.text(value.get("name")) or common.text(value.get("instanceName"))
    return common.text(value)


def _status(data: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(canonical, provider word): the string wins; a number (or numeric string) otherwise."""
    word = data.get("status")
    code = data.get("status_code")
    word_text = common.text(word, max_len=64) if not isinstance(word, int) else None
    if word_text is not None and common.to_int(word_text) is None:
        status = STATUSES.lookup(word_text)
        if status is not None or code is None:
            return status, word_text
    number = common.to_int(code) if code is not None else common.to_int(word)
    if number is None:
        # An unknown word with an unusable code, or nothing at all.
        raw = word_text or common.text(code, max_len=64)
        return None, raw
    return CODES.lookup(str(number)), str(number)


def _error(data: Mapping[str, Any]) -> ErrorInfo:
    raw = data.get("error")
    described = common.mapping(raw)
    description = (
        common.text(described.get("message"))
        or common.text(raw)
        or common.text(data.get("error_message"))
        or common.text(data.get("reason"))
    )
    code = described.get("code", data.get("error_code"))
    if common.text(code) is None:
        return ErrorInfo(code=None, category="unknown", description=description)
    return common.error_info(code, ERROR_CODES, description)


def _one(result: ParseResult, item: Any, request: WebhookRequest) -> None:
    obj = common.mapping(item)
    if not obj:
        result.dead.append(DeadItem("item is not a JSON object", item))
        return
    if "event" in obj:
        if obj.get("event") != STATUS_EVENT:
            result.ignored += 1  # other RyzeAPI events (messages, connection, ...)
            return
        data = obj.get("data")
        if not isinstance(data, Mapping):
            result.dead.append(DeadItem("message.status event without a `data` object", item))
            return
        instance = _instance(obj.get("instance")) or _instance(data.get("instance"))
    elif "success" in obj or "message_id" in obj:
        if obj.get("success") is False:
            result.ignored += 1  # a poll error answer (404 message not found, ...)
            return
        data = obj
        instance = _instance(obj.get("instance")) or _instance_from_url(request.url)
    else:
        result.dead.append(DeadItem("neither a message.status event nor a status answer", item))
        return
    message_id = common.text(data.get("message_id"), max_len=256) or common.text(
        data.get("messageId"), max_len=256
    )
    if message_id is None:
        result.dead.append(DeadItem("missing message_id", item))
        return
    status, word = _status(data)
    if word is None:
        result.dead.append(DeadItem("missing status and status_code", item))
        return
    if status is None:
        if STATUSES.is_ignored(word):
            result.ignored += 1
        else:
            result.dead.append(DeadItem(f"unknown ryze status {word!r}", item))
        return
    result.events.append(
        CanonicalEvent(
            provider=NAME,
            provider_message_id=message_id,
            status=status,
            provider_status=word,
            channel="whatsapp",
            observed_at=request.received_at,
            occurred_at=common.event_time(data.get("timestamp")),
            account=instance,
            error=_error(data) if status == "failed" else None,
            polled=request.polled,
        )
    )


# A push, a poll answer, or an array of them; FramingError when no JSON object/array.
parse = common.object_or_array(_one)


# --- polling ----------------------------------------------------------------------------


def poll_url(base_url: str, instance: str, message_id: str) -> str:
    query = urlencode({"messageId": message_id})
    return f"{base_url.rstrip('/')}/api/chat/status/{quote(instance, safe='')}?{query}"


def poll_request(base_url: str, token: str, message: Pending) -> tuple[str, dict[str, str]]:
    """URL and headers of the status query for `message` (its account is the instance)."""
    if not message.account:
        raise ValueError("a RyzeAPI poll needs the message's instance (its account)")
    url = poll_url(base_url, message.account, message.message_id)
    return url, {"token": token, "accept": "application/json"}


def poll_error(body: bytes) -> str | None:
    """`error.message` of an error answer (`{"success": false, "error": {"message"}}`)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    message = error.get("message") if isinstance(error, dict) else error
    return message[:200] if isinstance(message, str) else None


POLLING = Polling(
    request=poll_request,
    error_message=poll_error,
    channels=frozenset({"whatsapp"}),
    rate_limit=100,  # documented: "Rate-limit: Global (100/min)"
    default_channel="whatsapp",  # RyzeAPI is WhatsApp only
    needs_account=True,  # polled per instance
)
