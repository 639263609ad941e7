"""Gupshup WhatsApp message events, in Gupshup's v2 format and the v3 (Meta-shaped) one.

Sources (PROVIDERS-NEXT.md "Gupshup"): https://docs.gupshup.io/docs/message-events (v2,
the documented envelope our fixtures follow),
https://partner-docs.gupshup.io/docs/events and
https://partner-docs.gupshup.io/docs/passthrough-v3-incoming-events (v3),
https://partner-docs.gupshup.io/docs/whatsapp-messages,
https://docs.gupshup.io/docs/error-and-status-messages (error codes).

v2: `{"app", "timestamp" (ms), "version": 2, "type": "message-event", "payload": {"id",
"gsId", "type": <word>, "destination", "payload": {...}}}`. For `enqueued` and `failed`,
`payload.id` is Gupshup's message id (what the send API returned: our key); for `sent`,
`delivered` and `read` it is the WhatsApp id and Gupshup's is in `gsId`. Events more than a
week after sending carry no `gsId` (doc gap): they cannot be matched to the sent message by
this parser alone and are dead-lettered with that reason (redrivable once an index from
WhatsApp id to Gupshup id exists). Other types on the same URL (`message`, `user-event`,
`billing-event`) are not statuses.

v3: Meta's WhatsApp shape with `gs_app_id` and, per status, `gs_id` (our key); failed
statuses carry `code` and `reason` (also read from Meta's `errors[]`).

A failure with a Gupshup code (below 100000; table below) never reached WhatsApp: `failed`.
One with a WhatsApp (Meta) code was refused on the way to the user: `undelivered`, category
as for Meta. Account: `app` (v2) or `gs_app_id` (v3).

Gupshup signs nothing: the callback URL carries the shared token,
`?token=<MSGSTATUS_GUPSHUP_TOKEN>` (or a `token` header / `Authorization: Bearer`); the
token is never stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from processors.model import CanonicalEvent, ErrorInfo, is_failure
from processors.providers import auth, common, meta, query_string
from processors.providers.base import DeadItem, FramingError, ParseResult, WebhookRequest
from processors.providers.coverage import DRR, QUERY_TOKEN, Coverage

NAME = "gupshup"
CONTENT_TYPES: tuple[str, ...] = ("application/json",)
FRAMING = "json"
SIGNATURE_HEADERS: tuple[str, ...] = ()  # a shared token: never kept
# Channels, signature and receipts as `msgstatus providers` and the README show them.
COVERAGE = Coverage(
    channels=("whatsapp",),
    signature=QUERY_TOKEN,
    receipts={"whatsapp": DRR},
    extra_statuses=("undelivered",),  # failures with a WhatsApp error code
)
QUERY_CREDENTIALS: tuple[str, ...] = (query_string.TOKEN_PARAM,)
SECRET = "GUPSHUP_TOKEN"

STATUS_MAP: dict[str, str] = {
    "enqueued": "queued",  # accepted by Gupshup, not yet sent
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "failed": "failed",  # with a WhatsApp error code: undelivered (see error_of)
}
# `deleted`: a message the customer sent was deleted by the customer (inbound).
IGNORED_STATUSES: frozenset[str] = frozenset({"deleted"})
STATUSES = common.StatusTable(STATUS_MAP, IGNORED_STATUSES)
# Event types of the same webhook that are not message statuses.
OTHER_TYPES: frozenset[str] = frozenset({"message", "user-event", "billing-event"})
# Words whose v2 `payload.id` is Gupshup's own id; the others carry it in `gsId`.
OWN_ID_WORDS: frozenset[str] = frozenset({"enqueued", "failed"})
WHATSAPP_CODES = 100_000  # Gupshup's codes are below; WhatsApp Cloud API codes above

# Gupshup error codes -> (category, meaning).
ERROR_CODES: dict[str, tuple[str, str]] = dict(
    common.check_error_table(
        {
            "1001": ("account_problem", "Last mapped bot details do not match"),
            "1002": ("invalid_number", "Number does not exist on WhatsApp"),
            "1003": ("account_problem", "Wallet balance low"),
            "1004": ("outside_window", "User inactive for session messages"),
            "1005": ("outside_window", "User inactive (template disabled)"),
            "1006": ("opted_out", "User not opted in"),
            "1007": ("outside_window", "User inactive (template not matched)"),
            "1008": ("opted_out", "User not opted in and inactive"),
            "1010": ("content_rejected", "Invalid media URL"),
            "1011": ("content_rejected", "Invalid media size"),
            "1012": ("opted_out", "Number opted out"),
            "4001": ("rate_limited", "Rate limited"),
            "4002": ("provider_error", "Invalid response from WhatsApp"),
            "4003": ("content_rejected", "Template not matched"),
            "4004": ("account_problem", "Feature available on the Cloud API only"),
            "4005": ("content_rejected", "Template paused"),
            "500": ("provider_error", "Internal error"),
        }
    )
)


# The shared token: `?token=` in the callback URL, a `token` header or Bearer.
AUTH = auth.QueryToken(NAME, SECRET)
enabled, verify, sign = AUTH.exports()


# --- parsing ----------------------------------------------------------------------------


def error_of(code: Any, reason: str | None, status: str) -> tuple[str, ErrorInfo | None]:
    """(status, error): a failure with a WhatsApp code is `undelivered`, categorized as
    Meta's; one with a Gupshup code stays `failed`."""
    number = common.to_int(code)
    key = common.text(code, max_len=16)
    if number is not None and number >= WHATSAPP_CODES:
        undelivered = "undelivered" if status == "failed" else status
        return undelivered, common.error_info(str(number), meta.ERROR_CODES, reason)
    if key is not None:
        table = ERROR_CODES if key in ERROR_CODES else meta.ERROR_CODES
        return status, common.error_info(key, table, reason)
    if is_failure(status):
        return status, ErrorInfo(code=None, category="unknown", description=reason)
    return status, None


