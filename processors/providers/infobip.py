"""Infobip delivery reports (SMS; other channels use the same `results[]` shape).

`{"results": [{"bulkId", "messageId", "to", "sentAt", "doneAt", "channel"?, "status":
{"groupId", "groupName", "id", "name", "description"}, "error": {"groupId", "groupName",
"id", "name", "description", "permanent"}}]}` (Infobip "Receive outbound SMS message
report"); each result is its own event, keyed by `messageId`.

Status by `status.groupName`, except the statuses whose group claims more than Infobip
knows (Infobip "Message status codes",
https://www.infobip.com/docs/developer-resources/api-fundamentals/message-status-codes),
mapped by `status.name` instead:
- DELIVERED_TO_OPERATOR (id 2, group DELIVERED): intermediate, the operator has it, the
  handset may not: `sent`;
- EXPIRED_DLR_UNKNOWN (id 29, group EXPIRED): the message went out, but the operator's
  receipt never came or could not be read, so the outcome is unknown: `sent` (not
  `expired`), and our own `delivery_unknown` follows when the deadline passes;
- UNDELIVERABLE_NOT_SENT (id 31): never left Infobip: `failed`;
- SIGNALS_BLOCKED (id 87, listed under EXPIRED and REJECTED): an anti-fraud block:
  `rejected` (carrier_filtered).
Error category, first match wins: `error.id` (GSM MAP codes
for handset/user errors, shared with smpp.py), then `status.name` (REJECTED_DND, ...), then
`error.groupName`. `error.id` 0 (`NO_ERROR`, group OK) is no error.

Infobip authenticates webhooks with the HTTP Basic credentials of the subscription's
notification profile: MSGSTATUS_INFOBIP_USER and MSGSTATUS_INFOBIP_PASSWORD.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from processors.model import CanonicalEvent, ErrorInfo, is_failure
from processors.providers import auth, common
from processors.providers.base import (
    DeadItem,
    FramingError,
    ParseResult,
    WebhookRequest,
)
from processors.providers.coverage import BASIC, DR, DRR, Coverage
from processors.providers.smpp import GSM_MAP_ERRORS

NAME = "infobip"
CONTENT_TYPES: tuple[str, ...] = ("application/json",)
FRAMING = "json"
SIGNATURE_HEADERS: tuple[str, ...] = ()  # Basic credentials are secrets: never kept
# Channels, signature and receipts as `msgstatus providers` and the README show them.
COVERAGE = Coverage(
    channels=("sms", "mms", "whatsapp", "viber", "rcs", "messenger", "line"),
    signature=BASIC,
    receipts={"sms": DR, "mms": DR, "whatsapp": DRR, "viber": DR, "rcs": DRR, "messenger": DRR},
    extra_statuses=("failed",),  # UNDELIVERABLE_NOT_SENT: never left Infobip
)
USER = "INFOBIP_USER"
PASSWORD = "INFOBIP_PASSWORD"

# status.groupName -> canonical (PROVIDERS.md).
STATUS_MAP: dict[str, str] = {
    "pending": "sent",  # PENDING_WAITING_DELIVERY, PENDING_ENROUTE, ...: handed to the network
    "delivered": "delivered",
    "undeliverable": "undelivered",
    "expired": "expired",
    "rejected": "rejected",
}
IGNORED_STATUSES: frozenset[str] = frozenset()  # none documented
STATUSES = common.StatusTable(STATUS_MAP, IGNORED_STATUSES)
# status.name -> canonical, where the group would overstate the outcome (docstring).
STATUS_NAMES: dict[str, str] = {
    "DELIVERED_TO_OPERATOR": "sent",
    "EXPIRED_DLR_UNKNOWN": "sent",
    "UNDELIVERABLE_NOT_SENT": "failed",
    "SIGNALS_BLOCKED": "rejected",
}
common.StatusTable({name.lower(): status for name, status in STATUS_NAMES.items()})

# error.id -> category: the GSM MAP handset/user error ids.
ERROR_CODES: dict[str, tuple[str, str]] = dict(common.check_error_table(dict(GSM_MAP_ERRORS)))
# status.name -> category, for rejections Infobip explains in the status, not the error.
STATUS_NAME_CATEGORIES: dict[str, tuple[str, str]] = dict(
    common.check_error_table(
        {
            "REJECTED_DND": ("opted_out", "Recipient is on a Do Not Disturb list"),
            "REJECTED_NOT_ENOUGH_CREDITS": ("account_problem", "Not enough credits"),
            "REJECTED_SENDER": ("account_problem", "Sender ID not allowed"),
            "REJECTED_SOURCE": ("account_problem", "Source address not allowed"),
            "REJECTED_DESTINATION": ("invalid_number", "Destination not allowed"),
            "REJECTED_INVALID_DESTINATION": ("invalid_number", "Invalid destination address"),
            "REJECTED_PREFIX_MISSING": ("invalid_number", "Number prefix missing"),
            "REJECTED_DESTINATION_NOT_REGISTERED": ("invalid_number", "Destination not registered"),
            "REJECTED_NETWORK": ("unreachable", "Network not covered"),
            "REJECTED_ROUTE_NOT_AVAILABLE": ("unreachable", "No route available"),
            "REJECTED_FLOODING_FILTER": ("rate_limited", "Flooding filter"),
            "REJECTED_SYSTEM_ERROR": ("provider_error", "Infobip system error"),
            "REJECTED_PREPAID_PACKAGE_EXPIRED": ("account_problem", "Prepaid package expired"),
            "REJECTED_MESSAGE_TOO_LONG": ("content_rejected", "Message too long"),
            "UNDELIVERABLE_REJECTED_OPERATOR": ("carrier_filtered", "Operator rejected it"),
            "EXPIRED_EXPIRED": ("expired", "Validity period expired"),
            "SIGNALS_BLOCKED": ("carrier_filtered", "Blocked by an anti-fraud mechanism"),
            "REJECTED_DESTINATION_BLOCKLISTED": ("blocked", "Destination is blocklisted"),
            "REJECTED_DUPLICATE_MESSAGE_ID": ("account_problem", "Duplicate message ID"),
            "REJECTED_INVALID_UDH": ("content_rejected", "Invalid user data header"),
            "MISSING_TO": ("invalid_number", "No recipient given"),
            "UNDELIVERABLE_REJECTED_PLATFORM": ("provider_error", "Rejected by the platform"),
        }
    )
)
# error.groupName -> category when the id says nothing more.
ERROR_GROUPS: dict[str, tuple[str, str]] = dict(
    common.check_error_table(
        {
            "HANDSET_ERRORS": ("unreachable", "Handset error"),
            "USER_ERRORS": ("blocked", "Subscriber error"),
            "OPERATOR_ERRORS": ("provider_error", "Operator error"),
        }
    )
)
STATUS_CATEGORY: dict[str, str] = {"expired": "expired"}
CHANNELS: dict[str, str] = {
    "sms": "sms",
    "mms": "mms",
    "whatsapp": "whatsapp",
    "viber": "viber",
    "rcs": "rcs",
    "messenger": "messenger",
    "line": "line",
}


# --- authentication -------------------------------------------------------------------

# HTTP Basic credentials equal to MSGSTATUS_INFOBIP_USER / _PASSWORD.
AUTH = auth.BasicAuth(NAME, USER, PASSWORD, "Infobip")
enabled, verify, calculate_signature, sign = AUTH.exports()


# --- parsing ----------------------------------------------------------------------------


def error_of(
    status_obj: Mapping[str, Any], error_obj: Mapping[str, Any], status: str
) -> ErrorInfo | None:
    error_id = common.text(error_obj.get("id"), max_len=16)
    group = (common.text(error_obj.get("groupName"), max_len=64) or "").upper()
    name = (common.text(status_obj.get("name"), max_len=128) or "").upper()
    description = common.text(error_obj.get("description")) or common.text(
        status_obj.get("description")
    )
    has_error = error_id not in (None, "0") and group != "OK"
    if has_error and error_id in ERROR_CODES:
        return common.error_info(error_id, ERROR_CODES, description)
    if name in STATUS_NAME_CATEGORIES and (has_error or is_failure(status)):
        category, generic = STATUS_NAME_CATEGORIES[name]
        code = error_id if has_error else name
        return ErrorInfo(code=code, category=category, description=description or generic)
    if has_error:
        category, generic = ERROR_GROUPS.get(group, ("unknown", ""))
        described = description or generic or None
        return ErrorInfo(code=error_id, category=category, description=described)
    if is_failure(status):
        category = STATUS_CATEGORY.get(status, "unknown")
        return ErrorInfo(code=name or None, category=category, description=description)
    return None


def _one(result: ParseResult, item: Any, request: WebhookRequest) -> None:
    obj = common.mapping(item)
    if not obj:
        result.dead.append(DeadItem("result is not a JSON object", item))
        return
    message_id = common.text(obj.get("messageId"), max_len=256)
    if message_id is None:
        result.dead.append(DeadItem("result without messageId", item))
        return
    status_obj = common.mapping(obj.get("status"))
    word = common.text(status_obj.get("groupName"), max_len=64)
    if word is None:
        result.dead.append(DeadItem("result without status.groupName", item))
        return
    name = (common.text(status_obj.get("name"), max_len=128) or "").upper()
    status = STATUS_NAMES.get(name) or STATUSES.lookup(word)
    if status is None:
        if STATUSES.is_ignored(word):
            result.ignored += 1
        else:
            result.dead.append(DeadItem(f"unknown infobip status group {word!r}", item))
        return
    named = (common.text(obj.get("channel"), max_len=32) or "sms").lower()
    at = common.event_time(obj.get("doneAt")) or common.event_time(obj.get("sentAt"))
    result.events.append(
        CanonicalEvent(
            provider=NAME,
            provider_message_id=message_id,
            status=status,
            provider_status=common.text(status_obj.get("name"), max_len=128) or word,
            channel=CHANNELS.get(named, "sms"),
            observed_at=request.received_at,
            occurred_at=at,
            account=None,
            error=error_of(status_obj, common.mapping(obj.get("error")), status),
            polled=request.polled,
        )
    )


@common.guarded
def parse(request: WebhookRequest) -> ParseResult:
    """`{"results": [...]}` -> one event per result; FramingError otherwise."""
    data = common.load_json(request.body)
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise FramingError("body must be an Infobip report object with a `results` list")
    result = ParseResult()
    common.each(result, data["results"], lambda item: _one(result, item, request))
    return result
