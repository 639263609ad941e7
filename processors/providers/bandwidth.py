"""Bandwidth Messaging V2 callbacks (SMS, MMS).

Every callback is a JSON array of `{type, time, description, to, errorCode?, message:
{id, owner, direction, applicationId, ...}}` (dev.bandwidth.com, "Webhooks"); each item
is split into its own event. Bandwidth authenticates callbacks with the HTTP Basic
credentials configured on the messaging application: MSGSTATUS_BANDWIDTH_USER and
MSGSTATUS_BANDWIDTH_PASSWORD.

errorCode (4 digits) -> category: the documented codes are listed; any other code falls
back on its range (Bandwidth's schema: 4xxx client errors, 47xx carrier-rejected, 5xxx
service failures, 9xxx ambiguous).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from processors.model import CanonicalEvent, ErrorInfo
from processors.providers import auth, common
from processors.providers.base import (
    DeadItem,
    ParseResult,
    WebhookRequest,
)
from processors.providers.coverage import BASIC, DR, Coverage

NAME = "bandwidth"
CONTENT_TYPES: tuple[str, ...] = ("application/json",)
FRAMING = "json"
SIGNATURE_HEADERS: tuple[str, ...] = ()  # Basic credentials are secrets: never kept
# Channels, signature and receipts as `msgstatus providers` and the README show them.
COVERAGE = Coverage(channels=("sms", "mms"), signature=BASIC, receipts={"sms": DR, "mms": DR})
USER = "BANDWIDTH_USER"
PASSWORD = "BANDWIDTH_PASSWORD"

STATUS_MAP: dict[str, str] = {
    "message-sending": "sending",  # MMS: handed to the carrier, no receipt yet
    "message-delivered": "delivered",
    "message-failed": "failed",
}
# Inbound messages share the callback URL; they are not statuses of our messages.
IGNORED_STATUSES: frozenset[str] = frozenset({"message-received"})
STATUSES = common.StatusTable(STATUS_MAP, IGNORED_STATUSES)

# errorCode -> (category, Bandwidth's name) from Bandwidth's messaging error table.
ERROR_CODES: dict[str, tuple[str, str]] = dict(
    common.check_error_table(
        {
            "4001": ("blocked", "service-not-allowed"),
            "4301": ("content_rejected", "malformed-invalid-encoding"),
            "4302": ("account_problem", "malformed-invalid-from-number"),
            "4303": ("invalid_number", "malformed-invalid-to-number"),
            "4350": ("invalid_number", "malformed-for-destination"),
            "4360": ("expired", "message-not-sent-expiration-date-passed"),
            "4401": ("provider_error", "rejected-routing-error"),
            "4403": ("account_problem", "rejected-forbidden-from-number"),
            "4404": ("invalid_number", "rejected-forbidden-to-number"),
            "4405": ("account_problem", "rejected-unallocated-from-number"),
            "4406": ("invalid_number", "rejected-unallocated-to-number"),
            "4407": ("account_problem", "rejected-account-not-defined-from-number"),
            "4408": ("invalid_number", "rejected-account-not-defined-to-number"),
            "4409": ("invalid_number", "rejected-invalid-from-profile"),
            "4410": ("content_rejected", "media-unavailable"),
            "4411": ("content_rejected", "rejected-message-size-limit-exceeded"),
            "4412": ("content_rejected", "media-content-invalid"),
            "4420": ("unreachable", "rejected-carrier-does-not-exist"),
            "4421": ("account_problem", "rejected-forbidden-no-destination"),
            "4431": ("account_problem", "rejected-forbidden-shortcode"),
            "4432": ("account_problem", "rejected-forbidden-country"),
            "4433": ("account_problem", "rejected-forbidden-tollfree"),
            "4434": ("invalid_number", "rejected-forbidden-tollfree-for-recipient"),
            "4435": ("content_rejected", "forbidden-too-many-recipients"),
            "4451": ("account_problem", "rejected-wrong-user-id"),
            "4452": ("account_problem", "rejected-wrong-application-id"),
            "4470": ("carrier_filtered", "rejected-spam-detected"),
            "4481": ("blocked", "rejected-from-number-in-blacklist"),
            "4482": ("blocked", "rejected-to-number-in-blacklist"),
            "4492": ("blocked", "reject-emergency"),
            "4493": ("account_problem", "rejected-unauthorized"),
            "4700": ("invalid_number", "invalid-service-type"),
            "4701": ("unreachable", "destination-service-unavailable"),
            "4702": ("unreachable", "destination-subscriber-unavailable"),
            "4711": ("content_rejected", "rejected-message-size-limit-exceeded"),
            "4712": ("content_rejected", "media-content-invalid"),
            "4720": ("invalid_number", "invalid-destination-address"),
            "4721": ("invalid_number", "destination-tn-deactivated"),
            "4730": ("unreachable", "no-route-to-destination-carrier"),
            "4740": ("account_problem", "invalid-source-address"),
            "4750": ("carrier_filtered", "destination-rejected-message"),
            "4751": ("content_rejected", "destination-rejected-message-size-invalid"),
            "4752": ("content_rejected", "destination-rejected-malformed"),
            "4770": ("carrier_filtered", "destination-spam-detected"),
            "4771": ("carrier_filtered", "rejected-shortened-url"),
            "4772": ("blocked", "rejected-tn-blocked"),
            "4773": ("account_problem", "inactive-campaign"),
            "4774": ("account_problem", "provisioning-issue"),
            "4775": ("opted_out", "destination-rejected-due-to-user-opt-out"),
            "4780": ("rate_limited", "volume-violation-tmo"),
            "4781": ("rate_limited", "volume-violation-att"),
            "4785": ("rate_limited", "volumetric-violation"),
            "4790": ("blocked", "destination-rejected-sc-not-allowed"),
            "4791": ("account_problem", "destination-rejected-campaign-not-allowed"),
            "4792": ("account_problem", "destination-rejected-sc-not-provisioned"),
            "4793": ("account_problem", "destination-rejected-sc-expired"),
            "4795": ("account_problem", "tfn-not-verified"),
            "5100": ("provider_error", "temporary-app-error"),
            "5101": ("provider_error", "temporary-app-shutdown"),
            "5106": ("unreachable", "impossible-to-route"),
            "5111": ("provider_error", "temporary-app-connection-closed"),
            "5201": ("expired", "temporary-rout-error-retries-exceeded"),
            "5211": ("provider_error", "temporary-app-error-app-busy"),
            "5220": ("provider_error", "temporary-store-error"),
            "5231": ("provider_error", "discarded-concatenation-timeout"),
            "5500": ("provider_error", "message-send-failed"),
            "5501": ("unreachable", "message-send-failed (no destination available)"),
            "5999": ("provider_error", "unknown-error"),
            "5600": ("rate_limited", "destination-carrier-queue-full"),
            "5610": ("provider_error", "submit_sm-or-submit_multi-failed"),
            "5620": ("provider_error", "destination-app-error"),
            "5630": ("provider_error", "message-not-acknowledged"),
            "5650": ("unreachable", "destination-failed"),
            "9902": ("unknown", "delivery-receipt-expired"),
            "9999": ("unknown", "unknown-error"),
        }
    )
)
# Unlisted codes: by leading digits (longest prefix first).
ERROR_RANGES: dict[str, tuple[str, str]] = dict(
    common.check_error_table(
        {
            "47": ("carrier_filtered", "carrier rejected the message"),
            "4": ("content_rejected", "Bandwidth rejected the request"),
            "56": ("provider_error", "carrier reported a service failure"),
            "5": ("provider_error", "Bandwidth service failure"),
            "9": ("unknown", "downstream failure, cause unclear"),
        }
    )
)
MMS_TYPES = frozenset({"message-sending"})  # Bandwidth sends `message-sending` for MMS only


# --- authentication -------------------------------------------------------------------

# HTTP Basic credentials equal to MSGSTATUS_BANDWIDTH_USER / _PASSWORD.
AUTH = auth.BasicAuth(NAME, USER, PASSWORD, "Bandwidth")
enabled, verify, calculate_signature, sign = AUTH.exports()


# --- parsing ----------------------------------------------------------------------------


def error_of(code: Any, description: str | None) -> ErrorInfo:
    key = common.text(code, max_len=16)
    if key is None or key == "0":
        return ErrorInfo(code=None, category="unknown", description=description)
    if key in ERROR_CODES:
        return common.error_info(key, ERROR_CODES, description)
    for prefix in sorted(ERROR_RANGES, key=len, reverse=True):
        if key.startswith(prefix) and len(key) == 4 and key.isascii() and key.isdigit():
            category, generic = ERROR_RANGES[prefix]
            return ErrorInfo(code=key, category=category, description=description or generic)
    return ErrorInfo(code=key, category="unknown", description=description)


def _channel(message: Mapping[str, Any], word: str) -> str:
    if word.lower() in MMS_TYPES or common.items(message.get("media")):
        return "mms"
    return "sms"


def _one(result: ParseResult, item: Any, request: WebhookRequest) -> None:
    obj = common.mapping(item)
    if not obj:
        result.dead.append(DeadItem("callback is not a JSON object", item))
        return
    word = common.text(obj.get("type"), max_len=64)
    if word is None:
        result.dead.append(DeadItem("callback without a type", item))
        return
    status = STATUSES.resolve(word, result, item, f"unknown bandwidth callback type {word!r}")
    if status is None:
        return
    message = common.mapping(obj.get("message"))
    message_id = common.text(message.get("id"), max_len=256)
    if message_id is None:
        result.dead.append(DeadItem("callback without message.id", item))
        return
    description = common.text(obj.get("description"))
    result.events.append(
        CanonicalEvent(
            provider=NAME,
            provider_message_id=message_id,
            status=status,
            provider_status=word,
            channel=_channel(message, word),
            observed_at=request.received_at,
            occurred_at=common.event_time(obj.get("time")),
            account=common.text(message.get("applicationId")),
            error=error_of(obj.get("errorCode"), description) if status == "failed" else None,
            polled=request.polled,
        )
    )


# The callback array (a single object is accepted too); FramingError otherwise.
parse = common.object_or_array(_one, "body must be a JSON array of Bandwidth callbacks")
