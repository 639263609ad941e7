"""Vonage (Nexmo) SMS API delivery receipts, signed.

A DLR carries `messageId`, `status`, `err-code`, `scts` (YYMMDDHHMM, when the carrier
reported), `msisdn`, `to`, `network-code`, `api-key`, `message-timestamp`, and, for signed
webhooks, `timestamp`, `nonce` and `sig` (Vonage "Delivery receipts", "Signing
messages").

The DLR webhook method may be GET (the query string is the receipt: the gateway stores it
byte for byte as the record's body), POST (form, `application/x-www-form-urlencoded`) or
POST-JSON (`application/json`).

Signature (`sig` param): every other param, sorted by name, as `&name=value` with `&`
and `=` in values replaced by `_` (Vonage adds a `timestamp` and a `nonce` to what it
signs: the timestamp must be within MSGSTATUS_REPLAY_WINDOW of when the gateway received
the receipt, and the gateway remembers nonces), then
- `md5hash`: hex MD5 of that string followed by the signature secret (legacy);
- `md5`, `sha1`, `sha256`, `sha512`: hex HMAC of that string keyed by the secret.
The method is MSGSTATUS_VONAGE_SIGNATURE_METHOD (default sha256), the secret
MSGSTATUS_VONAGE_SIGNATURE_SECRET; when MSGSTATUS_VONAGE_API_KEY is set, the receipt's
`api-key` must equal it too.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlencode

import orjson

from processors.config import Settings
from processors.model import CanonicalEvent, ErrorInfo, is_failure
from processors.providers import common
from processors.providers.base import (
    DeadItem,
    FramingError,
    ParseResult,
    SignatureError,
    WebhookRequest,
    constant_time_equal,
)
from processors.providers.coverage import DR, Coverage
from processors.providers.freshness import require_fresh
from processors.providers.replay import ReplayKey, usable_key, window_ttl

NAME = "vonage"
CONTENT_TYPES: tuple[str, ...] = ("application/json", "application/x-www-form-urlencoded")
FRAMING = "json"
SIGNATURE_HEADERS: tuple[str, ...] = ()  # the signature travels inside the body
# One small form (or object) per callback: a body limit of its own bounds what an unsigned
# request costs before its signature is checked (processors/ingest/gateway.py).
MAX_BODY_BYTES = 65_536
# Channels, signature and receipts as `msgstatus providers` and the README show them.
COVERAGE = Coverage(
    channels=("sms",), signature="signed params (`sig`, HMAC or MD5)", receipts={"sms": DR}
)
HTTP_METHODS: tuple[str, ...] = ("POST", "GET")  # Vonage's default DLR method is GET
SECRET = "VONAGE_SIGNATURE_SECRET"
API_KEY = "VONAGE_API_KEY"
DEFAULT_METHOD = "sha256"
SIG_PARAM = "sig"
TIMESTAMP_PARAM = "timestamp"  # signed: unix seconds when Vonage made the request
NONCE_PARAM = "nonce"
HMAC_METHODS: frozenset[str] = frozenset({"md5", "sha1", "sha256", "sha512"})
METHODS: frozenset[str] = HMAC_METHODS | {"md5hash"}  # config.SIG_METHODS, checked at start

STATUS_MAP: dict[str, str] = {
    "accepted": "sent",  # accepted by the mobile network
    "buffered": "sent",  # held by the network, delivery still being tried
    "delivered": "delivered",
    "expired": "expired",
    "failed": "undelivered",  # the network tried and could not deliver
    "rejected": "rejected",
}
IGNORED_STATUSES: frozenset[str] = frozenset({"unknown"})  # no information: no change
STATUSES = common.StatusTable(STATUS_MAP, IGNORED_STATUSES)

# err-code -> (category, Vonage's title) from Vonage's DLR error code table.
ERROR_CODES: dict[str, tuple[str, str]] = dict(
    common.check_error_table(
        {
            "1": ("unknown", "Unknown"),
            "2": ("unreachable", "Absent Subscriber - Temporary"),
            "3": ("invalid_number", "Absent Subscriber - Permanent"),
            "4": ("blocked", "Call Barred by User"),
            "5": ("unreachable", "Portability Error"),
            "6": ("carrier_filtered", "Anti-Spam Rejection"),
            "7": ("unreachable", "Handset Busy"),
            "8": ("provider_error", "Network Error"),
            "9": ("invalid_number", "Illegal Number"),
            "10": ("content_rejected", "Illegal Message"),
            "11": ("unreachable", "Unroutable"),
            "12": ("unreachable", "Destination Unreachable"),
            "13": ("blocked", "Subscriber Age Restriction"),
            "14": ("blocked", "Number Blocked by Carrier"),
            "15": ("blocked", "Prepaid Insufficient Funds"),
            "16": ("rate_limited", "Gateway Quota Exceeded"),
            "50": ("account_problem", "Entity Filter"),
            "51": ("account_problem", "Header Filter"),
            "52": ("content_rejected", "Content Filter"),
            "53": ("opted_out", "Consent Filter"),
            "54": ("account_problem", "Regulation Error"),
            "99": ("unknown", "General Error"),
        }
    )
)
# A failure without an err-code: the status word alone says this much.
STATUS_CATEGORY: dict[str, str] = {"expired": "expired"}


def enabled(settings: Settings) -> bool:
    return settings.secret(SECRET) is not None


# --- signature ------------------------------------------------------------------------


def signing_string(params: Mapping[str, str] | Iterable[tuple[str, str]]) -> bytes:
    """`&name=value` for every param but `sig`, sorted by name; `&`/`=` in values -> `_`."""
    pairs = params.items() if isinstance(params, Mapping) else params
    fields = {name: value for name, value in pairs if name != SIG_PARAM}
    out = "".join(
        f"&{name}={fields[name].replace('&', '_').replace('=', '_')}" for name in sorted(fields)
    )
    return out.encode("utf-8")


def calculate_signature(
    secret: str,
    params: Mapping[str, str] | Iterable[tuple[str, str]],
    method: str = DEFAULT_METHOD,
) -> str:
    """The `sig` value (lower-case hex) for these params."""
    method = method.strip().lower()
    message = signing_string(params)
    if method == "md5hash":
        return hashlib.md5(message + secret.encode("utf-8")).hexdigest()
    if method not in HMAC_METHODS:
        raise ValueError(f"unknown Vonage signature method {method!r}")
    return hmac.new(secret.encode("utf-8"), message, getattr(hashlib, method)).hexdigest()


def _scalar(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return None


def params_of(request: WebhookRequest) -> dict[str, str]:
    """The receipt's params (first value wins; JSON scalars as text); FramingError else."""
    if common.looks_like_json(request):
        data = common.load_json(request.body)
        if not isinstance(data, dict):
            raise FramingError("JSON body must be an object of receipt fields")
        return {
            key: text
            for key, value in data.items()
            if isinstance(key, str) and (text := _scalar(value)) is not None
        }
    fields: dict[str, str] = {}
    for key, value in common.load_form(request.body):
        fields.setdefault(key, value)
    return fields


