"""Tracksend (SMS and RCS) delivery reports.

Tracksend's status words are public (seeds/002); its push format is not, so the shape is
our documented assumption (PROVIDERS.md "Tracksend"):
`{"message_id", "channel": "sms"|"rcs", "status", "timestamp", "action"?}`, one object or
an array of them. A reply arrives as `status: "REPLY"` and/or
`action: {"type": "REPLY", "description"}` and becomes the engagement `replied`.
Tracksend signs nothing: header `token` or `Authorization: Bearer` must equal
MSGSTATUS_TRACKSEND_TOKEN.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from processors.model import CanonicalEvent, ErrorInfo, is_failure
from processors.providers import auth, common
from processors.providers.base import (
    DeadItem,
    ParseResult,
    WebhookRequest,
)
from processors.providers.coverage import DR, DRR, TOKEN, Coverage

NAME = "tracksend"
CONTENT_TYPES: tuple[str, ...] = ("application/json",)
FRAMING = "json"
SIGNATURE_HEADERS: tuple[str, ...] = ()  # the credential is the token itself: never kept
# Channels, signature and receipts as `msgstatus providers` and the README show them.
COVERAGE = Coverage(
    channels=("sms", "rcs"),
    signature=TOKEN,
    receipts={"sms": DR, "rcs": DRR},
)
SECRET = "TRACKSEND_TOKEN"

# Every word of Tracksend's SMS and RCS tables (seeds/002), PROVIDERS.md's mapping.
STATUS_MAP: dict[str, str] = {
    "pending": "queued",
    "queued": "queued",
    "accepted": "sent",
    "sent": "sent",
    "partiallysent": "sent",  # only some parts went out: still sent
    "delivered": "delivered",
    "partialdelivered": "delivered",  # only some parts arrived: still delivered
    "read": "read",  # RCS only
    "failed": "failed",
    "failedtoqueue": "failed",
    "failedtosend": "failed",
    "internalerror": "failed",
    "invalidnumber": "failed",
    "rejected": "rejected",
    "dnd": "rejected",
    "duplicate": "rejected",
    "notdelivered": "undelivered",
    "undelivered": "undelivered",
    "expired": "expired",
    "reply": "replied",  # engagement: the recipient answered
}
IGNORED_STATUSES: frozenset[str] = frozenset()  # none documented
STATUSES = common.StatusTable(STATUS_MAP, IGNORED_STATUSES)

# Tracksend has no error codes: the failure word itself is the code.
ERROR_CODES: dict[str, tuple[str, str]] = dict(
    common.check_error_table(
        {
            "DND": ("opted_out", "Recipient has Do Not Disturb active"),
            "INVALIDNUMBER": ("invalid_number", "Recipient's phone number is invalid"),
            "INTERNALERROR": ("provider_error", "Internal error at Tracksend"),
            "EXPIRED": ("expired", "Message expired before delivery"),
            "FAILEDTOQUEUE": ("provider_error", "Message could not be queued"),
            "DUPLICATE": ("unknown", "Message already sent to this recipient"),
        }
    )
)
CHANNELS: dict[str, str] = {"sms": "sms", "rcs": "rcs"}
REPLY = "reply"


# --- authentication -------------------------------------------------------------------

# `token` header or `Authorization: Bearer` equal to MSGSTATUS_TRACKSEND_TOKEN.
AUTH = auth.SharedToken(NAME, SECRET, "Tracksend")
enabled, verify, calculate_signature, sign = AUTH.exports()


# --- parsing ----------------------------------------------------------------------------


def _error(word: str, item: Mapping[str, Any]) -> ErrorInfo:
    description = common.text(item.get("description")) or common.text(item.get("reason"))
    return common.error_info(word.upper(), ERROR_CODES, description)


def _one(result: ParseResult, item: Any, request: WebhookRequest) -> None:
    obj = common.mapping(item)
    if not obj:
        result.dead.append(DeadItem("item is not a JSON object", item))
        return
    message_id = common.text(obj.get("message_id"), max_len=256) or common.text(
        obj.get("messageId"), max_len=256
    )
    if message_id is None:
        result.dead.append(DeadItem("missing message_id", item))
        return
    action = common.mapping(obj.get("action"))
    action_type = common.text(action.get("type"), max_len=64)
    replied = action_type is not None and action_type.lower() == REPLY
    word = common.text(obj.get("status"), max_len=64)
    if word is None and not replied:
        result.dead.append(DeadItem("missing status", item))
        return
    channel = CHANNELS.get((common.text(obj.get("channel"), max_len=16) or "sms").lower(), "sms")
    at = common.event_time(obj.get("timestamp"))

    def event(status: str, provider_word: str, error: ErrorInfo | None = None) -> None:
        result.events.append(
            CanonicalEvent(
                provider=NAME,
                provider_message_id=message_id,
                status=status,
                provider_status=provider_word,
                channel=channel,
                observed_at=request.received_at,
                occurred_at=at,
                error=error,
                polled=request.polled,
            )
        )

    if word is not None and word.lower() != REPLY:
        status = STATUSES.lookup(word)
        if status is not None:
            event(status, word, _error(word, obj) if is_failure(status) else None)
        elif STATUSES.is_ignored(word):
            result.ignored += 1
        else:
            result.dead.append(DeadItem(f"unknown tracksend status {word!r}", item))
    if word is not None and word.lower() == REPLY:
        event("replied", word)
    elif replied:
        event("replied", action_type or "REPLY")


# One report or an array of them; FramingError when no JSON object/array.
parse = common.object_or_array(_one)
