"""Bird, formerly MessageBird: Channels API message statuses (SMS, WhatsApp, ...), and the
legacy MessageBird SMS status reports.

Sources (PROVIDERS-NEXT.md "Bird"):
https://docs.bird.com/api/notifications-api/api-reference/webhooks/verifying-a-webhook,
https://docs.bird.com/api/notifications-api/api-reference/webhook-subscriptions/create-a-webhook-subscription,
https://docs.bird.com/api/channels-api/message-status-and-interactions,
https://docs.bird.com/api/channels-api/message-status-and-interactions/message-failure-codes,
https://docs.bird.com/api/channels-api/message-status-and-interactions/message-failure-sources/sms-platform-extended-error-codes,
legacy: https://github.com/messagebird/python-rest-api (request_validator.py) and
https://developers.messagebird.com/api/sms-messaging/#handle-a-status-report.

Channels API: `{"service": "channels", "event": "<channel>.outbound" | "<channel>.inbound" |
"<channel>.interaction", "payload": <message or interaction>}`. Key: `payload.id` (the id
the send call returned; interactions name it `messageId`); account: `payload.channelId`.
Statuses accepted, sent, sending_failed, delivered, delivery_failed (others in the API's
model are undocumented: dead-lettered until they are). Failures carry `failure {code,
source {name, code}}`: for the SMS platform (`sms-messagebird`) the category comes from
the GSM error in `source.code` (or the reason word), else from the code's family.
Interactions (read, opened, clicked, reported-as-spam, unsubscribe-request) are
engagement or `read`; the interaction payload shape is our reading of the docs (doc gap).

Signature (current): `messagebird-signature` = base64(HMAC-SHA256(signingKey, timestamp +
"\\n" + URL + "\\n" + SHA-256(raw body) as raw bytes)) with `messagebird-request-timestamp`
(Unix seconds). signingKey = MSGSTATUS_BIRD_SIGNING_KEY as its bytes; URL = the subscription
URL, i.e. MSGSTATUS_PUBLIC_URL + `/webhooks/bird` (+ query). Bird retries for 8 hours
without saying whether a retry is re-signed: the timestamp must lie within
MSGSTATUS_BIRD_MAX_AGE seconds when set (e.g. 32400 to accept 9-hour-old retries), else
MSGSTATUS_REPLAY_WINDOW.

Legacy (only when MSGSTATUS_BIRD_LEGACY_SIGNING_KEY is set): `MessageBird-Signature-JWT`,
HS256/384/512 with the account signing key; claims `iss` "MessageBird", `nbf`, `exp`,
`jti`, `url_hash` (hex SHA-256 of the full URL), `payload_hash` (hex SHA-256 of the body,
absent without one); 1 s leeway as the SDKs. The legacy SMS status report is a GET (or
form POST) with `id`, `reference`, `recipient`, `status` (scheduled, sent, buffered,
delivered, expired, delivery_failed), `statusReason`, `statusErrorCode`, `statusDatetime`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from processors.config import Settings
from processors.model import CanonicalEvent, ErrorInfo, is_failure
from processors.providers import common, jwt_hmac, query_string
from processors.providers.base import (
    DeadItem,
    FramingError,
    ParseResult,
    SignatureError,
    WebhookRequest,
    constant_time_equal,
)
from processors.providers.coverage import DR, DRR, Coverage
from processors.providers.freshness import require_fresh

NAME = "bird"
CONTENT_TYPES: tuple[str, ...] = ("application/json", "application/x-www-form-urlencoded")
FRAMING = "json"
SIGNATURE_HEADER = "messagebird-signature"
TIMESTAMP_HEADER = "messagebird-request-timestamp"
LEGACY_HEADER = "messagebird-signature-jwt"
SIGNATURE_HEADERS: tuple[str, ...] = (SIGNATURE_HEADER, TIMESTAMP_HEADER, LEGACY_HEADER)
# Channels, signature and receipts as `msgstatus providers` and the README show them.
COVERAGE = Coverage(
    channels=("sms", "whatsapp", "email", "rcs"),
    signature="HMAC-SHA256 of timestamp, URL, body hash (messagebird-signature); "
    "legacy MessageBird-Signature-JWT",
    receipts={"sms": DR, "whatsapp": DRR, "email": DRR, "rcs": DRR},
    # interactions, inbound, and the legacy SMS status report words
    extra_statuses=(
        "read",
        "clicked",
        "complained",
        "unsubscribed",
        "received",
        "scheduled",
        "expired",
    ),
)
HTTP_METHODS: tuple[str, ...] = ("POST", "GET")  # legacy SMS status reports are GETs
SECRET = "BIRD_SIGNING_KEY"
LEGACY_SECRET = "BIRD_LEGACY_SIGNING_KEY"
LEGACY_ISSUER = "MessageBird"
LEEWAY = 1.0

# Channels API payload.status -> canonical.
STATUS_MAP: dict[str, str] = {
    "accepted": "accepted",  # accepted by the Channels API
    "sent": "sent",  # handed to the platform (SMS network, WhatsApp)
    "sending_failed": "failed",  # could not be handed to the platform
    "delivered": "delivered",
    "delivery_failed": "undelivered",  # sent, not delivered
}
IGNORED_STATUSES: frozenset[str] = frozenset()
STATUSES = common.StatusTable(STATUS_MAP, IGNORED_STATUSES)

# `<channel>.interaction` types -> canonical (read for opens: as email providers' opens).
INTERACTIONS = common.StatusTable(
    {
        "read": "read",
        "opened": "read",
        "clicked": "clicked",
        "reported-as-spam": "complained",
        "unsubscribe-request": "unsubscribed",
    },
    frozenset({"compliance-keyword"}),  # an SMS STOP/HELP keyword: not about a message
)

# Legacy MessageBird SMS status report `status` -> canonical.
LEGACY_STATUSES = common.StatusTable(
    {
        "scheduled": "scheduled",
        "sent": "sent",
        "buffered": "sent",  # the network holds it (handset off)
        "delivered": "delivered",
        "expired": "expired",
        "delivery_failed": "undelivered",
    }
)

CHANNELS: dict[str, str] = {
    "sms": "sms",
    "whatsapp": "whatsapp",
    "email": "email",
    "rcs": "rcs",
    "instagram": "instagram",
    "facebook": "messenger",
    "messenger": "messenger",
    "line": "line",
    "telegram": "telegram",
    "viber": "viber",
    "mms": "mms",
}

# GSM errors the SMS platform reports in failure.source.code / legacy statusErrorCode.
SMS_ERRORS: dict[str, tuple[str, str]] = dict(
    common.check_error_table(
        {
            "0": ("unknown", "Generic delivery failure"),
            **{c: ("invalid_number", "Unknown subscriber") for c in ("1", "2", "3", "5")},
            **{c: ("invalid_number", "Unknown subscriber") for c in ("9", "10", "11", "12")},
            **{c: ("unreachable", "Unavailable subscriber") for c in ("6", "8", "26", "27")},
            "31": ("unreachable", "Subscriber busy"),
            "32": ("unreachable", "SM delivery failure"),
            "33": ("unreachable", "Message waiting list full"),
            "34": ("provider_error", "System failure"),
            "13": ("blocked", "Call barred"),
        }
    )
)
# The reason word of an SMS failure (`reason: unknown_subscriber; ...`, `details`).
SMS_REASONS: dict[str, tuple[str, str]] = dict(
    common.check_error_table(
        {
            "unknown_subscriber": ("invalid_number", "Unknown subscriber"),
            "unavailable_subscriber": ("unreachable", "Unavailable subscriber"),
            "expired": ("expired", "Expired"),
            "dlr_not_received": ("expired", "Delivery report not received"),
            "received_network_error": ("provider_error", "Received network error"),
            "generic_delivery_failure": ("unknown", "Generic delivery failure"),
        }
    )
)
SMS_SOURCE = "sms-messagebird"


def enabled(settings: Settings) -> bool:
    return settings.secret(SECRET) is not None or settings.secret(LEGACY_SECRET) is not None


# --- signature ------------------------------------------------------------------------


def signed_bytes(timestamp: str, url: str, body: bytes) -> bytes:
    """What Bird signs: `timestamp \\n url \\n sha256(body)` (the digest as raw bytes)."""
    return f"{timestamp}\n{url}\n".encode() + hashlib.sha256(body).digest()


def calculate_signature(signing_key: str, timestamp: str, url: str, body: bytes) -> str:
    """The `messagebird-signature` value: base64 HMAC-SHA256 keyed by the signingKey."""
    mac = hmac.new(signing_key.encode(), signed_bytes(timestamp, url, body), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def sign(url: str, body: bytes, signing_key: str, timestamp: float) -> dict[str, str]:
    """Headers a genuine Bird webhook would carry (tests and the demo sender)."""
    stamp = str(int(timestamp))
    return {
        "content-type": "application/json",
        SIGNATURE_HEADER: calculate_signature(signing_key, stamp, url, body),
        TIMESTAMP_HEADER: stamp,
    }


def legacy_token(
    signing_key: str, url: str, body: bytes, issued_at: float, ttl: float = 60, alg: str = "HS256"
) -> str:
    """A `MessageBird-Signature-JWT` as MessageBird's legacy API signs it."""
    claims: dict[str, Any] = {
        "iss": LEGACY_ISSUER,
        "nbf": int(issued_at),
        "exp": int(issued_at + ttl),
        "jti": hashlib.sha256(f"{url}{issued_at}".encode()).hexdigest()[:32],
        "url_hash": hashlib.sha256(url.encode()).hexdigest(),
    }
    if body:
        claims["payload_hash"] = hashlib.sha256(body).hexdigest()
    return jwt_hmac.encode(claims, signing_key, alg)