def _event(
    result: ParseResult,
    request: WebhookRequest,
    key: str,
    word: str,
    at: float | None,
    account: str | None,
    code: Any = None,
    reason: str | None = None,
) -> None:
    status = STATUSES.resolve(word, result, {"id": key}, f"unknown gupshup status {word[:64]!r}")
    if status is None:
        return
    status, error = error_of(code, reason, status)
    result.events.append(
        CanonicalEvent(
            provider=NAME,
            provider_message_id=key,
            status=status,
            provider_status=word,
            channel="whatsapp",
            observed_at=request.received_at,
            occurred_at=at,
            account=account,
            error=error,
            polled=request.polled,
        )
    )


def _v2(result: ParseResult, request: WebhookRequest, doc: Mapping[str, Any]) -> None:
    kind = common.text(doc.get("type"), max_len=64)
    if kind in OTHER_TYPES:
        result.ignored += 1
        return
    if kind != "message-event":
        result.dead.append(DeadItem(f"unknown gupshup event type {kind!r}", dict(doc)))
        return
    outer = common.mapping(doc.get("payload"))
    inner = common.mapping(outer.get("payload"))
    word = (common.text(outer.get("type"), max_len=64) or "").lower()
    if not word:
        result.dead.append(DeadItem("gupshup message-event without type", dict(outer)))
        return
    if STATUSES.is_ignored(word):
        result.ignored += 1
        return
    if STATUSES.lookup(word) is None:
        result.dead.append(DeadItem(f"unknown gupshup status {word[:64]!r}", dict(outer)))
        return
    field = "id" if word in OWN_ID_WORDS else "gsId"
    key = common.text(outer.get(field), max_len=128)
    if key is None:
        reason = (
            "gupshup event without gsId (sent more than a week ago?): its WhatsApp id "
            "cannot be matched to the Gupshup message id"
            if field == "gsId"
            else "gupshup event without id"
        )
        result.dead.append(DeadItem(reason, dict(outer)))
        return
    at = common.event_time(inner.get("ts")) or common.event_time(doc.get("timestamp"))
    account = common.text(doc.get("app"), max_len=128)
    _event(
        result,
        request,
        key,
        word,
        at,
        account,
        code=inner.get("code"),
        reason=common.text(inner.get("reason")),
    )


def _v3(result: ParseResult, request: WebhookRequest, doc: Mapping[str, Any]) -> None:
    account = common.text(doc.get("gs_app_id"), max_len=128)

    def status_item(item: Any) -> None:
        status = common.mapping(item)
        word = (common.text(status.get("status"), max_len=64) or "").lower()
        key = common.text(status.get("gs_id"), max_len=128)
        if not word:
            result.dead.append(DeadItem("gupshup v3 status without status", item))
            return
        if key is None:
            result.dead.append(
                DeadItem("gupshup v3 status without gs_id: not matchable to a message id", item)
            )
            return
        first = common.mapping(next(iter(common.items(status.get("errors"))), None))
        code = status.get("code", first.get("code"))
        reason = common.text(status.get("reason")) or common.text(first.get("title"))
        at = common.event_time(status.get("timestamp"))
        _event(result, request, key, word, at, account, code=code, reason=reason)

    for entry in common.items(doc.get("entry")):
        for change in common.items(common.mapping(entry).get("changes")):
            value = common.mapping(common.mapping(change).get("value"))
            if value.get("messages") and not value.get("statuses"):
                result.ignored += 1  # inbound messages
                continue
            common.each(result, common.items(value.get("statuses")), status_item)


@common.guarded
def parse(request: WebhookRequest) -> ParseResult:
    """A v2 event or a v3 (Meta-shaped) batch; FramingError for anything else."""
    doc = common.load_json(request.body)
    if not isinstance(doc, dict):
        raise FramingError("body must be a Gupshup event object")
    result = ParseResult()
    if doc.get("object") == "whatsapp_business_account" or "entry" in doc:
        _v3(result, request, doc)
    elif "payload" in doc or "type" in doc:
        _v2(result, request, doc)
    else:
        raise FramingError("body is neither a Gupshup v2 event nor a v3 webhook")
    return result
