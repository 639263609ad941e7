"""Vonage Messages API status webhooks (SMS, MMS, RCS, WhatsApp, Viber, Messenger).

Separate from `vonage` (the SMS API's `sig`-signed DLRs). Sources (PROVIDERS-NEXT.md
"Vonage Messages API"):
https://developer.vonage.com/en/messages/concepts/messages-status-callbacks,
https://developer.vonage.com/en/messages/concepts/sms-status-callbacks,
https://developer.vonage.com/en/messages/concepts/whatsapp/wa-status-callbacks,
https://developer.vonage.com/en/getting-started/concepts/webhooks#decoding-signed-webhooks,
the error list of https://github.com/Nexmo/api-specification (messages-olympus.yml).

One JSON status object per POST: `message_uuid` (the id `POST /v1/messages` returned),
`status`, `channel`, `timestamp` (ISO 8601), `to`, `from`, optional `client_ref`, `usage`,
and `error {type, title, detail, instance}` with `rejected` / `undeliverable`. For SMS,
Vonage folds the network's DLRs into these words: an expired SMS arrives as `rejected`
with code 1360, so that one becomes `expired`.

Signature: `Authorization: Bearer <JWT>`, HS256 keyed by the account's signature secret
(MSGSTATUS_VONAGE_MESSAGES_SIGNATURE_SECRET, else MSGSTATUS_VONAGE_SIGNATURE_SECRET; the
dashboard's "signature method" does not apply: always SHA-256). Claims: `iat`, `jti`,
`iss` "Vonage", `payload_hash` (hex SHA-256 of the raw body: always checked, over the bytes
received, never a re-serialization), `api_key`, optional `application_id`. The token has no
`exp`; `iat` must lie within the replay window (MSGSTATUS_VONAGE_MESSAGES_MAX_AGE seconds
when set, else MSGSTATUS_REPLAY_WINDOW) and never more than MSGSTATUS_REPLAY_WINDOW ahead.
When MSGSTATUS_VONAGE_MESSAGES_API_KEY is set, the `api_key` claim must equal it.

"In the rare case of an internal error" Vonage sends a callback without the token and
retries it, signed, when answered 5xx: a request without `Authorization` is RetryLater
(503, nothing written); a wrong token is a SignatureError (401).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Mapping
from typing import Any

from processors.config import Settings
from processors.model import CanonicalEvent, ErrorInfo, is_failure
from processors.providers import common, jwt_hmac
from processors.providers.base import (
    DeadItem,
    FramingError,
    ParseResult,
    RetryLater,
    SignatureError,
    WebhookRequest,
    constant_time_equal,
)
from processors.providers.coverage import DR, DRR, Coverage
from processors.providers.freshness import require_fresh

NAME = "vonage-messages"
CONTENT_TYPES: tuple[str, ...] = ("application/json",)
FRAMING = "json"
# The signed token, kept so the stream knows the account (`api_key`) it was signed for.
SIGNATURE_HEADERS: tuple[str, ...] = ("authorization",)
# Channels, signature and receipts as `msgstatus providers` and the README show them.
COVERAGE = Coverage(
    channels=("sms", "mms", "rcs", "whatsapp", "viber", "messenger"),
    signature="JWT HS256 in Authorization (payload_hash, iat window)",
    receipts={
        "sms": DR,
        "mms": DR,
        "rcs": DRR,
        "whatsapp": DRR,
        "viber": DRR,
        "messenger": DRR,
    },
    extra_statuses=("expired",),  # rejected with code 1360
)
SECRET = "VONAGE_MESSAGES_SIGNATURE_SECRET"
FALLBACK_SECRET = "VONAGE_SIGNATURE_SECRET"
API_KEY = "VONAGE_MESSAGES_API_KEY"
ISSUER = "Vonage"

STATUS_MAP: dict[str, str] = {
    "submitted": "sent",  # passed to the messaging provider (SMS: accepted by the SMS API)
    "delivered": "delivered",
    "read": "read",  # WhatsApp, Viber, Messenger, RCS
    "rejected": "rejected",  # with code 1360 (TTL, SMS expired): expired, see parse
    "undeliverable": "failed",  # Vonage could not reach the provider (outage)
}
IGNORED_STATUSES: frozenset[str] = frozenset()
STATUSES = common.StatusTable(STATUS_MAP, IGNORED_STATUSES)
EXPIRED_CODE = "1360"

CHANNELS: dict[str, str] = {
    "sms": "sms",
    "mms": "mms",
    "rcs": "rcs",
    "whatsapp": "whatsapp",
    "messenger": "messenger",
    "viber_service": "viber",
    "viber": "viber",
}


def _codes(category: str, title: str, *codes: str) -> dict[str, tuple[str, str]]:
    return {code: (category, title) for code in codes}


# error.title (or the fragment of error.type) -> (category, Vonage's text).
ERROR_CODES: dict[str, tuple[str, str]] = dict(
    common.check_error_table(
        {
            **_codes("rate_limited", "Throttled", "1000"),
            **_codes("unknown", "Invalid parameters", "1010", "1020", "1021", "1130", "1150"),
            **_codes("content_rejected", "Invalid template", "1022"),
            **_codes("provider_error", "Internal error", "1030"),
            **_codes("provider_error", "Communication failed", "1100"),
            **_codes("provider_error", "Provider error", "1331"),
            **_codes("invalid_number", "Invalid message: unrecognised prefix", "1040"),
            **_codes("invalid_number", "Invalid or missing msisdn", "1170"),
            **_codes("blocked", "Number barred", "1050"),
            **_codes("account_problem", "Account barred", "1060"),
            **_codes("account_problem", "Quota exceeded", "1070"),
            **_codes("account_problem", "Not enabled", "1080"),
            **_codes("account_problem", "Illegal sender address", "1120"),
            **_codes("account_problem", "Facility not allowed", "1140"),
            **_codes("account_problem", "Non-whitelisted destination", "1160"),
            **_codes("account_problem", "Facebook phone-matching fee not paid", "1350"),
            **_codes("account_problem", "Expired page access token", "1370"),
            **_codes("content_rejected", "Message too long", "1090"),
            **_codes("content_rejected", "Invalid media", "1380", "1381", "1382"),
            **_codes("unreachable", "Absent subscriber - temporary", "1180"),
            **_codes("unreachable", "Handset busy", "1220"),
            **_codes("unreachable", "Network error", "1230"),
            **_codes("unreachable", "Unroutable", "1250"),
            **_codes("unreachable", "Destination unreachable", "1260"),
            **_codes("unreachable", "Unsuitable device", "1310"),
            **_codes("invalid_number", "Absent subscriber - permanent", "1190"),
            **_codes("invalid_number", "Portability error", "1200"),
            **_codes("invalid_number", "Not part of the provider network", "1300"),
            **_codes("carrier_filtered", "Anti-spam rejection", "1210"),
            **_codes("carrier_filtered", "Subscriber age restriction", "1270"),
            **_codes("opted_out", "Illegal number (the recipient sent STOP)", "1240"),
            **_codes("rate_limited", "Too many send requests to the number", "1241"),
            **_codes("blocked", "Number blocked by carrier", "1280"),
            **_codes("blocked", "Pre-paid recipient without funds", "1290"),
            **_codes("unknown", "Message already sent", "1320"),
            **_codes("unknown", "Unknown carrier error", "1330"),
            **_codes("outside_window", "Outside the allowed window", "1340"),
            **_codes("expired", "TTL activated (message expired)", EXPIRED_CODE),
        }
    )
)
STATUS_CATEGORY: dict[str, str] = {"failed": "provider_error"}


def enabled(settings: Settings) -> bool:
    return bool(_secrets(settings))


def _secrets(settings: Settings) -> list[str]:
    return settings.secrets_for(SECRET) or settings.secrets_for(FALLBACK_SECRET)


# --- signature ------------------------------------------------------------------------


def payload_hash(body: bytes) -> str:
    """The `payload_hash` claim: lower-case hex SHA-256 of the body bytes as sent."""
    return hashlib.sha256(body).hexdigest()


def calculate_signature(
    secret: str,
    body: bytes,
    *,
    api_key: str,
    issued_at: float,
    application_id: str | None = None,
    jti: str | None = None,
) -> str:
    """The Bearer token Vonage would send for `body` (HS256, the documented claims)."""
    claims: dict[str, Any] = {
        "iat": int(issued_at),
        "jti": jti or str(uuid.uuid5(uuid.NAMESPACE_URL, payload_hash(body) + str(issued_at))),
        "iss": ISSUER,
        "payload_hash": payload_hash(body),
        "api_key": api_key,
    }
    if application_id:
        claims["application_id"] = application_id
    return jwt_hmac.encode(claims, secret)


def sign(
    body: bytes,
    secret: str,
    *,
    api_key: str = "abcd1234",
    issued_at: float | None = None,
    application_id: str | None = None,
) -> dict[str, str]:
    """Headers a genuine status callback would carry (tests and the demo sender)."""
    at = time.time() if issued_at is None else issued_at
    token = calculate_signature(
        secret, body, api_key=api_key, issued_at=at, application_id=application_id
    )
    return {"content-type": "application/json", "authorization": f"Bearer {token}"}


# Vonage retries a callback for up to a day (72 h for SMS) with the token it first signed: a
# shorter window would turn every retry after a gateway outage into a 401 and lose the
# status for good, while a replay inside the window is only a duplicate (never applied twice).
DEFAULT_MAX_AGE = 86_400.0


def _window(settings: Settings) -> float:
    """MSGSTATUS_VONAGE_MESSAGES_MAX_AGE seconds when set, else at least DEFAULT_MAX_AGE."""
    window = settings.provider_options.vonage_messages_max_age
    if window is None:
        return max(settings.replay_window, DEFAULT_MAX_AGE)
    return window


def verify(request: WebhookRequest, settings: Settings) -> None:
    """Check the Bearer JWT, its freshness, `payload_hash` and (when set) `api_key`."""
    secrets = _secrets(settings)
    if not secrets:
        raise SignatureError(f"{NAME} is not configured (MSGSTATUS_{SECRET} unset)")
    auth = (request.header("authorization") or "").strip()
    if not auth:
        raise RetryLater("no Authorization header; Vonage resends unsigned callbacks signed")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise SignatureError("Authorization is not a Bearer token")
    claims = jwt_hmac.verify(token.strip(), secrets, ("HS256",))
    if claims.get("iss", ISSUER) != ISSUER:
        raise SignatureError("JWT iss is not Vonage")
    issued = jwt_hmac.number(claims, "iat")
    require_fresh(issued, request.received_at, _window(settings), "Vonage JWT iat")
    ahead = settings.replay_window
    if issued is not None and ahead > 0 and issued - request.received_at > ahead:
        raise SignatureError("Vonage JWT iat lies in the future")
    expires = jwt_hmac.number(claims, "exp")
    if expires is not None and request.received_at > expires + 1:
        raise SignatureError("Vonage JWT expired")
    given = claims.get("payload_hash")
    if not isinstance(given, str) or not given:
        raise SignatureError("Vonage JWT without payload_hash")
    if not constant_time_equal(payload_hash(request.body), given.strip().lower()):
        raise SignatureError("body does not match the JWT payload_hash")
    expected_key = settings.secret(API_KEY)
    if expected_key is not None and not constant_time_equal(
        expected_key, common.text(claims.get("api_key"))
    ):
        raise SignatureError(f"JWT api_key is not MSGSTATUS_{API_KEY}")


# --- parsing ----------------------------------------------------------------------------


def account_of(request: WebhookRequest) -> str | None:
    """`api_key` (and `:application_id`) of the token the gateway verified and kept."""
    auth = request.header("authorization") or ""
    scheme, _, token = auth.partition(" ")
    claims = jwt_hmac.claims_of(token.strip()) if scheme.lower() == "bearer" else None
    if not claims:
        return None
    api_key = common.text(claims.get("api_key"), max_len=64)
    application = common.text(claims.get("application_id"), max_len=64)
    if api_key and application:
        return f"{api_key}:{application}"
    return api_key or application


def error_code(error: Mapping[str, Any]) -> str | None:
    """`error.title` (an integer or numeric string), else the fragment of `error.type`
    (`https://developer.nexmo.com/api-errors/messages-olympus#1000` -> "1000")."""
    title = common.to_int(error.get("title"))
    if title is not None:
        return str(title)
    kind = common.text(error.get("type"), max_len=512) or ""
    fragment = kind.rpartition("#")[2]
    return fragment if fragment.isascii() and fragment.isdigit() else None


def _error(error: Mapping[str, Any], status: str) -> ErrorInfo | None:
    code = error_code(error)
    detail = common.text(error.get("detail"))
    if code is not None:
        return common.error_info(code, ERROR_CODES, detail)
    if is_failure(status) or error:
        category = STATUS_CATEGORY.get(status, "unknown")
        return ErrorInfo(code=None, category=category, description=detail)
    return None


@common.guarded
def parse(request: WebhookRequest) -> ParseResult:
    """One status object -> at most one event; FramingError when it is no JSON object."""
    data = common.load_json(request.body)
    if not isinstance(data, dict):
        raise FramingError("body must be a Vonage Messages status object")
    result = ParseResult()
    message_id = common.text(data.get("message_uuid"), max_len=256)
    word = common.text(data.get("status"), max_len=64)
    if message_id is None:
        result.dead.append(DeadItem("status without message_uuid", data))
        return result
    if word is None:
        result.dead.append(DeadItem("status without status", data))
        return result
    status = STATUSES.resolve(word, result, data, f"unknown vonage-messages status {word[:64]!r}")
    if status is None:
        return result
    error_obj = common.mapping(data.get("error"))
    error = _error(error_obj, status)
    if status == "rejected" and error is not None and error.code == EXPIRED_CODE:
        status = "expired"  # Vonage's translation of an SMS DLR `expired`
    named = (common.text(data.get("channel"), max_len=32) or "").lower()
    result.events.append(
        CanonicalEvent(
            provider=NAME,
            provider_message_id=message_id,
            status=status,
            provider_status=word,
            channel=CHANNELS.get(named, "api"),
            observed_at=request.received_at,
            occurred_at=common.event_time(data.get("timestamp")),
            account=account_of(request),
            error=error,
            polled=request.polled,
        )
    )
    return result
