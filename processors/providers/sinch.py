"""Sinch SMS REST API delivery report callbacks.

Two report types (Sinch SMS API "Delivery reports"):
- per recipient, `{"type": "recipient_delivery_report_sms" (or _mms), "batch_id",
  "recipient", "code", "status", "at", "operator_status_at"?, "client_reference"?}`;
- per batch, `{"type": "delivery_report_sms" (or _mms), "batch_id", "statuses": [{"code",
  "status", "count", "recipients"?}], "total_message_count"}`: each status entry is one
  event.

The message is the batch: `message_key` = `sinch:<batch_id>`, the id Sinch's send call
returns (a helpdesk sends one recipient per batch). Reports of a multi-recipient batch
therefore meet on one key, where the transition rules keep the first final outcome.

Sinch authenticates callbacks with the HTTP Basic credentials provisioned on the callback
URL: MSGSTATUS_SINCH_USER and MSGSTATUS_SINCH_PASSWORD.
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
from processors.providers.coverage import BASIC, DR, Coverage

NAME = "sinch"
CONTENT_TYPES: tuple[str, ...] = ("application/json",)
FRAMING = "json"
SIGNATURE_HEADERS: tuple[str, ...] = ()  # Basic credentials are secrets: never kept
# Channels, signature and receipts as `msgstatus providers` and the README show them.
COVERAGE = Coverage(channels=("sms",), signature=BASIC, receipts={"sms": DR})
USER = "SINCH_USER"
PASSWORD = "SINCH_PASSWORD"

STATUS_MAP: dict[str, str] = {
    "queued": "queued",
    "dispatched": "sent",
    "delivered": "delivered",
    "failed": "failed",
    "aborted": "failed",
    "expired": "expired",
    "rejected": "rejected",
    "cancelled": "canceled",
    "deleted": "canceled",  # deleted by a remote SMSC (PROVIDERS.md: canceled)
}
IGNORED_STATUSES: frozenset[str] = frozenset({"unknown"})  # no information: no change
STATUSES = common.StatusTable(STATUS_MAP, IGNORED_STATUSES)
RECIPIENT_TYPES: dict[str, str] = {
    "recipient_delivery_report_sms": "sms",
    "recipient_delivery_report_mms": "mms",
}
BATCH_TYPES: dict[str, str] = {"delivery_report_sms": "sms", "delivery_report_mms": "mms"}

# code -> (category, Sinch's meaning). 0 = delivered; 400/401 are progress, not errors.
ERROR_CODES: dict[str, tuple[str, str]] = dict(
    common.check_error_table(
        {
            "402": ("unreachable", "Message unroutable"),
            "403": ("provider_error", "Internal error"),
            "404": ("unreachable", "Temporary delivery failure"),
            "405": ("content_rejected", "Unmatched parameter"),
            "406": ("expired", "Internal expiry"),
            "407": ("unknown", "Cancelled by user before reaching the SMSC"),
            "408": ("provider_error", "Internal reject"),
            "410": ("account_problem", "Unmatched default originator"),
            "411": ("content_rejected", "Exceeded parts limit"),
            "412": ("account_problem", "Unprovisioned region"),
            "413": ("account_problem", "Account blocked"),
            "414": ("content_rejected", "Bad media (MMS)"),
            "415": ("carrier_filtered", "Rejected by the MMS gateway or network (MMS)"),
            "416": ("content_rejected", "Not supported by the MMSC (MMS)"),
            "417": ("unreachable", "Destination unreachable (MMS)"),
            "418": ("content_rejected", "Content not recognized by the handset (MMS)"),
        }
    )
)
_NOT_ERRORS = frozenset({"0", "400", "401"})
# A failure whose code says nothing more: the status word alone says this much.
STATUS_CATEGORY: dict[str, str] = {"expired": "expired"}


# --- authentication -------------------------------------------------------------------

# HTTP Basic credentials equal to MSGSTATUS_SINCH_USER / _PASSWORD.
AUTH = auth.BasicAuth(NAME, USER, PASSWORD, "Sinch")
enabled, verify, calculate_signature, sign = AUTH.exports()


# --- parsing ----------------------------------------------------------------------------


def error_of(code: Any, status: str) -> ErrorInfo | None:
    key = common.text(code, max_len=16)
    if key is None or key in _NOT_ERRORS:
        if is_failure(status):
            return ErrorInfo(code=None, category=STATUS_CATEGORY.get(status, "unknown"))
        return None
    return common.error_info(key, ERROR_CODES)


def _event(
    result: ParseResult,
    request: WebhookRequest,
    report: Mapping[str, Any],
    entry: Mapping[str, Any],
    channel: str,
) -> None:
    batch_id = common.text(report.get("batch_id"), max_len=256)
    if batch_id is None:
        result.dead.append(DeadItem("delivery report without batch_id", dict(report)))
        return
    word = common.text(entry.get("status"), max_len=64)
    if word is None:
        result.dead.append(DeadItem("delivery report without status", dict(entry)))
        return
    status = STATUSES.resolve(word, result, dict(entry), f"unknown sinch status {word!r}")
    if status is None:
        return
    at = common.event_time(report.get("operator_status_at")) or common.event_time(report.get("at"))
    result.events.append(
        CanonicalEvent(
            provider=NAME,
            provider_message_id=batch_id,
            status=status,
            provider_status=word,
            channel=channel,
            observed_at=request.received_at,
            occurred_at=at,
            account=None,
            error=error_of(entry.get("code"), status),
            polled=request.polled,
        )
    )


def _one(result: ParseResult, item: Any, request: WebhookRequest) -> None:
    report = common.mapping(item)
    if not report:
        result.dead.append(DeadItem("delivery report is not a JSON object", item))
        return
    kind = common.text(report.get("type"), max_len=64) or ""
    if kind in RECIPIENT_TYPES:
        _event(result, request, report, report, RECIPIENT_TYPES[kind])
    elif kind in BATCH_TYPES:
        statuses = report.get("statuses")
        if not isinstance(statuses, list):
            result.dead.append(DeadItem("batch delivery report without a statuses list", item))
            return
        channel = BATCH_TYPES[kind]
        common.each(
            result,
            statuses,
            lambda entry: _event(result, request, report, common.mapping(entry), channel),
        )
    elif kind.startswith("mo_"):
        result.ignored += 1  # inbound messages share the callback URL
    else:
        result.dead.append(DeadItem(f"unknown sinch callback type {kind[:64]!r}", item))


# A report (or an array of them); FramingError when no JSON object/array.
parse = common.object_or_array(_one, "body must be a Sinch delivery report object")
