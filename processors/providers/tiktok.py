"""TikTok Business Messaging: read events (the only receipt TikTok gives; PROVIDERS.md).

TikTok's messaging webhook format is not public, so this shape is our documented
assumption, modelled on TikTok's developer webhook envelope:

    {"client_key" | "business_id": "...", "event": "message.read",
     "create_time": <unix s>, "user_openid": "...",
     "content": {"conversation_id": "...", "message_id": "..." | "message_ids": [...]}}

`content` may also be a JSON string (as in TikTok's other webhooks), the ids may sit at
the top level, and one POST may hold an array of events. Read events are `message.read`
and `im_mark_read_msg`; every other event (inbound messages, ...) is known and ignored.
Each message id read becomes one `read` event on channel `tiktok`. A read event naming
no message (a conversation-wide read) is dead-lettered: we cannot tell which messages
it covers.

Authentication: header `token` or `Authorization: Bearer` equal to
MSGSTATUS_TIKTOK_TOKEN (a relay or TikTok partner forwards with it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from processors.model import CanonicalEvent
from processors.providers import auth, common
from processors.providers.base import (
    DeadItem,
    ParseResult,
    WebhookRequest,
)
from processors.providers.coverage import TOKEN, Coverage

NAME = "tiktok"
CONTENT_TYPES: tuple[str, ...] = ("application/json",)
FRAMING = "json"
SIGNATURE_HEADERS: tuple[str, ...] = ()  # the credential is the token itself: never kept
# Channels, signature and receipts as `msgstatus providers` and the README show them.
COVERAGE = Coverage(channels=("tiktok",), signature=TOKEN, receipts={"tiktok": ("read",)})
SECRET = "TIKTOK_TOKEN"

# Event names -> canonical. Only reads exist; the rest of the webhook is ignored.
STATUS_MAP: dict[str, str] = {"message.read": "read", "im_mark_read_msg": "read"}
IGNORED_STATUSES: frozenset[str] = frozenset(
    {"message.received", "im_receive_msg", "im_send_msg", "im_enter_direct_msg"}
)
STATUSES = common.StatusTable(STATUS_MAP, IGNORED_STATUSES)
ERROR_CODES: dict[str, tuple[str, str]] = dict(common.check_error_table({}))  # reads only
CHANNEL = "tiktok"
MAX_IDS = 1000


# --- authentication -------------------------------------------------------------------

# `token` header or `Authorization: Bearer` equal to MSGSTATUS_TIKTOK_TOKEN.
AUTH = auth.SharedToken(NAME, SECRET, "TikTok")
enabled, verify, calculate_signature, sign = AUTH.exports()


# --- parsing ----------------------------------------------------------------------------


def _content(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    raw = obj.get("content")
    if isinstance(raw, str) and raw.strip()[:1] == "{":
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return {}
    return common.mapping(raw)


def _message_ids(content: Mapping[str, Any], obj: Mapping[str, Any]) -> list[Any]:
    for source in (content, obj):
        many = source.get("message_ids")
        if isinstance(many, list):
            return many[:MAX_IDS]
        one = source.get("message_id")
        if one is not None:
            return [one]
    return []


def _one(result: ParseResult, item: Any, request: WebhookRequest) -> None:
    obj = common.mapping(item)
    if not obj:
        result.dead.append(DeadItem("event is not a JSON object", item))
        return
    word = common.text(obj.get("event"), max_len=64) or common.text(obj.get("type"), max_len=64)
    if word is None:
        result.dead.append(DeadItem("event without a name", item))
        return
    status = STATUSES.resolve(word, result, item, f"unknown tiktok event {word!r}")
    if status is None:
        return
    content = _content(obj)
    ids = _message_ids(content, obj)
    if not ids:
        result.dead.append(DeadItem("read event names no message (conversation-wide read)", item))
        return
    account = common.text(obj.get("business_id")) or common.text(obj.get("client_key"))
    at = common.event_time(content.get("timestamp")) or common.event_time(obj.get("create_time"))
    for raw in ids:
        message_id = common.text(raw, max_len=256)
        if message_id is None:
            result.dead.append(DeadItem("message id is not a string", item))
            continue
        result.events.append(
            CanonicalEvent(
                provider=NAME,
                provider_message_id=message_id,
                status=status,
                provider_status=word,
                channel=CHANNEL,
                observed_at=request.received_at,
                occurred_at=at,
                account=account,
                polled=request.polled,
            )
        )


# An event or an array of events; FramingError when no JSON object/array.
parse = common.object_or_array(_one)
