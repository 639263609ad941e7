"""Twilio Programmable Messaging status callbacks (SMS, MMS, WhatsApp, Messenger, RCS).

One callback = one status of one message, form-encoded, signed with HMAC-SHA1 over the
public URL and the sorted POST params (PROVIDERS.md "Twilio"). Callbacks carry no event
time, so order comes from the status lattice, never from arrival.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qs, urlsplit, urlunsplit

from processors.config import Settings
from processors.model import CanonicalEvent, ErrorInfo
from processors.providers import common
from processors.providers.base import (
    DeadItem,
    FramingError,
    ParseResult,
    SignatureError,
    WebhookRequest,
)
from processors.providers.coverage import DR, DRR, Coverage

NAME = "twilio"
CONTENT_TYPES: tuple[str, ...] = ("application/x-www-form-urlencoded", "application/json")
FRAMING = "form"
SIGNATURE_HEADERS: tuple[str, ...] = ("x-twilio-signature",)
# One small form (or object) per callback: a body limit of its own bounds what an unsigned
# request costs before its signature is checked (processors/ingest/gateway.py).
MAX_BODY_BYTES = 65_536
# Channels, signature and receipts as `msgstatus providers` and the README show them.
COVERAGE = Coverage(
    channels=("sms", "mms", "whatsapp", "messenger", "rcs"),
    signature="HMAC-SHA1 of URL + sorted params (X-Twilio-Signature)",
    receipts={"sms": DR, "mms": DR, "whatsapp": DRR, "messenger": DRR, "rcs": DRR},
)
SECRET = "TWILIO_AUTH_TOKEN"
ACCOUNT_SID = "TWILIO_ACCOUNT_SID"  # optional: binds the environment's token to an account

# Twilio's MessageStatus words; ours are the same names by design.
STATUS_MAP: dict[str, str] = {
    "accepted": "accepted",
    "scheduled": "scheduled",
    "queued": "queued",
    "sending": "sending",
    "sent": "sent",
    "delivered": "delivered",
    "undelivered": "undelivered",
    "failed": "failed",
    "read": "read",
    "canceled": "canceled",
    "received": "received",
}
# Known words that are not a status change for us: `receiving` is an inbound MMS still
# being fetched (`received` follows); `delivery_unknown` is Twilio's Insights-only word,
# we derive our own.
IGNORED_STATUSES: frozenset[str] = frozenset({"receiving", "delivery_unknown"})
STATUSES = common.StatusTable(STATUS_MAP, IGNORED_STATUSES)

# ErrorCode -> (category, Twilio's title), from Twilio's Error and Warning Dictionary
# (https://www.twilio.com/docs/api/errors, one page per code: .../errors/<code>): the
# errors a status callback carries for messaging (21xxx send-time refusals Twilio also
# reports by callback, 30xxx delivery, 63xxx Channels/WhatsApp). Codes whose meaning we
# could not confirm are left out on purpose: they keep their code with category
# "unknown" rather than a guessed one.
ERROR_CODES: dict[str, tuple[str, str]] = dict(
    common.check_error_table(
        {
            # -- send-time refusals (REST API errors, also reported in callbacks)
            "14107": ("rate_limited", "SMS send rate limit exceeded"),
            "21211": ("invalid_number", "Invalid 'To' phone number"),
            "21408": ("account_problem", "Permission to send to this region is not enabled"),
            "21606": ("account_problem", "The 'From' number is not a valid message-capable number"),
            "21608": ("account_problem", "The 'To' number is not verified (trial account)"),
            "21610": ("opted_out", "Attempt to send to an unsubscribed recipient"),
            "21611": ("rate_limited", "The 'From' number exceeded the maximum queued messages"),
            "21612": ("unreachable", "The 'To' number is not currently reachable via SMS"),
            "21614": ("invalid_number", "'To' number is not a valid mobile number"),
            "21617": ("content_rejected", "The concatenated message body exceeds 1600 characters"),
            # -- delivery (30xxx)
            "30001": ("rate_limited", "Queue overflow"),
            "30002": ("account_problem", "Account suspended"),
            "30003": ("unreachable", "Unreachable destination handset"),
            "30004": ("blocked", "Message blocked"),
            "30005": ("invalid_number", "Unknown destination handset"),
            "30006": ("invalid_number", "Landline or unreachable carrier"),
            "30007": ("carrier_filtered", "Message filtered"),
            "30008": ("unknown", "Unknown error"),
            "30009": ("provider_error", "Missing segment"),
            "30010": ("account_problem", "Message price exceeds max price"),
            "30011": ("content_rejected", "MMS not supported by the receiving number here"),
            "30017": ("unreachable", "Carrier network congestion"),
            "30018": ("account_problem", "Destination carrier requires sender ID pre-registration"),
            "30019": ("content_rejected", "Content size exceeds carrier limit"),
            "30021": ("provider_error", "Internal failure with messaging service orchestrator"),
            "30022": ("rate_limited", "US A2P 10DLC - Rate limits exceeded"),
            "30023": ("rate_limited", "US A2P 10DLC - Daily message cap reached"),
            "30024": ("account_problem", "Numeric sender ID not provisioned on carrier"),
            "30027": ("rate_limited", "US A2P 10DLC - T-Mobile daily message limit reached"),
            "30032": ("account_problem", "Toll-free number has not been verified"),
            "30033": ("account_problem", "US A2P 10DLC - Campaign suspended"),
            "30034": ("account_problem", "US A2P 10DLC - Message from an unregistered number"),
            "30036": ("expired", "Validity period expired"),
            "30037": ("account_problem", "Outbound messaging disabled"),
            "30038": ("content_rejected", "OTP message body filtered"),
            "30500": ("provider_error", "Twilio internal error"),
            # -- Channels: WhatsApp, Messenger, RCS (63xxx)
            "63001": ("account_problem", "Channel could not authenticate the request"),
            "63002": ("account_problem", "Channel could not find the From address"),
            "63003": ("invalid_number", "Channel could not find the To address"),
            "63005": ("content_rejected", "Channel did not accept the given content"),
            "63006": ("content_rejected", "Could not format the given content for the channel"),
            "63007": ("account_problem", "No Channel found with the specified From address"),
            "63008": ("account_problem", "Channel module misconfigured"),
            "63009": ("provider_error", "Channel provider returned an internal service error"),
            "63010": ("provider_error", "Twilio internal error processing this message"),
            "63011": ("provider_error", "Channel provider failed to process the request"),
            "63012": ("provider_error", "Channel provider returned an internal service error"),
            "63013": ("content_rejected", "Channel policy violation"),
            "63014": ("blocked", "Channel message blocked by the user"),
            "63015": ("account_problem", "Sandbox can only send to numbers that joined it"),
            "63016": ("outside_window", "Freeform message outside the WhatsApp 24 hour window"),
            "63017": ("rate_limited", "Rate limit exceeded"),
            "63018": ("rate_limited", "Rate limit exceeded for Channel"),
            "63019": ("content_rejected", "Media failed to download"),
            "63020": ("account_problem", "Business Manager account error"),
            "63021": ("content_rejected", "Channel invalid content error"),
            "63022": ("account_problem", "Invalid vname certificate"),
            "63023": ("unknown", "Channel generic error"),
            "63024": ("invalid_number", "Invalid message recipient"),
            "63027": ("content_rejected", "Template does not exist for a language and locale"),
            "63028": ("content_rejected", "Template parameter count does not match"),
            "63029": ("content_rejected", "The receiver failed to download the template"),
            "63030": ("content_rejected", "Unsupported parameter for this type of channel message"),
            "63031": ("invalid_number", "Channel message cannot have the same From and To"),
            "63032": ("carrier_filtered", "Not sent to this user because of a WhatsApp limitation"),
            "63033": ("blocked", "Recipient blocked receiving this message (deprecated)"),
            "63034": ("content_rejected", "Media exceeds the messaging provider's size limit"),
            "63036": ("unreachable", "The number cannot be reached by RCS at this time"),
            "63038": ("rate_limited", "Account exceeded the daily messages limit"),
            "63040": ("content_rejected", "Template rejected"),
            "63041": ("content_rejected", "Template paused"),
            "63042": ("content_rejected", "Template disabled"),
            "63049": ("carrier_filtered", "Meta chose not to deliver this marketing message"),
            "63051": ("account_problem", "WhatsApp Business Account is locked"),
        }
    )
)
# An error is attached to these even without an ErrorCode, so consumers see "why: unknown".
_ERROR_STATUSES = frozenset({"failed", "undelivered"})

# Address prefixes (`whatsapp:+1...`) and ChannelPrefix values -> our channel names.
_CHANNEL_PREFIXES: dict[str, str] = {
    "whatsapp": "whatsapp",
    "messenger": "messenger",
    "rcs": "rcs",
}
_DEFAULT_PORTS = {"https": 443, "http": 80}


def enabled(settings: Settings) -> bool:
    return settings.secret(SECRET) is not None


# --- signature ------------------------------------------------------------------------


def calculate_signature(
    auth_token: str,
    url: str,
    params: Mapping[str, str] | Iterable[tuple[str, str]] = (),
) -> str:
    """X-Twilio-Signature: base64(HMAC-SHA1(token, url + name+value of every param)).

    Params are sorted by name, then by value for repeated names, as Twilio's official
    validators do; a repeated name contributes every one of its values.
    """
    message = (url + signed_params(params)).encode("utf-8", "surrogatepass")
    return common.hmac_b64(auth_token, message, "sha1")


def signed_params(params: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
    """What the signature covers after the URL: name+value of every param, sorted."""
    pairs = list(params.items()) if isinstance(params, Mapping) else list(params)
    return "".join(name + value for name, value in sorted(pairs))


def body_sha256(body: bytes) -> str:
    """The hex digest Twilio puts in the `bodySHA256` query param of JSON webhooks."""
    return hashlib.sha256(body).hexdigest()


def url_variants(url: str) -> list[str]:
    """The URL as given, without its port, and with the scheme's default port.

    Twilio signs sometimes with and sometimes without an explicit port (its official
    validators try both), so a strict single-URL check rejects genuine callbacks.
    """
    return list(_url_variants(url))


@functools.lru_cache(maxsize=256)
def _url_variants(url: str) -> tuple[str, ...]:
    """url_variants(), cached: every callback to one endpoint has the same URL, and
    splitting and rebuilding it cost as much as one HMAC."""
    variants = [url]
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return tuple(variants)
    netloc = parts.netloc
    if port is not None:
        bare = netloc.rpartition(":")[0]
        variants.append(urlunsplit(parts._replace(netloc=bare)))
    elif parts.scheme in _DEFAULT_PORTS and netloc:
        with_port = f"{netloc}:{_DEFAULT_PORTS[parts.scheme]}"
        variants.append(urlunsplit(parts._replace(netloc=with_port)))
    return tuple(dict.fromkeys(variants))


def _query_param(url: str, name: str) -> str | None:
    try:
        values = parse_qs(urlsplit(url).query, keep_blank_values=True).get(name)
    except ValueError:
        return None
    return values[0] if values else None


def auth_tokens(settings: Settings, account_sid: str | None) -> list[str]:
    """The auth tokens a callback naming `account_sid` may be signed with.

    The tokens of the accounts whose `account_sid` it names (config-file accounts, and
    the environment's token when MSGSTATUS_TWILIO_ACCOUNT_SID names it); else the one
    token when only one is configured; else none: with several accounts configured a
    callback must name one of them (fail closed), or a token of one account could vouch
    for a callback that claims another.
    """
    accounts: list[tuple[str | None, str]] = []
    env_token = settings.secrets.get(SECRET)
    if env_token:
        accounts.append((settings.secrets.get(ACCOUNT_SID), env_token))
    for account in settings.provider_accounts(NAME):
        if account.get("auth_token"):
            accounts.append((account.get("account_sid"), account["auth_token"]))
    if account_sid:
        matching = [token for sid, token in accounts if sid == account_sid]
        if matching:
            return list(dict.fromkeys(matching))
    tokens = list(dict.fromkeys(token for _, token in accounts))
    return tokens if len(tokens) == 1 else []


# Fields that say which account and message a callback is about: a form that repeats
# one with different values is refused, whichever value a reader would pick.
IDENTITY_FIELDS: tuple[str, ...] = (
    "AccountSid",
    "MessageSid",
    "SmsSid",
    "MessageStatus",
    "SmsStatus",
)


def _check_identity(pairs: Iterable[tuple[str, str]]) -> None:
    seen: dict[str, str] = {}
    for name, value in pairs:
        if name in IDENTITY_FIELDS and seen.setdefault(name, value) != value:
            raise FramingError(f"form repeats {name} with different values")


def verify(request: WebhookRequest, settings: Settings) -> None:
    """Check X-Twilio-Signature; raises SignatureError, or FramingError for a form that
    repeats AccountSid (or the message's sid or status) with another value. The reason
    never holds a MAC.

    The AccountSid that selects the token is read by the same `_fields()` parse() uses,
    so the account an event is attributed to is the one whose token signed it.
    """
    if not settings.secrets_for(SECRET):
        raise SignatureError("twilio is not configured (MSGSTATUS_TWILIO_AUTH_TOKEN unset)")
    signature = request.header("x-twilio-signature")
    if not signature:
        raise SignatureError("missing X-Twilio-Signature header")
    params: list[tuple[str, str]] = []
    if common.looks_like_json(request):
        # JSON webhooks: the URL (with bodySHA256) is signed, the body is bound by its hash.
        expected_hash = _query_param(request.url, "bodySHA256")
        if not expected_hash:
            raise SignatureError("JSON body without a bodySHA256 query parameter")
        if not common.any_equal([body_sha256(request.body)], expected_hash.strip().lower()):
            raise SignatureError("body does not match the bodySHA256 query parameter")
        try:
            fields = _fields(request)
        except FramingError:
            raise SignatureError("cannot verify: body is not a JSON object") from None
    else:
        try:
            params = common.load_form(request.body)
        except FramingError:
            raise SignatureError("cannot verify: body is not a form") from None
        _check_identity(params)
        fields = _first_values(params)
    sid = common.text(fields.get("AccountSid"))
    tokens = auth_tokens(settings, sid)
    if not tokens:
        raise SignatureError(
            "AccountSid is missing or not a configured account (several Twilio accounts are "
            "configured: each needs its account_sid)"
        )
    tail = signed_params(params)  # sorted and joined once for every candidate
    candidates = [
        common.hmac_b64(token, (url + tail).encode("utf-8", "surrogatepass"), "sha1")
        for token in tokens
        for url in _url_variants(request.url)
    ]
    if not common.any_equal(candidates, signature.strip()):
        raise SignatureError("X-Twilio-Signature does not match")


def sign(url: str, body: bytes, auth_token: str, *, json_body: bool = False) -> dict[str, str]:
    """Headers a genuine Twilio request would carry (tests and the demo sender use it).

    For `json_body`, `url` must already hold `bodySHA256=<body_sha256(body)>`.
    """
    params = [] if json_body else common.load_form(body)
    content_type = "application/json" if json_body else "application/x-www-form-urlencoded"
    return {
        "content-type": content_type,
        "x-twilio-signature": calculate_signature(auth_token, url, params),
    }


# --- parsing ----------------------------------------------------------------------------


def _fields(request: WebhookRequest) -> dict[str, str]:
    """The callback's params (first value wins); FramingError if it is no form / object."""
    if common.looks_like_json(request):
        data = common.load_json(request.body)
        if not isinstance(data, dict):
            raise FramingError("JSON body must be an object of callback parameters")
        out: dict[str, str] = {}
        for key, value in data.items():
            if isinstance(value, str):
                out[key] = value
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                out[key] = str(value)
            elif isinstance(value, bool):
                out[key] = "true" if value else "false"
        return out
    return _first_values(common.load_form(request.body))


def _first_values(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for key, value in pairs:
        fields.setdefault(key, value)
    return fields


def channel_of(fields: Mapping[str, str]) -> str:
    """whatsapp/messenger/rcs by prefix, mms when media is attached, else sms."""
    prefix = (fields.get("ChannelPrefix") or "").strip().lower()
    if prefix in _CHANNEL_PREFIXES:
        return _CHANNEL_PREFIXES[prefix]
    for address in (fields.get("From", ""), fields.get("To", "")):
        scheme, sep, _ = address.partition(":")
        if sep and scheme.strip().lower() in _CHANNEL_PREFIXES:
            return _CHANNEL_PREFIXES[scheme.strip().lower()]
    media = common.to_int(fields.get("NumMedia"))
    sid = fields.get("MessageSid") or fields.get("SmsSid") or ""
    if (media is not None and media > 0) or sid.startswith("MM"):
        return "mms"
    return "sms"


def dlr_done_date(value: str | None) -> float | None:
    """`RawDlrDoneDate` (YYMMDDhhmm, UTC, from the carrier's receipt) as epoch seconds."""
    raw = (value or "").strip()
    if len(raw) != 10 or not (raw.isascii() and raw.isdigit()):
        return None
    try:
        moment = _dt.datetime.strptime(raw, "%y%m%d%H%M").replace(tzinfo=_dt.UTC)
    except ValueError:
        return None
    return moment.timestamp()


def _error(fields: Mapping[str, str], status: str) -> ErrorInfo | None:
    code = common.text(fields.get("ErrorCode"))
    description = common.text(fields.get("ErrorMessage"))
    if code is not None and code != "0":
        return common.error_info(code, ERROR_CODES, description)
    if status in _ERROR_STATUSES:
        return ErrorInfo(code=None, category="unknown", description=description)
    return None


@common.guarded
def parse(request: WebhookRequest) -> ParseResult:
    """One callback -> at most one event; FramingError only when the body is no form."""
    fields = _fields(request)
    result = ParseResult()
    sid = common.text(fields.get("MessageSid")) or common.text(fields.get("SmsSid"))
    word = common.text(fields.get("MessageStatus")) or common.text(fields.get("SmsStatus"))
    if sid is None:
        result.dead.append(DeadItem("missing MessageSid", fields))
        return result
    if word is None:
        result.dead.append(DeadItem("missing MessageStatus", fields))
        return result
    status = STATUSES.resolve(word, result, fields, f"unknown twilio MessageStatus {word[:64]!r}")
    if status is None:
        return result
    result.events.append(
        CanonicalEvent(
            provider=NAME,
            provider_message_id=sid,
            status=status,
            provider_status=word,
            channel=channel_of(fields),
            observed_at=request.received_at,
            occurred_at=dlr_done_date(fields.get("RawDlrDoneDate")),
            account=common.text(fields.get("AccountSid")),
            error=_error(fields, status),
            polled=request.polled,
        )
    )
    return result