# Bird retries for 8 hours with the timestamp it first signed: a
# shorter window would turn every retry after a gateway outage into a 401 and lose the
# status for good, while a replay inside the window is only a duplicate (never applied twice).
DEFAULT_MAX_AGE = 32_400.0


def _window(settings: Settings) -> float:
    """MSGSTATUS_BIRD_MAX_AGE seconds when set, else at least DEFAULT_MAX_AGE."""
    window = settings.provider_options.bird_max_age
    if window is None:
        return max(settings.replay_window, DEFAULT_MAX_AGE)
    return window


def verify(request: WebhookRequest, settings: Settings) -> None:
    """The current HMAC (or, when configured, the legacy JWT); raises SignatureError."""
    if not enabled(settings):
        raise SignatureError(f"bird is not configured (MSGSTATUS_{SECRET} unset)")
    if request.header(SIGNATURE_HEADER) is not None:
        _verify_current(request, settings)
    elif request.header(LEGACY_HEADER) is not None and settings.secret(LEGACY_SECRET):
        _verify_legacy(request, settings)
    else:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")


def _verify_current(request: WebhookRequest, settings: Settings) -> None:
    keys = settings.secrets_for(SECRET)
    if not keys:
        raise SignatureError(f"{SIGNATURE_HEADER} given but MSGSTATUS_{SECRET} is not set")
    stamp = (request.header(TIMESTAMP_HEADER) or "").strip()
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
        raise SignatureError(f"missing or malformed {TIMESTAMP_HEADER}")
    try:
        given = base64.b64decode((request.header(SIGNATURE_HEADER) or "").strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{SIGNATURE_HEADER} is not base64") from None
    message = signed_bytes(stamp, request.url, request.body)
    found = False
    for key in keys:
        expected = hmac.new(key.encode(), message, hashlib.sha256).digest()
        found |= hmac.compare_digest(expected, given)
    if not found:
        raise SignatureError(f"{SIGNATURE_HEADER} does not match (signed for another URL?)")
    require_fresh(float(stamp), request.received_at, _window(settings), TIMESTAMP_HEADER)


def _verify_legacy(request: WebhookRequest, settings: Settings) -> None:
    token = (request.header(LEGACY_HEADER) or "").strip()
    claims = jwt_hmac.verify(token, settings.secrets_for(LEGACY_SECRET), tuple(jwt_hmac.DIGESTS))
    if claims.get("iss") != LEGACY_ISSUER:
        raise SignatureError("MessageBird-Signature-JWT iss is not MessageBird")
    now = request.received_at
    not_before, expires = jwt_hmac.number(claims, "nbf"), jwt_hmac.number(claims, "exp")
    if expires is None or now > expires + LEEWAY:
        raise SignatureError("MessageBird-Signature-JWT expired")
    if not_before is not None and now + LEEWAY < not_before:
        raise SignatureError("MessageBird-Signature-JWT not yet valid (nbf in the future)")
    require_fresh(not_before, now, _window(settings), "MessageBird-Signature-JWT nbf")
    url_hash = claims.get("url_hash")
    if not isinstance(url_hash, str) or not constant_time_equal(
        hashlib.sha256(request.url.encode()).hexdigest(), url_hash.lower()
    ):
        raise SignatureError("MessageBird-Signature-JWT url_hash does not match the URL")
    if request.body and not query_string.is_query(request):  # a GET's query is in url_hash
        body_hash = claims.get("payload_hash")
        expected = hashlib.sha256(request.body).hexdigest()
        if not isinstance(body_hash, str) or not constant_time_equal(expected, body_hash.lower()):
            raise SignatureError("MessageBird-Signature-JWT payload_hash does not match")


# --- parsing ----------------------------------------------------------------------------


def _reason_word(payload: Mapping[str, Any]) -> str | None:
    """`reason: unknown_subscriber` inside `reason`, or `details` itself."""
    reason = common.text(payload.get("reason"), max_len=512) or ""
    for part in reason.split(";"):
        key, _, value = part.partition(":")
        if key.strip().lower() == "reason" and value.strip():
            return value.strip().lower()
    details = common.text(payload.get("details"), max_len=128)
    return details.lower() if details else None


def failure_error(payload: Mapping[str, Any], status: str) -> ErrorInfo | None:
    """Category from the SMS platform's GSM code or reason, else the failure code family."""
    failure = common.mapping(payload.get("failure"))
    source = common.mapping(failure.get("source"))
    code = common.text(failure.get("code"), max_len=16)
    description = common.text(payload.get("reason")) or common.text(payload.get("details"))
    if not failure and not is_failure(status):
        return None
    category = "unknown"
    if (common.text(source.get("name"), max_len=64) or "").lower() == SMS_SOURCE:
        platform = common.text(source.get("code"), max_len=16)
        word = _reason_word(payload)
        if platform in SMS_ERRORS:
            category = SMS_ERRORS[platform][0]
        elif word in SMS_REASONS:
            category = SMS_REASONS[word][0]
    elif code is not None and code.isascii() and code.isdigit():
        category = _family(int(code))
    return ErrorInfo(code=code, category=category, description=description)


def _family(code: int) -> str:
    if 11000 <= code < 12000:
        return "content_rejected"  # async validation
    if code == 12003:
        return "account_problem"  # unsupported destination
    if 12000 <= code < 13000:
        return "provider_error"  # service errors
    if 14000 <= code < 15000:
        return "account_problem"  # customer errors
    return "unknown"  # 15xxx platform errors without a known platform code, others


def _channel(event: str) -> str:
    return CHANNELS.get(event.partition(".")[0].lower(), "api")


def _outbound(
    result: ParseResult, request: WebhookRequest, event: str, payload: Mapping[str, Any]
) -> None:
    message_id = common.text(payload.get("id"), max_len=128)
    word = common.text(payload.get("status"), max_len=64)
    if message_id is None:
        result.dead.append(DeadItem("bird message without id", payload))
        return
    if word is None:
        result.dead.append(DeadItem("bird message without status", payload))
        return
    status = STATUSES.lookup(word)
    if status is None:
        result.dead.append(DeadItem(f"unknown bird status {word[:64]!r}", payload))
        return
    at = common.event_time(payload.get("lastStatusAt")) or common.event_time(
        payload.get("updatedAt")
    )
    result.events.append(
        CanonicalEvent(
            provider=NAME,
            provider_message_id=message_id,
            status=status,
            provider_status=word,
            channel=_channel(event),
            observed_at=request.received_at,
            occurred_at=at,
            account=common.text(payload.get("channelId"), max_len=128),
            error=failure_error(payload, status),
            polled=request.polled,
        )
    )


def _simple(
    result: ParseResult,
    request: WebhookRequest,
    event: str,
    payload: Mapping[str, Any],
    message_id: str | None,
    status: str,
    word: str,
) -> None:
    if message_id is None:
        result.dead.append(DeadItem(f"bird {event} without a message id", payload))
        return
    at = common.event_time(payload.get("createdAt")) or common.event_time(payload.get("updatedAt"))
    result.events.append(
        CanonicalEvent(
            provider=NAME,
            provider_message_id=message_id,
            status=status,
            provider_status=word,
            channel=_channel(event),
            observed_at=request.received_at,
            occurred_at=at,
            account=common.text(payload.get("channelId"), max_len=128),
            polled=request.polled,
        )
    )


def _channels(result: ParseResult, request: WebhookRequest, doc: Mapping[str, Any]) -> None:
    event = common.text(doc.get("event"), max_len=64) or ""
    payload = common.mapping(doc.get("payload"))
    direction = event.rpartition(".")[2].lower()
    if direction == "outbound":
        _outbound(result, request, event, payload)
    elif direction == "inbound":
        message_id = common.text(payload.get("id"), max_len=128)
        _simple(result, request, event, payload, message_id, "received", event)
    elif direction == "interaction":
        kind = common.text(payload.get("type"), max_len=64) or ""
        status = INTERACTIONS.resolve(
            kind, result, payload, f"unknown bird interaction {kind[:64]!r}"
        )
        if status is None:
            return
        message_id = common.text(payload.get("messageId"), max_len=128)
        _simple(result, request, event, payload, message_id, status, kind.lower())
    else:
        result.dead.append(DeadItem(f"unknown bird event {event[:64]!r}", dict(doc)))


def _legacy(result: ParseResult, request: WebhookRequest, fields: dict[str, str]) -> None:
    message_id = common.text(fields.get("id"), max_len=128)
    word = common.text(fields.get("status"), max_len=64)
    if message_id is None or word is None:
        result.dead.append(DeadItem("MessageBird status report without id or status", fields))
        return
    status = LEGACY_STATUSES.lookup(word)
    if status is None:
        result.dead.append(DeadItem(f"unknown MessageBird status {word[:64]!r}", fields))
        return
    error = None
    code = common.text(fields.get("statusErrorCode"), max_len=16)
    if is_failure(status) or code not in (None, "0"):
        reason = common.text(fields.get("statusReason"))
        if code is not None:
            error = common.error_info(code, SMS_ERRORS, reason)
        else:
            category = "expired" if status == "expired" else "unknown"
            error = ErrorInfo(code=None, category=category, description=reason)
    result.events.append(
        CanonicalEvent(
            provider=NAME,
            provider_message_id=message_id,
            status=status,
            provider_status=word,
            channel="sms",
            observed_at=request.received_at,
            occurred_at=common.event_time(fields.get("statusDatetime")),
            account=None,
            error=error,
            polled=request.polled,
        )
    )


@common.guarded
def parse(request: WebhookRequest) -> ParseResult:
    """A Channels API event (JSON) or a legacy SMS status report (query or form)."""
    result = ParseResult()
    if query_string.is_query(request) or not common.looks_like_json(request):
        fields: dict[str, str] = {}
        for key, value in common.load_form(request.body):
            fields.setdefault(key, value)
        _legacy(result, request, fields)
        return result
    doc = common.load_json(request.body)
    if not isinstance(doc, dict) or not isinstance(doc.get("payload"), dict):
        raise FramingError("body must be a Bird webhook object with a `payload`")
    _channels(result, request, doc)
    return result
