"""SMPP delivery receipts forwarded over HTTP (Kannel, Jasmin and similar SMS gateways).

An SMSC reports delivery in a `deliver_sm` whose short message is the receipt text of
SMPP 3.4 Appendix B:
`id:IIIIIIIIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done date:YYMMDDhhmm stat:DDDDDDD
err:E text:...`. The SMS gateway forwards it to `POST /webhooks/smpp` as a form or JSON
object holding
- the receipt text in `short_message`, `text`, `content`, `answer` (Kannel's `%A`) or
  `receipt`, and/or Jasmin's parsed fields `message_status`/`stat`, `err`, `donedate`;
- the message id in `message_id` or `id` (the id the sender was given); without one, the
  receipt's own `id:` is used.

`stat` maps per PROVIDERS.md (the SMPP message_state long names are accepted as aliases);
UNKNOWN is known and ignored. `err` is the network's error code (GSM MAP codes in
practice) -> category. `done date` -> occurred_at, read as UTC (SMSCs rarely say which zone
they use). `connector` / `smsc` / `smsc-id` names the account.

Authentication, either: HTTP Basic equal to MSGSTATUS_SMPP_USER / _PASSWORD, or header
`token` / `Authorization: Bearer` equal to MSGSTATUS_SMPP_TOKEN.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Mapping
from typing import Any

from processors.config import Settings
from processors.model import CanonicalEvent, ErrorInfo, is_failure
from processors.providers import common
from processors.providers.bandwidth import basic_credentials, check_basic
from processors.providers.bandwidth import calculate_signature as basic_header
from processors.providers.base import (
    DeadItem,
    FramingError,
    ParseResult,
    SignatureError,
    WebhookRequest,
    bearer_or_token,
    constant_time_equal,
)

NAME = "smpp"
CONTENT_TYPES: tuple[str, ...] = ("application/x-www-form-urlencoded", "application/json")
FRAMING = "form"
SIGNATURE_HEADERS: tuple[str, ...] = ()  # credentials are secrets: never kept
USER = "SMPP_USER"
PASSWORD = "SMPP_PASSWORD"
TOKEN = "SMPP_TOKEN"

STATUS_MAP: dict[str, str] = {
    "delivrd": "delivered",
    "expired": "expired",
    "deleted": "canceled",
    "undeliv": "undelivered",
    "acceptd": "sent",
    "enroute": "sent",
    "rejectd": "rejected",
    # SMPP 3.4 message_state names (5.2.28), sent by some SMSCs instead of the short forms
    "delivered": "delivered",
    "undeliverable": "undelivered",
    "accepted": "sent",
    "rejected": "rejected",
}
IGNORED_STATUSES: frozenset[str] = frozenset({"unknown"})  # message in an invalid state
STATUSES = common.StatusTable(STATUS_MAP, IGNORED_STATUSES)

# GSM MAP error codes, as SMSCs put them in `err:` (decimal). Infobip uses the same ids.
GSM_MAP_ERRORS: dict[str, tuple[str, str]] = dict(
    common.check_error_table(
        {
            "1": ("invalid_number", "Unknown subscriber"),
            "5": ("invalid_number", "Unidentified subscriber"),
            "6": ("unreachable", "Absent subscriber for SM"),
            "9": ("blocked", "Illegal subscriber"),
            "11": ("blocked", "Teleservice not provisioned"),
            "12": ("blocked", "Illegal equipment"),
            "13": ("blocked", "Call barred"),
            "21": ("unreachable", "Facility not supported"),
            "27": ("unreachable", "Absent subscriber"),
            "31": ("unreachable", "Subscriber busy for MT SMS"),
            "32": ("unreachable", "SM delivery failure"),
            "33": ("unreachable", "Message waiting list full"),
            "34": ("provider_error", "System failure"),
            "35": ("provider_error", "Data missing"),
            "36": ("provider_error", "Unexpected data value"),
        }
    )
)
ERROR_CODES = GSM_MAP_ERRORS
STATUS_CATEGORY: dict[str, str] = {"expired": "expired"}

TEXT_FIELDS = ("short_message", "text", "content", "answer", "receipt")
ID_FIELDS = ("message_id", "id", "msgid")
ACCOUNT_FIELDS = ("connector", "smsc", "smsc-id", "smsc_id")
_RECEIPT = re.compile(
    r"(?:^|(?<=\s))(?P<key>id|sub|dlvrd|submit date|done date|stat|err|text)\s*:\s*"
    r"(?P<value>.*?)(?=\s+(?:id|sub|dlvrd|submit date|done date|stat|err|text)\s*:|\s*$)",
    re.IGNORECASE | re.DOTALL,
)
MAX_RECEIPT = 4096


def enabled(settings: Settings) -> bool:
    basic = settings.secret(USER) is not None and settings.secret(PASSWORD) is not None
    return basic or settings.secret(TOKEN) is not None


# --- authentication -------------------------------------------------------------------


def calculate_signature(user: str, password: str) -> str:
    """The `Authorization` header value for Basic: `Basic base64(user:password)`."""
    return basic_header(user, password)


def verify(request: WebhookRequest, settings: Settings) -> None:
    """Basic = MSGSTATUS_SMPP_USER/_PASSWORD, or token/Bearer = MSGSTATUS_SMPP_TOKEN."""
    user, password, token = settings.secret(USER), settings.secret(PASSWORD), settings.secret(TOKEN)
    has_basic = user is not None and password is not None
    if not has_basic and token is None:
        raise SignatureError(
            "smpp is not configured (MSGSTATUS_SMPP_TOKEN or MSGSTATUS_SMPP_USER/_PASSWORD unset)"
        )
    if basic_credentials(request) is not None:
        if user is None or password is None:
            raise SignatureError("Basic credentials given but MSGSTATUS_SMPP_USER is not set")
        check_basic(request, user, password, "SMPP")
        return
    given = bearer_or_token(request)
    if token is None or not given:
        raise SignatureError("missing `Authorization: Basic`, `token` or Bearer credential")
    if not constant_time_equal(token, given):
        raise SignatureError("SMPP gateway token does not match")


def sign(url: str, body: bytes, token: str, *, json_body: bool = False) -> dict[str, str]:
    """Headers an SMS gateway's token-authenticated receipt would carry (tests, demo)."""
    del url, body
    ctype = "application/json" if json_body else "application/x-www-form-urlencoded"
    return {"content-type": ctype, "token": token}


