"""Telnyx messaging webhooks (SMS, MMS): `message.sent`, `message.finalized`, inbound.

Sources (PROVIDERS-NEXT.md "Telnyx"):
https://developers.telnyx.com/docs/messaging/messages/receiving-webhooks,
https://developers.telnyx.com/api-reference/callbacks/delivery-update (the documented
example our fixtures follow), https://developers.telnyx.com/docs/messaging/messages/error-codes,
https://developers.telnyx.com/docs/development/sdk/python/webhooks, and the official SDK's
verifier and types (github.com/team-telnyx/telnyx-python).

`{"data": {"event_type", "id", "occurred_at", "payload": <message>, "record_type":
"event"}, "meta": {"attempt", "delivered_to"}}`. The status is per recipient, in
`payload.to[].status`: one recipient -> one event keyed by `payload.id` (the id
`POST /v2/messages` returned); a group MMS -> one event per recipient, keyed
`<payload.id>:<phone number>`. `message.received` is inbound (`received`). Account:
`payload.messaging_profile_id`. `delivery_unconfirmed` (final, without a carrier
confirmation; undocumented) is known and ignored: our own `delivery_unknown` covers it.

Signature: `telnyx-signature-ed25519` = base64 Ed25519 signature of
`<telnyx-timestamp>|<raw body>`, checked against the account's public key
(MSGSTATUS_TELNYX_PUBLIC_KEY: base64 of the raw 32 bytes, as the Mission Control Portal
shows it; several accounts: the config file's `public_key`s). The timestamp (Unix
seconds) must lie within MSGSTATUS_REPLAY_WINDOW (300 s, the SDKs' tolerance).
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from processors.config import Settings
from processors.model import CanonicalEvent, ErrorInfo, is_failure
from processors.providers import common
from processors.providers.base import (
    DeadItem,
    FramingError,
    ParseResult,
    SignatureError,
    WebhookRequest,
)
from processors.providers.coverage import DR, Coverage
from processors.providers.freshness import require_fresh

NAME = "telnyx"
CONTENT_TYPES: tuple[str, ...] = ("application/json",)
FRAMING = "json"
SIGNATURE_HEADER = "telnyx-signature-ed25519"
TIMESTAMP_HEADER = "telnyx-timestamp"
SIGNATURE_HEADERS: tuple[str, ...] = (SIGNATURE_HEADER, TIMESTAMP_HEADER)
# Channels, signature and receipts as `msgstatus providers` and the README show them.
COVERAGE = Coverage(
    channels=("sms", "mms"),
    signature="Ed25519 of timestamp|body (telnyx-signature-ed25519)",
    receipts={"sms": DR, "mms": DR},
)
SECRET = "TELNYX_PUBLIC_KEY"

# payload.to[].status -> canonical.
STATUS_MAP: dict[str, str] = {
    "scheduled": "scheduled",
    "queued": "queued",
    "sending": "sending",
    "sent": "sent",
    "delivered": "delivered",
    "delivery_failed": "undelivered",  # sent, the carrier reported failure
    "sending_failed": "failed",  # never left Telnyx (also: valid_until passed in queue)
    "expired": "expired",
    "cancelled": "canceled",  # a scheduled message cancelled before sending
    "received": "received",  # inbound (message.received)
}
IGNORED_STATUSES: frozenset[str] = frozenset({"delivery_unconfirmed"})
STATUSES = common.StatusTable(STATUS_MAP, IGNORED_STATUSES)
EVENTS: frozenset[str] = frozenset({"message.sent", "message.finalized", "message.received"})
# `message.sent` says the carrier has it, whatever `to[].status` still says (Telnyx's own
# documented example carries "queued"): below `sent`, the event type wins.
_BELOW_SENT: frozenset[str] = frozenset({"scheduled", "queued", "sending"})

# errors[].code (a string) -> category: Telnyx's delivery errors (40xxx).
ERROR_CODES: dict[str, tuple[str, str]] = dict(
    common.check_error_table(
        {
            "40001": ("invalid_number", "Not routable (landline or non-routable number)"),
            "40002": ("carrier_filtered", "Blocked as spam (temporary)"),
            "40003": ("blocked", "Blocked as spam (permanent: sending number blocked)"),
            "40004": ("unknown", "Rejected by destination"),
            "40005": ("expired", "Message expired"),
            "40006": ("unreachable", "Recipient unavailable"),
            "40008": ("unknown", "Undeliverable"),
            "40009": ("content_rejected", "Invalid message body"),
            "40011": ("rate_limited", "Upstream rate limit"),
            "40012": ("invalid_number", "Invalid destination number"),
            "40013": ("account_problem", "Invalid source number"),
            "40014": ("expired", "Expired in queue"),
            "40015": ("carrier_filtered", "Internal spam filter"),
            "40300": ("opted_out", "Blocked due to STOP message"),
        }
    )
)
CHANNELS: dict[str, str] = {"sms": "sms", "mms": "mms"}


def enabled(settings: Settings) -> bool:
    return settings.secret(SECRET) is not None


# --- signature ------------------------------------------------------------------------


def signed_bytes(timestamp: str, body: bytes) -> bytes:
    """What Telnyx signs: `<telnyx-timestamp>|<raw body>`."""
    return timestamp.encode("ascii") + b"|" + body


def calculate_signature(private_key: Ed25519PrivateKey, timestamp: str, body: bytes) -> str:
    """The `telnyx-signature-ed25519` value: base64 of the 64-byte Ed25519 signature."""
    return base64.b64encode(private_key.sign(signed_bytes(timestamp, body))).decode()


def public_key_setting(private_key: Ed25519PrivateKey) -> str:
    """MSGSTATUS_TELNYX_PUBLIC_KEY for a key pair: base64 of the raw 32-byte public key."""
    raw = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def sign(body: bytes, private_key: Ed25519PrivateKey, timestamp: float) -> dict[str, str]:
    """Headers a genuine Telnyx webhook would carry (tests and the demo sender)."""
    stamp = str(int(timestamp))
    return {
        "content-type": "application/json",
        SIGNATURE_HEADER: calculate_signature(private_key, stamp, body),
        TIMESTAMP_HEADER: stamp,
    }


@functools.lru_cache(maxsize=16)
def _public_key(setting: str) -> Ed25519PublicKey | None:
    try:
        raw = base64.b64decode(setting.strip(), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError):
        return None


def verify(request: WebhookRequest, settings: Settings) -> None:
    """Ed25519 over `timestamp|body` with any configured public key, timestamp fresh."""
    settings_keys = settings.secrets_for(SECRET)
    if not settings_keys:
        raise SignatureError(f"telnyx is not configured (MSGSTATUS_{SECRET} unset)")
    keys = [key for key in map(_public_key, settings_keys) if key is not None]
    if not keys:
        raise SignatureError(f"MSGSTATUS_{SECRET} is not base64 of a 32-byte Ed25519 key")
    given = request.header(SIGNATURE_HEADER)
    stamp = (request.header(TIMESTAMP_HEADER) or "").strip()
    if not given or not stamp:
        raise SignatureError(f"missing {SIGNATURE_HEADER} or {TIMESTAMP_HEADER} header")
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
        raise SignatureError(f"{TIMESTAMP_HEADER} is not Unix seconds")
    try:
        signature = base64.b64decode(given.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{SIGNATURE_HEADER} is not base64") from None
    message = signed_bytes(stamp, request.body)
    if not any(_valid(key, signature, message) for key in keys):
        raise SignatureError(f"{SIGNATURE_HEADER} does not match")
    require_fresh(float(stamp), request.received_at, settings.replay_window, TIMESTAMP_HEADER)


def _valid(key: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


# --- parsing ----------------------------------------------------------------------------


def _error(payload: Mapping[str, Any], status: str) -> ErrorInfo | None:
    for item in common.items(payload.get("errors")):
        error = common.mapping(item)
        code = common.text(error.get("code"), max_len=16)
        detail = common.text(error.get("detail")) or common.text(error.get("title"))
        if code is not None:
            return common.error_info(code, ERROR_CODES, detail)
    if is_failure(status):
        category = "expired" if status == "expired" else "unknown"
        return ErrorInfo(code=None, category=category)
    return None


def _recipient(
    result: ParseResult,
    request: WebhookRequest,
    data: Mapping[str, Any],
    payload: Mapping[str, Any],
    recipient: Any,
    key: str,
) -> None:
    to = common.mapping(recipient)
    word = common.text(to.get("status"), max_len=64)
    if word is None:
        result.dead.append(DeadItem("recipient without status", recipient))
        return
    status = STATUSES.resolve(word, result, recipient, f"unknown telnyx status {word[:64]!r}")
    if status is None:
        return
    if data.get("event_type") == "message.sent" and status in _BELOW_SENT:
        status, word = "sent", "message.sent"
    kind = (common.text(payload.get("type"), max_len=8) or "sms").lower()
    result.events.append(
        CanonicalEvent(
            provider=NAME,
            provider_message_id=key,
            status=status,
            provider_status=word,
            channel=CHANNELS.get(kind, "sms"),
            observed_at=request.received_at,
            occurred_at=common.event_time(data.get("occurred_at")),
            account=common.text(payload.get("messaging_profile_id"), max_len=128),
            error=_error(payload, status),
            polled=request.polled,
        )
    )


def _inbound(
    result: ParseResult,
    request: WebhookRequest,
    data: Mapping[str, Any],
    payload: Mapping[str, Any],
    message_id: str,
) -> None:
    kind = (common.text(payload.get("type"), max_len=8) or "sms").lower()
    result.events.append(
        CanonicalEvent(
            provider=NAME,
            provider_message_id=message_id,
            status="received",
            provider_status="message.received",
            channel=CHANNELS.get(kind, "sms"),
            observed_at=request.received_at,
            occurred_at=common.event_time(data.get("occurred_at")),
            account=common.text(payload.get("messaging_profile_id"), max_len=128),
            polled=request.polled,
        )
    )


@common.guarded
def parse(request: WebhookRequest) -> ParseResult:
    """One event -> one canonical event per recipient; FramingError if not a Telnyx event."""
    doc = common.load_json(request.body)
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), dict):
        raise FramingError("body must be a Telnyx webhook object with `data`")
    data = doc["data"]
    result = ParseResult()
    kind = common.text(data.get("event_type"), max_len=64)
    payload = common.mapping(data.get("payload"))
    message_id = common.text(payload.get("id"), max_len=128)
    if kind not in EVENTS:
        if kind is not None and not kind.startswith("message."):
            result.ignored += 1  # not a messaging event (another product on the same URL)
        else:
            result.dead.append(DeadItem(f"unknown telnyx event_type {str(kind)[:64]!r}", data))
        return result
    if message_id is None:
        result.dead.append(DeadItem("telnyx event without payload.id", data))
        return result
    if kind == "message.received":
        _inbound(result, request, data, payload, message_id)
        return result
    recipients = common.items(payload.get("to"))
    if not recipients:
        result.dead.append(DeadItem("telnyx message without recipients (payload.to)", data))
        return result
    if len(recipients) == 1:
        _recipient(result, request, data, payload, recipients[0], message_id)
        return result

    def one(recipient: Any) -> None:
        phone = common.text(common.mapping(recipient).get("phone_number"), max_len=64)
        if phone is None:
            result.dead.append(DeadItem("group MMS recipient without phone_number", recipient))
            return
        _recipient(result, request, data, payload, recipient, f"{message_id}:{phone}")

    common.each(result, recipients, one)
    return result
