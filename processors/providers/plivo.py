"""Plivo message status callbacks (SMS, MMS, WhatsApp).

A form POST with `MessageUUID`, `Status`, `ErrorCode`, `From`, `To`, `MessageType`?,
`ParentMessageUUID`, `PartInfo`, `Units`, `TotalRate`, ... One callback = one status of one
message part (Plivo "Message Status Callbacks",
https://www.plivo.com/docs/messaging/api/message/message-status-callbacks).

A multipart SMS reports each part under its own `MessageUUID`, with the first part's UUID
(the one the send API returned) as `ParentMessageUUID` (single-part messages: the same
UUID). We key by ParentMessageUUID, so the parts are one message to the sender: the first
`delivered` part makes it delivered; a part failing after another part's delivery is kept
in the message's history as a conflict (DESIGN.md section 5), never applied.

Signature (Plivo "Signature validation", V3; as plivo-python's `validate_v3_signature`):
`X-Plivo-Signature-V3` (messaging callbacks may name it `X-Plivo-Signature-MA-V3`) =
base64(HMAC-SHA256(auth token, base + "." + `X-Plivo-Signature-V3-Nonce`)), where for a
POST with params, base = `scheme://host/path` + "?" + [the URL's query params sorted,
`k=v` joined by `&`, + "."] + every POST param as `name+value`, sorted by name. The header
may hold several comma-separated signatures (one per active auth token): any may match.
The URL is the public URL Plivo called (the gateway builds it from MSGSTATUS_PUBLIC_URL).
Plivo signs no time: the gateway remembers each nonce (`replay_key`) for at least an
hour, so a replayed callback within that time is not stored twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, urlsplit, urlunsplit

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
from processors.providers.coverage import DR, DRR, Coverage
from processors.providers.replay import ReplayKey, usable_key, window_ttl

NAME = "plivo"
CONTENT_TYPES: tuple[str, ...] = ("application/x-www-form-urlencoded",)
FRAMING = "form"
SIGNATURE_HEADER = "x-plivo-signature-v3"
MA_SIGNATURE_HEADER = "x-plivo-signature-ma-v3"
NONCE_HEADER = "x-plivo-signature-v3-nonce"
SIGNATURE_HEADERS: tuple[str, ...] = (SIGNATURE_HEADER, MA_SIGNATURE_HEADER, NONCE_HEADER)
# One small form (or object) per callback: a body limit of its own bounds what an unsigned
# request costs before its signature is checked (processors/ingest/gateway.py).
MAX_BODY_BYTES = 65_536
# Channels, signature and receipts as `msgstatus providers` and the README show them.
COVERAGE = Coverage(
    channels=("sms", "mms", "whatsapp"),
    signature="HMAC-SHA256 with nonce (X-Plivo-Signature-V3)",
    receipts={"sms": DR, "mms": DR, "whatsapp": DRR},
)
SECRET = "PLIVO_AUTH_TOKEN"
NONCE_TTL = 3600.0  # seconds a nonce is remembered at least (no signed time to bound it)

STATUS_MAP: dict[str, str] = {
    "queued": "queued",
    "sent": "sent",
    "delivered": "delivered",
    "undelivered": "undelivered",
    "failed": "failed",
    "rejected": "rejected",
    "read": "read",  # WhatsApp
}
IGNORED_STATUSES: frozenset[str] = frozenset()  # none documented
STATUSES = common.StatusTable(STATUS_MAP, IGNORED_STATUSES)

# ErrorCode -> (category, Plivo's title) from Plivo's messaging error codes.
ERROR_CODES: dict[str, tuple[str, str]] = dict(
    common.check_error_table(
        {
            "10": ("content_rejected", "Invalid message"),
            "20": ("provider_error", "Network error"),
            "30": ("carrier_filtered", "Spam detected"),
            "40": ("account_problem", "Invalid source number"),
            "50": ("invalid_number", "Invalid destination number"),
            "60": ("provider_error", "Loop detected"),
            "70": ("invalid_number", "Destination permanently unavailable"),
            "80": ("unreachable", "Destination temporarily unavailable"),
            "90": ("unreachable", "No route available"),
            "100": ("carrier_filtered", "Prohibited by carrier"),
            "110": ("content_rejected", "Message too long"),
            "200": ("opted_out", "Source number blocked by STOP from destination number"),
            "300": ("provider_error", "Failed to dispatch message"),
            "420": ("expired", "Message expired"),
            "900": ("account_problem", "Insufficient credit"),
            "910": ("account_problem", "Account disabled"),
            "950": ("rate_limited", "Daily messaging limit reached"),
            "1000": ("unknown", "Unknown error"),
        }
    )
)
CHANNELS: dict[str, str] = {"sms": "sms", "mms": "mms", "whatsapp": "whatsapp"}


def enabled(settings: Settings) -> bool:
    return settings.secret(SECRET) is not None


# --- signature ------------------------------------------------------------------------


def _sorted_query(pairs: Iterable[tuple[str, str]]) -> str:
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name, []).append(value)
    return "&".join(f"{k}={v}" for k in sorted(grouped) for v in sorted(grouped[k]))


def _sorted_params(pairs: Iterable[tuple[str, str]]) -> str:
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name, []).append(value)
    return "".join(f"{k}{v}" for k in sorted(grouped) for v in sorted(grouped[k]))


def signed_base(url: str, params: Iterable[tuple[str, str]]) -> str:
    """What Plivo signs (before `.nonce`) for a POST to `url` with these form params."""
    parts = urlsplit(url)
    base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    post = list(params)
    query = _sorted_query(parse_qsl(parts.query, keep_blank_values=True))
    if query or post:
        base += "?" + query
    if query and post:
        base += "."
    return base + _sorted_params(post)


def calculate_signature(
    auth_token: str,
    url: str,
    nonce: str,
    params: Mapping[str, str] | Iterable[tuple[str, str]] = (),
) -> str:
    """X-Plivo-Signature-V3 for a POST of `params` to `url` with this nonce."""
    pairs = list(params.items()) if isinstance(params, Mapping) else list(params)
    message = f"{signed_base(url, pairs)}.{nonce}".encode("utf-8", "surrogatepass")
    return common.hmac_b64(auth_token, message, "sha256")


def verify(request: WebhookRequest, settings: Settings) -> None:
    """Check X-Plivo-Signature-V3 (or -MA-V3) with its nonce; raises SignatureError only."""
    token = settings.secret(SECRET)
    if token is None:
        raise SignatureError("plivo is not configured (MSGSTATUS_PLIVO_AUTH_TOKEN unset)")
    given = request.header(SIGNATURE_HEADER) or request.header(MA_SIGNATURE_HEADER)
    nonce = request.header(NONCE_HEADER)
    if not given or not nonce:
        raise SignatureError("missing X-Plivo-Signature-V3 or X-Plivo-Signature-V3-Nonce header")
    if usable_key(nonce) is None:
        raise SignatureError("X-Plivo-Signature-V3-Nonce must be printable ASCII")
    try:
        params = common.load_form(request.body)
        expected = calculate_signature(token, request.url, nonce, params)
    except (FramingError, ValueError):
        raise SignatureError("cannot verify: body is not a form or URL is malformed") from None
    candidates = [part.strip() for part in given.split(",") if part.strip()]
    if not common.any_equal(candidates, expected):  # constant time, every candidate compared
        raise SignatureError("X-Plivo-Signature-V3 does not match")


def replay_key(request: WebhookRequest, settings: Settings) -> ReplayKey | None:
    """The signed nonce. Plivo signs no time, so remembering nonces (for an hour at
    least) is the only replay check its scheme allows."""
    key = usable_key(request.header(NONCE_HEADER))
    return ReplayKey(key, window_ttl(settings.replay_window, NONCE_TTL)) if key else None


def sign(url: str, body: bytes, auth_token: str, nonce: str | None = None) -> dict[str, str]:
    """Headers a genuine Plivo callback would carry (tests and the demo sender use it).

    Without a nonce one is derived from the body, so the helper stays pure.
    """
    nonce = nonce or hashlib.sha256(body).hexdigest()[:20]
    params = common.load_form(body)
    return {
        "content-type": "application/x-www-form-urlencoded",
        SIGNATURE_HEADER: calculate_signature(auth_token, url, nonce, params),
        NONCE_HEADER: nonce,
    }


# --- parsing ----------------------------------------------------------------------------


def _fields(request: WebhookRequest) -> dict[str, str]:
    fields: dict[str, str] = {}
    for key, value in common.load_form(request.body):
        fields.setdefault(key, value)
    return fields


def _channel(fields: Mapping[str, str]) -> str:
    for name in ("MessageType", "Type", "ChannelType"):
        named = (fields.get(name) or "").strip().lower()
        if named in CHANNELS:
            return CHANNELS[named]
    return "sms"


def error_of(fields: Mapping[str, str], status: str) -> ErrorInfo | None:
    code = common.text(fields.get("ErrorCode"), max_len=16)
    if code is not None and code != "0" and code != "000":
        return common.error_info(code, ERROR_CODES)
    if is_failure(status):
        return ErrorInfo(code=None, category="unknown")
    return None


@common.guarded
def parse(request: WebhookRequest) -> ParseResult:
    """One callback -> at most one event; FramingError only when the body is no form."""
    fields = _fields(request)
    result = ParseResult()
    uuid = common.text(fields.get("ParentMessageUUID"), max_len=256) or common.text(
        fields.get("MessageUUID"), max_len=256
    )
    word = common.text(fields.get("Status"), max_len=64)
    if uuid is None:
        result.dead.append(DeadItem("missing MessageUUID", fields))
        return result
    if word is None:
        result.dead.append(DeadItem("missing Status", fields))
        return result
    status = STATUSES.resolve(word, result, fields, f"unknown plivo Status {word!r}")
    if status is None:
        return result
    result.events.append(
        CanonicalEvent(
            provider=NAME,
            provider_message_id=uuid,
            status=status,
            provider_status=word,
            channel=_channel(fields),
            observed_at=request.received_at,
            occurred_at=common.event_time(fields.get("MessageTime")),
            account=None,
            error=error_of(fields, status),
            polled=request.polled,
        )
    )
    return result
