"""SES events (event publishing or identity feedback) onto canonical statuses.

Key: `mail.messageId` (one SES message, all its recipients); channel email.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from processors.model import CanonicalEvent, ErrorInfo
from processors.providers import common, email_errors
from processors.providers.base import (
    DeadItem,
    FramingError,
    ParseResult,
    WebhookRequest,
)
from processors.providers.ses.envelope import (
    CHANNEL,
    CONFIRMATIONS,
    NAME,
    NOTIFICATION,
)

# `eventType` (event publishing) or `notificationType` (identity feedback), lower-cased.
STATUS_MAP: dict[str, str] = {
    "send": "sent",
    "delivery": "delivered",
    "reject": "rejected",
    "complaint": "complained",
    "open": "read",
    "click": "clicked",
    "rendering failure": "failed",  # template rendering failed: SES sent nothing
}
# DeliveryDelay: SES keeps retrying and reports the outcome; Subscription: the recipient
# changed list preferences; AmazonSnsSubscriptionSucceeded: SES's set-up notice.
IGNORED_EVENTS: frozenset[str] = frozenset(
    {"deliverydelay", "subscription", "amazonsnssubscriptionsucceeded"}
)
EVENTS = common.StatusTable(STATUS_MAP, IGNORED_EVENTS)
BOUNCE_EVENT = "bounce"
# bounce.bounceType: Permanent (hard) is final; Transient (soft) means SES may still
# deliver, so it changes nothing; Undetermined is a bounce SES could not classify.
BOUNCES = common.StatusTable(
    {"permanent": "undelivered", "undetermined": "undelivered"}, frozenset({"transient"})
)
# Complaint feedback type "not-spam": the recipient said the mail is NOT spam.
IGNORED_COMPLAINTS: frozenset[str] = frozenset({"not-spam"})
# The object holding an event's details (and its timestamp), by event word.
EVENT_OBJECTS: dict[str, str] = {
    "send": "send",
    "delivery": "delivery",
    "reject": "reject",
    "complaint": "complaint",
    "open": "open",
    "click": "click",
    "rendering failure": "failure",
    "bounce": "bounce",
}
# bounce.bounceSubType -> (category, description). General/Undetermined say nothing
# themselves: the recipient's SMTP status and diagnostic decide (email_errors).
BOUNCE_SUBTYPES: dict[str, tuple[str, str]] = dict(
    common.check_error_table(
        {
            "NoEmail": ("unreachable", "The recipient's email address does not exist"),
            "Suppressed": ("unreachable", "On the SES suppression list after hard bounces"),
            "OnAccountSuppressionList": ("opted_out", "On the account-level suppression list"),
            "MailboxFull": ("unreachable", "The recipient's mailbox is full"),
            "MessageTooLarge": ("content_rejected", "The message is too large"),
            "ContentRejected": ("content_rejected", "The recipient refused the content"),
            "AttachmentRejected": ("content_rejected", "The recipient refused an attachment"),
        }
    )
)
REJECT_REASONS: dict[str, tuple[str, str]] = dict(
    common.check_error_table({"bad content": ("content_rejected", "The message has a virus")})
)


def _first_recipient(bounce: Mapping[str, Any]) -> Mapping[str, Any]:
    recipients = common.items(bounce.get("bouncedRecipients"))
    return common.mapping(recipients[0]) if recipients else {}


def bounce_error(bounce: Mapping[str, Any]) -> ErrorInfo:
    subtype = common.text(bounce.get("bounceSubType"), max_len=64)
    recipient = _first_recipient(bounce)
    status = common.text(recipient.get("status"), max_len=64)
    diagnostic = common.text(recipient.get("diagnosticCode"), max_len=2048)
    if subtype in BOUNCE_SUBTYPES:
        category, generic = BOUNCE_SUBTYPES[subtype]
    else:
        category, generic = email_errors.classify(status, diagnostic) or "unknown", None
    return ErrorInfo(code=subtype or status, category=category, description=diagnostic or generic)


def reject_error(reject: Mapping[str, Any]) -> ErrorInfo:
    reason = common.text(reject.get("reason"), max_len=1024)
    key = (reason or "").lower()
    if key in REJECT_REASONS:
        category, generic = REJECT_REASONS[key]
    else:
        category, generic = email_errors.classify(reason) or "unknown", None
    return ErrorInfo(code=None, category=category, description=reason or generic)


def rendering_error(failure: Mapping[str, Any]) -> ErrorInfo:
    description = common.text(failure.get("errorMessage"), max_len=2048)
    return ErrorInfo(code=None, category="content_rejected", description=description)


def _event(result: ParseResult, request: WebhookRequest, event: Mapping[str, Any]) -> None:
    word = common.text(event.get("eventType"), max_len=64) or common.text(
        event.get("notificationType"), max_len=64
    )
    if word is None:
        result.dead.append(DeadItem("SES notification without eventType/notificationType", event))
        return
    key = word.lower()
    details = common.mapping(event.get(EVENT_OBJECTS.get(key, key)))
    error: ErrorInfo | None = None
    provider_status = word
    if key == BOUNCE_EVENT:
        bounce_type = common.text(details.get("bounceType"), max_len=64)
        if bounce_type is None:
            result.dead.append(DeadItem("SES bounce without bounceType", event))
            return
        # an ignored (soft) bounce: SES may still deliver
        status = BOUNCES.resolve(
            bounce_type, result, event, f"unknown SES bounceType {bounce_type!r}"
        )
        if status is None:
            return
        provider_status = f"{word}/{bounce_type}"
        error = bounce_error(details)
    else:
        status = EVENTS.resolve(word, result, event, f"unknown SES event type {word!r}")
        if status is None:
            return
        feedback = (common.text(details.get("complaintFeedbackType")) or "").lower()
        if key == "complaint" and feedback in IGNORED_COMPLAINTS:
            result.ignored += 1
            return
        if key == "reject":
            error = reject_error(details)
        elif key == "rendering failure":
            error = rendering_error(details)
    mail = common.mapping(event.get("mail"))
    message_id = common.text(mail.get("messageId"), max_len=256)
    if message_id is None:
        result.dead.append(DeadItem("SES notification without mail.messageId", event))
        return
    occurred = common.event_time(details.get("timestamp"))
    if occurred is None:
        occurred = common.event_time(mail.get("timestamp"))
    result.events.append(
        CanonicalEvent(
            provider=NAME,
            provider_message_id=message_id,
            status=status,
            provider_status=provider_status,
            channel=CHANNEL,
            observed_at=request.received_at,
            occurred_at=occurred,
            account=common.text(mail.get("sendingAccountId"), max_len=64),
            error=error,
            polled=request.polled,
        )
    )


@common.guarded
def parse(request: WebhookRequest) -> ParseResult:
    """An SNS envelope -> at most one event; FramingError when it is no SNS message."""
    data = common.load_json(request.body)
    if not isinstance(data, dict) or not isinstance(data.get("Type"), str):
        raise FramingError("body must be an SNS message: a JSON object with a Type")
    result = ParseResult()
    kind = data["Type"]
    if kind in CONFIRMATIONS:
        result.ignored += 1  # handled by the gateway (subscribe_url), no message status
        return result
    if kind != NOTIFICATION:
        result.dead.append(DeadItem(f"unknown SNS message Type {kind[:64]!r}", data))
        return result
    message = data.get("Message")
    if not isinstance(message, str):
        result.dead.append(DeadItem("SNS notification without a Message string", data))
        return result
    try:
        event = orjson.loads(message)
    except (orjson.JSONDecodeError, ValueError, TypeError, RecursionError):
        result.ignored += 1  # plain-text test/set-up messages published to the topic
        return result
    if not isinstance(event, dict):
        result.dead.append(DeadItem("SES notification Message is not a JSON object", data))
        return result
    _event(result, request, event)
    return result
