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

Two more shapes real gateways send:
- Jasmin level-1 receipts (dlr-level 1, and the first of two with level 3) carry the
  SMSC's answer to `submit_sm` instead of a receipt: `message_status=ESME_ROK` (the SMSC
  accepted it: `sent`) or an `ESME_R*` command status (it refused it: `failed`, category
  by the SMPP 3.4 command status table below). Jasmin re-sends every receipt (and MO)
  until the answer body is exactly `ACK/Jasmin`, so that is our success answer
  (https://docs.jasminsms.com/en/latest/apis/ja-http/receiving-dlr.html).
- Kannel `dlr-url`s usually carry the numeric DLR type (`%d`) in the query string,
  e.g. `...?id=<own id>&type=%d&answer=%A` (Kannel user guide, "Delivery Reports":
  https://www.kannel.org/download/1.4.5/userguide-1.4.5/userguide.html#DELIVERY-REPORTS):
  1 delivery success, 2 delivery failure, 4 message buffered, 8 smsc submit, 16 smsc
  reject, 32 smsc intermediate notification (no change). The number is read from `type`,
  `dlr-type`, `dlr_type`, `dlr` or `status`; a receipt text with `stat:` wins over it
  (it says more, e.g. EXPIRED rather than "failure"). Kannel's `%A` of an SMSC reject is
  `NACK/0x<command status>/<text>`: the command status gives the category.
Kannel fetches the dlr-url with GET, so GET receipts are accepted: the query string is
the receipt.

Authentication, either: HTTP Basic equal to MSGSTATUS_SMPP_USER / _PASSWORD, or the token
MSGSTATUS_SMPP_TOKEN as header `token`, `Authorization: Bearer` or `?token=` in the URL
(a dlr-url cannot carry headers; the token parameter is never stored).
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Mapping
from typing import Any

from processors.config import Settings
from processors.model import CanonicalEvent, ErrorInfo, is_failure
from processors.providers import common, query_string
from processors.providers.auth import basic_credentials, basic_header, check_basic
from processors.providers.base import (
    DeadItem,
    FramingError,
    ParseResult,
    SignatureError,
    WebhookRequest,
    constant_time_equal,
)
from processors.providers.coverage import DR, Coverage

NAME = "smpp"
CONTENT_TYPES: tuple[str, ...] = ("application/x-www-form-urlencoded", "application/json")
FRAMING = "form"
SIGNATURE_HEADERS: tuple[str, ...] = ()  # credentials are secrets: never kept
# One small form (or object) per callback: a body limit of its own bounds what an unsigned
# request costs before its signature is checked (processors/ingest/gateway.py).
MAX_BODY_BYTES = 65_536
# Channels, signature and receipts as `msgstatus providers` and the README show them.
COVERAGE = Coverage(
    channels=("sms",),
    signature="HTTP Basic or shared token (`?token=`, `token` header or Bearer)",
    receipts={"sms": DR},
    extra_statuses=("failed",),  # Jasmin level-1 ESME_R* refusals
)
HTTP_METHODS: tuple[str, ...] = ("POST", "GET")  # Kannel's dlr-url is fetched with GET
QUERY_CREDENTIALS: tuple[str, ...] = (query_string.TOKEN_PARAM,)
# Jasmin retries a receipt until the body is exactly this; Kannel ignores the body.
SUCCESS_ANSWER: tuple[bytes, str] = (b"ACK/Jasmin", "text/plain")
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

# Jasmin level-1 receipts: the SMSC's submit_sm_resp command status (SMPP 3.4, 5.1.3).
ESME_OK = "ESME_ROK"
# name -> (command status, category, SMPP 3.4's description); any other ESME_R* is still
# a refusal (`failed`, category unknown).
ESME_ERRORS: dict[str, tuple[int, str, str]] = {
    "ESME_RINVMSGLEN": (0x01, "content_rejected", "Message length is invalid"),
    "ESME_RINVCMDLEN": (0x02, "provider_error", "Command length is invalid"),
    "ESME_RINVCMDID": (0x03, "provider_error", "Invalid command ID"),
    "ESME_RINVBNDSTS": (0x04, "provider_error", "Incorrect bind status for given command"),
    "ESME_RALYBND": (0x05, "provider_error", "ESME already in bound state"),
    "ESME_RINVPRTFLG": (0x06, "provider_error", "Invalid priority flag"),
    "ESME_RINVREGDLVFLG": (0x07, "provider_error", "Invalid registered delivery flag"),
    "ESME_RSYSERR": (0x08, "provider_error", "System error"),
    "ESME_RINVSRCADR": (0x0A, "account_problem", "Invalid source address"),
    "ESME_RINVDSTADR": (0x0B, "invalid_number", "Invalid destination address"),
    "ESME_RINVMSGID": (0x0C, "provider_error", "Message ID is invalid"),
    "ESME_RBINDFAIL": (0x0D, "account_problem", "Bind failed"),
    "ESME_RINVPASWD": (0x0E, "account_problem", "Invalid password"),
    "ESME_RINVSYSID": (0x0F, "account_problem", "Invalid system ID"),
    "ESME_RMSGQFUL": (0x14, "rate_limited", "Message queue full"),
    "ESME_RINVSERTYP": (0x15, "provider_error", "Invalid service type"),
    "ESME_RINVNUMDESTS": (0x33, "provider_error", "Invalid number of destinations"),
    "ESME_RINVDESTFLAG": (0x40, "provider_error", "Destination flag is invalid"),
    "ESME_RINVESMCLASS": (0x43, "provider_error", "Invalid esm_class field data"),
    "ESME_RSUBMITFAIL": (0x45, "provider_error", "submit_sm or submit_multi failed"),
    "ESME_RINVSRCTON": (0x48, "account_problem", "Invalid source address TON"),
    "ESME_RINVSRCNPI": (0x49, "account_problem", "Invalid source address NPI"),
    "ESME_RINVDSTTON": (0x50, "invalid_number", "Invalid destination address TON"),
    "ESME_RINVDSTNPI": (0x51, "invalid_number", "Invalid destination address NPI"),
    "ESME_RINVSYSTYP": (0x53, "account_problem", "Invalid system_type field"),
    "ESME_RTHROTTLED": (0x58, "rate_limited", "Throttling error (message limits exceeded)"),
    "ESME_RINVSCHED": (0x61, "content_rejected", "Invalid scheduled delivery time"),
    "ESME_RINVEXPIRY": (0x62, "content_rejected", "Invalid message validity period"),
    "ESME_RX_T_APPN": (0x64, "provider_error", "ESME receiver temporary app error"),
    "ESME_RX_P_APPN": (0x65, "provider_error", "ESME receiver permanent app error"),
    "ESME_RX_R_APPN": (0x66, "carrier_filtered", "ESME receiver reject message error"),
    "ESME_RINVOPTPARSTREAM": (0xC0, "provider_error", "Error in the optional part of the PDU"),
    "ESME_ROPTPARNOTALLWD": (0xC1, "provider_error", "Optional parameter not allowed"),
    "ESME_RINVPARLEN": (0xC2, "provider_error", "Invalid parameter length"),
    "ESME_RMISSINGOPTPARAM": (0xC3, "provider_error", "Expected optional parameter missing"),
    "ESME_RINVOPTPARAMVAL": (0xC4, "provider_error", "Invalid optional parameter value"),
    "ESME_RDELIVERYFAILURE": (0xFE, "unknown", "Delivery failure"),
    "ESME_RUNKNOWNERR": (0xFF, "unknown", "Unknown error"),
}
common.check_error_table({name: (cat, text) for name, (_, cat, text) in ESME_ERRORS.items()})
ESME_BY_STATUS: dict[int, str] = {code: name for name, (code, _, _) in ESME_ERRORS.items()}

# Kannel's numeric DLR types (`%d`) -> canonical; 32 (intermediate) carries no status.
KANNEL_TYPES: dict[str, str] = {
    "1": "delivered",  # delivery success
    "2": "undelivered",  # delivery failure
    "4": "sent",  # message buffered (the SMSC holds it, e.g. handset off)
    "8": "sent",  # smsc submit: accepted by the SMSC
    "16": "rejected",  # smsc reject
}
KANNEL_IGNORED: frozenset[str] = frozenset({"32"})
KANNEL_TYPE_FIELDS = ("type", "dlr-type", "dlr_type", "dlr", "status")
_NACK = re.compile(r"^\s*NACK/(?:0x)?(?P<status>[0-9A-Fa-f]{1,8})(?:/(?P<text>.*))?$", re.DOTALL)

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
    given = query_string.shared_token(request)
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
    if not query_string.is_query(request) and common.looks_like_json(request):
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


def esme_error(name: str) -> ErrorInfo:
    """The ErrorInfo of a refused submit_sm (`ESME_R*`); unlisted names keep their code."""
    code = name.upper()
    _, category, text = ESME_ERRORS.get(code, (0, "unknown", None))
    return ErrorInfo(code=code, category=category, description=text)


def nack_error(answer: str | None) -> ErrorInfo | None:
    """Kannel's `%A` for an SMSC reject, `NACK/0x0000000b/Invalid Destination Address`."""
    match = _NACK.match(answer or "")
    if match is None:
        return None
    status = int(match.group("status"), 16)
    name = ESME_BY_STATUS.get(status)
    detail = common.text(match.group("text"), max_len=256)
    if name is None:
        return ErrorInfo(code=f"0x{status:08x}", category="unknown", description=detail)
    return ErrorInfo(
        code=name, category=ESME_ERRORS[name][1], description=detail or ESME_ERRORS[name][2]
    )


def kannel_type(fields: Mapping[str, str]) -> str | None:
    """The numeric DLR type (`%d`) when one of the usual parameters holds a number."""
    for name in KANNEL_TYPE_FIELDS:
        value = common.to_int(fields.get(name))
        if value is not None:
            return str(value)
    return None


def _esme(
    result: ParseResult, request: WebhookRequest, fields: dict[str, str], message_id: str, word: str
) -> None:
    """A Jasmin level-1 receipt: the SMSC accepted (`ESME_ROK`) or refused the message."""
    accepted = word.upper() == ESME_OK
    result.events.append(
        CanonicalEvent(
            provider=NAME,
            provider_message_id=message_id,
            status="sent" if accepted else "failed",
            provider_status=word.upper(),
            channel="sms",
            observed_at=request.received_at,
            account=_first(fields, ACCOUNT_FIELDS),
            error=None if accepted else esme_error(word),
            polled=request.polled,
        )
    )


def _kannel(
    result: ParseResult, request: WebhookRequest, fields: dict[str, str], message_id: str, kind: str
) -> None:
    """A Kannel receipt known only by its numeric DLR type."""
    status = KANNEL_TYPES.get(kind)
    if status is None:
        if kind in KANNEL_IGNORED:
            result.ignored += 1
        else:
            result.dead.append(DeadItem(f"unknown Kannel DLR type {kind!r}", fields))
        return
    error = None
    if is_failure(status):
        answer = _first(fields, ("answer",), max_len=MAX_RECEIPT)  # Kannel's `%A`
        error = nack_error(answer) or ErrorInfo(code=None, category="unknown")
    result.events.append(
        CanonicalEvent(
            provider=NAME,
            provider_message_id=message_id,
            status=status,
            provider_status=kind,
            channel="sms",
            observed_at=request.received_at,
            account=_first(fields, ACCOUNT_FIELDS),
            error=error,
            polled=request.polled,
        )
    )


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
    if word is not None and word.upper().startswith("ESME_"):
        _esme(result, request, fields, message_id, word)
        return result
    if word is None and (kind := kannel_type(fields)) is not None:
        _kannel(result, request, fields, message_id, kind)
        return result
    if word is None:
        result.dead.append(DeadItem("receipt without stat", fields))
        return result
    status = STATUSES.resolve(word, result, fields, f"unknown SMPP receipt stat {word!r}")
    if status is None:
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
