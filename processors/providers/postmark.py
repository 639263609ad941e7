"""Postmark email webhooks: delivery, bounce, spam complaint, open, click, subscription change.

Sources (PROVIDERS-NEXT.md "Postmark"):
https://postmarkapp.com/developer/webhooks/webhooks-overview,
https://postmarkapp.com/developer/webhooks/delivery-webhook,
https://postmarkapp.com/developer/webhooks/bounce-webhook,
https://postmarkapp.com/developer/webhooks/subscription-change-webhook,
https://postmarkapp.com/developer/api/bounce-api#bounce-types, and the official SDK's
webhook payload models (github.com/ActiveCampaign/postmark.js).

One JSON record per POST, `RecordType` = Delivery, Bounce, SpamComplaint, Open, Click or
SubscriptionChange. Key: `MessageID` (as the send API returned it; a message to several
recipients shares it: doc gap, we key by MessageID). Account: `ServerID` +
`:MessageStream`. Delivery -> delivered (the receiving server accepted it); Open -> read;
Click -> clicked; SpamComplaint -> complained; Bounce by `Type` (table below);
SubscriptionChange -> unsubscribed only when the recipient suppressed sending
(`SuppressSending` true, `Origin` Recipient, `SuppressionReason` ManualSuppression).

Postmark signs nothing: the webhook URL carries HTTP Basic credentials
(`https://user:password@host/webhooks/postmark`), checked against MSGSTATUS_POSTMARK_USER
and MSGSTATUS_POSTMARK_PASSWORD.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from processors.model import CanonicalEvent, ErrorInfo
from processors.providers import auth, common
from processors.providers.base import (
    DeadItem,
    FramingError,
    ParseResult,
    WebhookRequest,
)
from processors.providers.coverage import DRR, Coverage

NAME = "postmark"
CONTENT_TYPES: tuple[str, ...] = ("application/json",)
FRAMING = "json"
SIGNATURE_HEADERS: tuple[str, ...] = ()  # Basic credentials are secrets: never kept
# Channels, signature and receipts as `msgstatus providers` and the README show them.
COVERAGE = Coverage(
    channels=("email",),
    signature="HTTP Basic (credentials in the webhook URL)",
    receipts={"email": DRR},
    extra_statuses=("undelivered", "rejected", "failed", "unsubscribed"),  # bounces
)
USER = "POSTMARK_USER"
PASSWORD = "POSTMARK_PASSWORD"

# RecordType -> canonical (Bounce and SubscriptionChange: see BOUNCES and parse).
STATUS_MAP: dict[str, str] = {
    "delivery": "delivered",
    "open": "read",
    "click": "clicked",
    "spamcomplaint": "complained",
}
RECORD_TYPES: frozenset[str] = frozenset({*STATUS_MAP, "bounce", "subscriptionchange"})

# Bounce `Type` -> (TypeCode, canonical or None for no change, category, meaning).
BOUNCES: dict[str, tuple[int, str | None, str | None, str]] = {
    "HardBounce": (1, "undelivered", "invalid_number", "Unknown user, mailbox not found"),
    "Transient": (2, None, None, "Message delayed"),
    "Unsubscribe": (16, "unsubscribed", None, "Unsubscribe request"),
    "Subscribe": (32, None, None, "Subscribe request"),
    "AutoResponder": (64, None, None, "Automatic reply"),
    "AddressChange": (128, None, None, "Address change notice"),
    "DnsError": (256, None, None, "Temporary DNS error"),
    "SpamNotification": (512, "undelivered", "carrier_filtered", "Blocked as spam or bulk"),
    "OpenRelayTest": (1024, None, None, "Open relay test"),
    "Unknown": (2048, "undelivered", "unknown", "Unable to classify"),
    "SoftBounce": (4096, None, None, "Mailbox full, account disabled, over quota"),
    "VirusNotification": (8192, "undelivered", "content_rejected", "Virus detected"),
    "ChallengeVerification": (16384, None, None, "Challenge-response verification"),
    "BadEmailAddress": (100000, "undelivered", "invalid_number", "Not a valid address"),
    "SpamComplaint": (100001, "complained", None, "Spam complaint"),
    "ManuallyDeactivated": (100002, "rejected", "opted_out", "Address manually deactivated"),
    "Unconfirmed": (100003, None, None, "Unconfirmed sender signature"),
    "Blocked": (100006, "undelivered", "blocked", "Blocked by the receiving ISP"),
    "SMTPApiError": (100007, "failed", "provider_error", "SMTP API error"),
    "InboundError": (100008, None, None, "Inbound processing error"),
    "DMARCPolicy": (100009, "undelivered", "account_problem", "Rejected by DMARC policy"),
    "TemplateRenderingFailed": (100010, "failed", "content_rejected", "Template rendering failed"),
}
BOUNCE_BY_CODE: dict[int, str] = {code: name for name, (code, _, _, _) in BOUNCES.items()}
common.check_error_table({n: (cat, text) for n, (_, _, cat, text) in BOUNCES.items() if cat})
common.StatusTable({n.lower(): s for n, (_, s, _, _) in BOUNCES.items() if s})

TIME_FIELDS: dict[str, str] = {
    "delivery": "DeliveredAt",
    "bounce": "BouncedAt",
    "spamcomplaint": "BouncedAt",
    "open": "ReceivedAt",
    "click": "ReceivedAt",
    "subscriptionchange": "ChangedAt",
}


# --- authentication -------------------------------------------------------------------

# HTTP Basic credentials equal to MSGSTATUS_POSTMARK_USER / _PASSWORD.
AUTH = auth.BasicAuth(NAME, USER, PASSWORD, "Postmark")
enabled, verify, calculate_signature, _ = AUTH.exports()


def sign(body: bytes, user: str, password: str) -> dict[str, str]:
    """Headers a Postmark webhook would carry (tests and the demo sender)."""
    del body
    return {
        "content-type": "application/json",
        "authorization": calculate_signature(user, password),
    }


# --- parsing ----------------------------------------------------------------------------


def _account(record: Mapping[str, Any]) -> str | None:
    server = common.text(record.get("ServerID"), max_len=32)
    stream = common.text(record.get("MessageStream"), max_len=64)
    if server and stream:
        return f"{server}:{stream}"
    return server or stream


def bounce(record: Mapping[str, Any]) -> tuple[str | None, str, ErrorInfo | None]:
    """(canonical or None, the Type word, error) of a Bounce record, by `Type` else
    `TypeCode`; an unknown type is (None, word, None) and the caller dead-letters it."""
    word = common.text(record.get("Type"), max_len=64)
    code = common.to_int(record.get("TypeCode"))
    name = word if word in BOUNCES else BOUNCE_BY_CODE.get(code) if code is not None else None
    if name is None:
        return None, word or str(code), None
    _, status, category, meaning = BOUNCES[name]
    error = None
    if category is not None:
        description = common.text(record.get("Description")) or meaning
        error = ErrorInfo(code=name, category=category, description=description)
    return status, name, error


def _one(result: ParseResult, request: WebhookRequest, record: Mapping[str, Any]) -> None:
    kind = (common.text(record.get("RecordType"), max_len=32) or "").lower()
    if kind not in RECORD_TYPES:
        word = common.text(record.get("RecordType"), max_len=64)
        result.dead.append(DeadItem(f"unknown postmark RecordType {word!r}", dict(record)))
        return
    message_id = common.text(record.get("MessageID"), max_len=256)
    if kind == "subscriptionchange":
        suppressed = record.get("SuppressSending") is True
        by_recipient = (common.text(record.get("Origin")) or "").lower() == "recipient"
        manual = common.text(record.get("SuppressionReason")) == "ManualSuppression"
        if not (suppressed and by_recipient and manual and message_id):
            result.ignored += 1  # bounce/complaint suppressions, reactivations, admin changes
            return
        status, word, error = "unsubscribed", "SubscriptionChange", None
    elif kind == "bounce":
        status, word, error = bounce(record)
        if status is None:
            if word in BOUNCES:
                result.ignored += 1  # a bounce type that changes nothing (delays, replies)
            else:
                result.dead.append(DeadItem(f"unknown postmark bounce type {word!r}", dict(record)))
            return
    else:
        status, word, error = STATUS_MAP[kind], str(record.get("RecordType")), None
    if message_id is None:
        result.dead.append(DeadItem("postmark record without MessageID", dict(record)))
        return
    result.events.append(
        CanonicalEvent(
            provider=NAME,
            provider_message_id=message_id,
            status=status,
            provider_status=word,
            channel="email",
            observed_at=request.received_at,
            occurred_at=common.event_time(record.get(TIME_FIELDS[kind])),
            account=_account(record),
            error=error,
            polled=request.polled,
        )
    )


@common.guarded
def parse(request: WebhookRequest) -> ParseResult:
    """One record -> at most one event; FramingError when the body is no JSON object."""
    record = common.load_json(request.body)
    if not isinstance(record, dict):
        raise FramingError("body must be a Postmark webhook record (a JSON object)")
    result = ParseResult()
    _one(result, request, record)
    return result