def verify(request: WebhookRequest, settings: Settings) -> None:
    """Check `sig`, the signed `timestamp` against the replay window, and `api-key` when
    configured; raises SignatureError only."""
    secret = settings.secret(SECRET)
    if secret is None:
        raise SignatureError("vonage is not configured (MSGSTATUS_VONAGE_SIGNATURE_SECRET unset)")
    method = settings.provider_options.vonage_signature_method
    try:
        params = params_of(request)
    except FramingError:
        raise SignatureError("cannot verify: body is not a form or JSON object") from None
    given = params.get(SIG_PARAM)
    if not given:
        raise SignatureError("missing `sig` parameter (is webhook signing enabled at Vonage?)")
    expected = calculate_signature(secret, params, method)
    if not constant_time_equal(expected, given.strip().lower()):
        raise SignatureError("Vonage `sig` does not match")
    require_fresh(
        signed_time(params.get(TIMESTAMP_PARAM)),
        request.received_at,
        settings.replay_window,
        "vonage",
    )
    nonce = params.get(NONCE_PARAM)
    if nonce is not None and usable_key(nonce) is None:
        raise SignatureError("`nonce` must be printable ASCII, at most 256 characters")
    api_key = settings.secret(API_KEY)
    if api_key is not None and not constant_time_equal(api_key, params.get("api-key")):
        raise SignatureError("receipt `api-key` is not MSGSTATUS_VONAGE_API_KEY")


