"""SendGrid Event Webhook: a JSON array of email events, signed with ECDSA.

One POST batches many events of many messages; each becomes its own event keyed by the
full `sg_message_id` (one per recipient: the part before its first `.` is the request's
X-Message-Id, shared by every recipient, so it cannot be the key). Duplicates are common
and harmless: the ordering agent drops them (PROVIDERS.md "Email").

Signature, as SendGrid documents it: `X-Twilio-Email-Event-Webhook-Signature` is the
base64 DER ECDSA (P-256) signature over SHA-256 of `timestamp + raw body`, the timestamp
being `X-Twilio-Email-Event-Webhook-Timestamp`; the public key is the base64 DER
SubjectPublicKeyInfo SendGrid shows (MSGSTATUS_SENDGRID_PUBLIC_KEY). SendGrid signs each
POST (retries included) with the time it sends it, so the timestamp must be within
MSGSTATUS_REPLAY_WINDOW of when the gateway received it: a captured POST cannot be
replayed later.
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from processors.config import Settings
from processors.model import CanonicalEvent, ErrorInfo
from processors.providers import common, email_errors
from processors.providers.base import (
    DeadItem,
    ParseResult,
    SignatureError,
    WebhookRequest,
)
from processors.providers.coverage import DRR, Coverage
from processors.providers.freshness import require_fresh

NAME = "sendgrid"
CONTENT_TYPES: tuple[str, ...] = ("application/json",)
FRAMING = "json"
SIGNATURE_HEADER = "x-twilio-email-event-webhook-signature"
TIMESTAMP_HEADER = "x-twilio-email-event-webhook-timestamp"
SIGNATURE_HEADERS: tuple[str, ...] = (SIGNATURE_HEADER, TIMESTAMP_HEADER)
# Channels, signature and receipts as `msgstatus providers` and the README show them.
COVERAGE = Coverage(
    channels=("email",),
    signature="ECDSA P-256 of timestamp + body (X-Twilio-Email-Event-Webhook-Signature)",
    receipts={"email": DRR},
)
SECRET = "SENDGRID_PUBLIC_KEY"
CHANNEL = "email"

# `event` words (PROVIDERS.md "Email"). open -> read: an open is the email read receipt.
STATUS_MAP: dict[str, str] = {
    "processed": "queued",
    "delivered": "delivered",
    "bounce": "undelivered",
    "dropped": "rejected",
    "open": "read",
    "click": "clicked",
    "spamreport": "complained",
    "unsubscribe": "unsubscribed",
    "group_unsubscribe": "unsubscribed",
}
# deferred: a temporary failure, SendGrid retries (up to 72 h) and reports the outcome;
# group_resubscribe: the recipient joined a group again, no message status;
# account_status_change: account-level compliance notice, not about a message.
IGNORED_EVENTS: frozenset[str] = frozenset(
    {"deferred", "group_resubscribe", "account_status_change"}
)
EVENTS = common.StatusTable(STATUS_MAP, IGNORED_EVENTS)

# `bounce_classification` (SendGrid's own bounce classifier), by its first word, so both
# the webhook's ("Technical") and the API's ("Technical Failure") spellings match.
BOUNCE_CLASSIFICATIONS: dict[str, str] = {
    "invalid": "unreachable",  # Invalid Address: the mailbox does not exist
    "mailbox": "unreachable",  # Mailbox Unavailable: disabled or full
    "technical": "unreachable",  # Technical (Failure): DNS, TLS, routing on the receiver
    "content": "content_rejected",  # Content: refused for what the message carries
    "reputation": "blocked",  # Reputation: sender IP/domain blocked
    "frequency": "rate_limited",  # Frequency or Volume (Too High)
}
# `dropped` reasons: SendGrid refused to send (suppression lists, quota, bad request).
DROPPED_REASONS: dict[str, tuple[str, str]] = dict(
    common.check_error_table(
        {
            "bounced address": ("unreachable", "Address bounced before (bounce list)"),
            "invalid": ("unreachable", "Invalid email address"),
            "invalid address": ("unreachable", "Invalid email address"),
            "unsubscribed address": ("opted_out", "Address unsubscribed"),
            "spam reporting address": ("opted_out", "Recipient reported earlier mail as spam"),
            "spam content": ("content_rejected", "Spam Checker flagged the content"),
            "recipient list over package quota": ("account_problem", "Plan quota exceeded"),
            "invalid smtpapi header": ("unknown", "Invalid X-SMTPAPI header"),
            "expired": ("expired", "Message expired"),
        }
    )
)


def enabled(settings: Settings) -> bool:
    return settings.secret(SECRET) is not None


# --- signature ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def load_public_key(value: str) -> ec.EllipticCurvePublicKey:
    """The P-256 key from base64 DER SubjectPublicKeyInfo (or PEM); ValueError otherwise."""
    raw = value.strip()
    try:
        if "BEGIN PUBLIC KEY" in raw:
            key = serialization.load_pem_public_key(raw.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(raw, validate=True))
    except (ValueError, binascii.Error, UnsupportedAlgorithm):
        raise ValueError("not a base64 DER (or PEM) public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("not an ECDSA P-256 public key")
    return key


def public_key_setting(private_key: ec.EllipticCurvePrivateKey) -> str:
    """The MSGSTATUS_SENDGRID_PUBLIC_KEY value (base64 DER) for a key pair (tests, demo)."""
    der = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def signed_payload(timestamp: str, body: bytes) -> bytes:
    """What SendGrid signs: the timestamp header's text followed by the raw body."""
    return timestamp.encode() + body