# --- parsing ----------------------------------------------------------------------------


def parse_receipt(receipt: str) -> dict[str, str]:
    """The receipt text's fields, lower-case keys (`submit date`, `done date`, ...)."""
    fields: dict[str, str] = {}
    for match in _RECEIPT.finditer(receipt[:MAX_RECEIPT]):
        key = match.group("key").lower()
        key = " ".join(key.split())
        fields.setdefault(key, match.group("value").strip())
    return fields


def receipt_time(value: str | None) -> float | None:
    """`done date` (YYMMDDhhmm or YYMMDDhhmmss, read as UTC) as epoch seconds."""
    raw = (value or "").strip()
    if len(raw) not in (10, 12) or not (raw.isascii() and raw.isdigit()):
        return None
    fmt = "%y%m%d%H%M%S" if len(raw) == 12 else "%y%m%d%H%M"
    try:
        moment = _dt.datetime.strptime(raw, fmt).replace(tzinfo=_dt.UTC)
    except ValueError:
        return None
    return moment.timestamp()


def error_of(code: str | None, status: str) -> ErrorInfo | None:
    raw = common.text(code, max_len=16)
    key = str(int(raw)) if raw is not None and raw.isascii() and raw.isdigit() else raw
    if key is None or key == "0":
        if is_failure(status):
            return ErrorInfo(code=None, category=STATUS_CATEGORY.get(status, "unknown"))
        return None
    return common.error_info(key, ERROR_CODES)


def _scalar(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (str, int)):
        return str(value)
    return None


def _fields(request: WebhookRequest) -> dict[str, str]:
    if common.looks_like_json(request):
        data = common.load_json(request.body)
        if not isinstance(data, dict):
            raise FramingError("JSON body must be an object of receipt fields")
        return {
            key.lower(): text
            for key, value in data.items()
            if isinstance(key, str) and (text := _scalar(value)) is not None
        }
    fields: dict[str, str] = {}
    for key, value in common.load_form(request.body):
        fields.setdefault(key.lower(), value)
    return fields


def _first(fields: Mapping[str, str], names: tuple[str, ...], max_len: int = 256) -> str | None:
    for name in names:
        value = common.text(fields.get(name), max_len=max_len)
        if value is not None:
            return value
    return None


@common.guarded
def parse(request: WebhookRequest) -> ParseResult:
    """One receipt -> at most one event; FramingError when the body is no form/object."""
    fields = _fields(request)
    result = ParseResult()
    text = _first(fields, TEXT_FIELDS, max_len=MAX_RECEIPT)
    receipt = parse_receipt(text) if text else {}
    message_id = _first(fields, ID_FIELDS) or common.text(receipt.get("id"), max_len=256)
    word = common.text(receipt.get("stat"), max_len=32) or _first(
        fields, ("message_status", "stat"), max_len=32
    )
    if message_id is None:
        result.dead.append(DeadItem("receipt without a message id", fields))
        return result
    if word is None:
        result.dead.append(DeadItem("receipt without stat", fields))
        return result
    status = STATUSES.lookup(word)
    if status is None:
        if STATUSES.is_ignored(word):
            result.ignored += 1
        else:
            result.dead.append(DeadItem(f"unknown SMPP receipt stat {word!r}", fields))
        return result
    err = receipt.get("err") if "err" in receipt else fields.get("err")
    done = receipt.get("done date") or fields.get("donedate") or fields.get("done_date")
    result.events.append(
        CanonicalEvent(
            provider=NAME,
            provider_message_id=message_id,
            status=status,
            provider_status=word,
            channel="sms",
            observed_at=request.received_at,
            occurred_at=receipt_time(done),
            account=_first(fields, ACCOUNT_FIELDS),
            error=error_of(err, status),
            polled=request.polled,
        )
    )
    return result