def signed_time(value: str | None) -> float | None:
    """The signed `timestamp` (unix seconds) as a number, None when absent or not one."""
    raw = (value or "").strip()
    if not raw or len(raw) > 12 or not (raw.isascii() and raw.isdigit()):
        return None
    return float(raw)


def replay_key(request: WebhookRequest, settings: Settings) -> ReplayKey | None:
    """The signed `nonce`: Vonage sends each once; a copy is a retry or a replay."""
    try:
        key = usable_key(params_of(request).get(NONCE_PARAM))
    except FramingError:
        return None
    return ReplayKey(key, window_ttl(settings.replay_window)) if key else None


def sign(
    url: str,
    body: bytes,
    secret: str,
    method: str = DEFAULT_METHOD,
    *,
    json_body: bool = False,
    timestamp: int | None = None,
) -> tuple[dict[str, str], bytes]:
    """(headers, signed body): Vonage signs inside the body, so the body gains `sig`.

    `body` is the unsigned receipt (form or JSON object, per `json_body`); `timestamp`,
    when given, replaces the receipt's `timestamp` (as Vonage stamps each request). Tests
    and the demo sender use this.
    """
    del url
    if json_body:
        data = orjson.loads(body)
        data.pop(SIG_PARAM, None)
        if timestamp is not None:
            data[TIMESTAMP_PARAM] = str(timestamp)
        params = {k: text for k, v in data.items() if (text := _scalar(v)) is not None}
        data[SIG_PARAM] = calculate_signature(secret, params, method)
        return {"content-type": "application/json"}, orjson.dumps(data)
    pairs = [(k, v) for k, v in common.load_form(body) if k != SIG_PARAM]
    if timestamp is not None:
        pairs = [(k, v) for k, v in pairs if k != TIMESTAMP_PARAM]
        pairs.append((TIMESTAMP_PARAM, str(timestamp)))
    signed = [*pairs, (SIG_PARAM, calculate_signature(secret, dict(pairs), method))]
    return {"content-type": "application/x-www-form-urlencoded"}, urlencode(signed).encode()


# --- parsing ----------------------------------------------------------------------------


def scts_time(value: str | None) -> float | None:
    """`scts` (YYMMDDHHMM, UTC) as epoch seconds; None when absent or not a date."""
    raw = (value or "").strip()
    if len(raw) != 10 or not (raw.isascii() and raw.isdigit()):
        return None
    try:
        moment = _dt.datetime.strptime(raw, "%y%m%d%H%M").replace(tzinfo=_dt.UTC)
    except ValueError:
        return None
    return moment.timestamp()


def error_of(code: str | None, status: str) -> ErrorInfo:
    key = common.text(code, max_len=16)
    if key is not None and key.isascii() and key.isdigit():
        key = str(int(key))  # "006" and "6" are the same code
    if key is None or key == "0":
        return ErrorInfo(code=None, category=STATUS_CATEGORY.get(status, "unknown"))
    return common.error_info(key, ERROR_CODES)


@common.guarded
def parse(request: WebhookRequest) -> ParseResult:
    """One receipt -> at most one event; FramingError when the body is no form/object."""
    fields = params_of(request)
    result = ParseResult()
    message_id = common.text(fields.get("messageId"), max_len=256) or common.text(
        fields.get("message-id"), max_len=256
    )
    word = common.text(fields.get("status"), max_len=64)
    if message_id is None:
        result.dead.append(DeadItem("missing messageId", fields))
        return result
    if word is None:
        result.dead.append(DeadItem("missing status", fields))
        return result
    status = STATUSES.resolve(word, result, fields, f"unknown vonage status {word[:64]!r}")
    if status is None:
        return result
    code = fields.get("err-code")
    error = None
    if is_failure(status):
        error = error_of(code, status)
    elif common.text(code) not in (None, "0", "000"):
        error = error_of(code, status)  # a code on a non-failure is kept, never invented
    result.events.append(
        CanonicalEvent(
            provider=NAME,
            provider_message_id=message_id,
            status=status,
            provider_status=word,
            channel="sms",
            observed_at=request.received_at,
            occurred_at=scts_time(fields.get("scts")),
            account=common.text(fields.get("api-key")),
            error=error,
            polled=request.polled,
        )
    )
    return result