def calculate_signature(
    private_key: ec.EllipticCurvePrivateKey, timestamp: str, body: bytes
) -> str:
    """The signature header value SendGrid would send (tests and the demo sender sign)."""
    der = private_key.sign(signed_payload(timestamp, body), ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(der).decode()


def sign(body: bytes, private_key: ec.EllipticCurvePrivateKey, timestamp: int) -> dict[str, str]:
    """Headers a genuine SendGrid POST would carry."""
    stamp = str(timestamp)
    return {
        "content-type": "application/json",
        SIGNATURE_HEADER: calculate_signature(private_key, stamp, body),
        TIMESTAMP_HEADER: stamp,
    }


def verify(request: WebhookRequest, settings: Settings) -> None:
    """ECDSA over timestamp + exact bytes, within the replay window; SignatureError only."""
    configured = settings.secret(SECRET)
    if configured is None:
        raise SignatureError("sendgrid is not configured (MSGSTATUS_SENDGRID_PUBLIC_KEY unset)")
    given = (request.header(SIGNATURE_HEADER) or "").strip()
    stamp = (request.header(TIMESTAMP_HEADER) or "").strip()
    if not given or not stamp:
        raise SignatureError("missing X-Twilio-Email-Event-Webhook-Signature or -Timestamp header")
    if not (stamp.isascii() and stamp.isdigit()) or len(stamp) > 12:
        raise SignatureError("X-Twilio-Email-Event-Webhook-Timestamp must be unix seconds")
    try:
        signature = base64.b64decode(given, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("X-Twilio-Email-Event-Webhook-Signature is not base64") from None
    try:
        key = load_public_key(configured)
    except ValueError as exc:
        raise SignatureError(f"MSGSTATUS_SENDGRID_PUBLIC_KEY is unusable: {exc}") from None
    try:
        key.verify(signature, signed_payload(stamp, request.body), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise SignatureError("X-Twilio-Email-Event-Webhook-Signature does not match") from None
    require_fresh(float(stamp), request.received_at, settings.replay_window, "sendgrid")


# --- parsing ----------------------------------------------------------------------------


def _first_word(value: str) -> str:
    return value.strip().lower().split(" ", 1)[0] if value.strip() else ""


def bounce_error(item: Mapping[str, Any]) -> ErrorInfo:
    """A bounce's category: SendGrid's classification, then `type`, then the SMTP answer."""
    status = common.text(item.get("status"), max_len=64)
    reason = common.text(item.get("reason"), max_len=2048)
    classification = common.text(item.get("bounce_classification"), max_len=128)
    category = BOUNCE_CLASSIFICATIONS.get(_first_word(classification or ""))
    if category is None and (common.text(item.get("type")) or "").lower() == "blocked":
        category = "blocked"  # SendGrid's "blocked" bounce: the receiver refused the sender
    if category is None:
        category = email_errors.classify(status, reason) or "unknown"
    return ErrorInfo(code=status, category=category, description=reason or classification)


def dropped_error(item: Mapping[str, Any]) -> ErrorInfo:
    reason = common.text(item.get("reason"), max_len=2048)
    status = common.text(item.get("status"), max_len=64)
    key = (reason or "").strip().lower()
    if key in DROPPED_REASONS:
        category, generic = DROPPED_REASONS[key]
    else:
        category, generic = email_errors.classify(status, reason) or "unknown", None
    return ErrorInfo(code=status, category=category, description=reason or generic)


_ERRORS = {"bounce": bounce_error, "dropped": dropped_error}


def _one(result: ParseResult, item: Any, request: WebhookRequest) -> None:
    obj = common.mapping(item)
    if not obj:
        result.dead.append(DeadItem("sendgrid event is not an object", item))
        return
    word = common.text(obj.get("event"), max_len=64)
    if word is None:
        result.dead.append(DeadItem("sendgrid event without an `event` name", item))
        return
    status = EVENTS.resolve(word, result, item, f"unknown sendgrid event {word!r}")
    if status is None:
        return
    message_id = common.text(obj.get("sg_message_id"), max_len=256)
    if message_id is None:
        result.dead.append(DeadItem("sendgrid event without sg_message_id", item))
        return
    key = word.strip().lower()
    error = _ERRORS[key](obj) if key in _ERRORS else None
    result.events.append(
        CanonicalEvent(
            provider=NAME,
            provider_message_id=message_id,
            status=status,
            provider_status=key,
            channel=CHANNEL,
            observed_at=request.received_at,
            occurred_at=common.event_time(obj.get("timestamp")),
            account=None,  # events carry no account; subusers sign with their own key
            error=error,
            polled=request.polled,
        )
    )


# One event per array item; FramingError when the body is not a JSON array.
parse = common.object_or_array(_one, "body must be a JSON array of SendGrid events", single=False)
