"""Africa's Talking SMS delivery reports.

Sources (PROVIDERS-NEXT.md "Africa's Talking"): https://docs.africastalking.com/sms/deliveryreports,
https://docs.africastalking.com/sms/notifications,
https://help.africastalking.com/articles/742491-why-did-my-messages-fail.

A form POST (`application/x-www-form-urlencoded`) per report: `id` (the `messageId` of the
send response, `ATXid_...`: our key), `status`, `phoneNumber`, `networkCode` (the telco,
e.g. 62130 MTN Nigeria), `failureReason` (with Rejected or Failed, not from every telco) and
`retryCount`. Sent, Submitted and Buffered mean the message is out (`sent`); Success is the
handset's receipt (`delivered`); Rejected (by the mobile service provider) -> `rejected`;
Failed (could not reach the handset) -> `undelivered`. Account: none documented.

Africa's Talking signs nothing and sends no configurable header: the callback URL set in the
dashboard (SMS -> SMS Callback URLs -> Delivery Reports) carries the shared token,
`.../webhooks/africastalking?token=<MSGSTATUS_AFRICASTALKING_TOKEN>` (a `token` header or
`Authorization: Bearer` is accepted too); the token is never stored.
"""

from __future__ import annotations

from collections.abc import Mapping

from processors.model import CanonicalEvent, ErrorInfo, is_failure
from processors.providers import auth, common, query_string
from processors.providers.base import DeadItem, FramingError, ParseResult, WebhookRequest
from processors.providers.coverage import DR, QUERY_TOKEN, Coverage

NAME = "africastalking"
CONTENT_TYPES: tuple[str, ...] = ("application/x-www-form-urlencoded", "application/json")
FRAMING = "form"
SIGNATURE_HEADERS: tuple[str, ...] = ()  # a shared token: never kept
# Channels, signature and receipts as `msgstatus providers` and the README show them.
COVERAGE = Coverage(channels=("sms",), signature=QUERY_TOKEN, receipts={"sms": DR})
QUERY_CREDENTIALS: tuple[str, ...] = (query_string.TOKEN_PARAM,)
SECRET = "AFRICASTALKING_TOKEN"

STATUS_MAP: dict[str, str] = {
    "sent": "sent",  # sent by Africa's Talking's network
    "submitted": "sent",  # submitted to the mobile service provider
    "buffered": "sent",  # queued by the mobile service provider
    "success": "delivered",  # delivered to the handset (final)
    "rejected": "rejected",  # rejected by the mobile service provider (final)
    "failed": "undelivered",  # could not be delivered to the handset (final)
}
IGNORED_STATUSES: frozenset[str] = frozenset()
STATUSES = common.StatusTable(STATUS_MAP, IGNORED_STATUSES)

# failureReason -> (category, meaning).
ERROR_CODES: dict[str, tuple[str, str]] = dict(
    common.check_error_table(
        {
            "InsufficientCredit": ("blocked", "Subscriber lacks airtime for a premium message"),
            "InvalidLinkId": ("account_problem", "Invalid linkId for an on-demand service"),
            "UserIsInactive": ("unreachable", "Subscriber inactive or deactivated by the MSP"),
            "UserInBlackList": ("opted_out", "Subscriber blacklisted for the service"),
            "UserAccountSuspended": ("blocked", "Subscriber account suspended"),
            "NotNetworkSubcriber": ("invalid_number", "Not a subscriber of the network"),
            "UserNotSubscribedToProduct": ("opted_out", "Not subscribed to the product"),
            "UserDoesNotExist": ("invalid_number", "Subscriber does not exist"),
            "DeliveryFailure": ("unknown", "Delivery failure"),
        }
    )
)


# The shared token: `?token=` in the callback URL, a `token` header or Bearer.
AUTH = auth.QueryToken(NAME, SECRET)
enabled, verify, sign = AUTH.exports()


# --- parsing ----------------------------------------------------------------------------


def _fields(request: WebhookRequest) -> dict[str, str]:
    if not query_string.is_query(request) and common.looks_like_json(request):
        data = common.load_json(request.body)
        if not isinstance(data, dict):
            raise FramingError("JSON body must be an object of report fields")
        return {k: t for k, v in data.items() if isinstance(k, str) and (t := common.text(v))}
    fields: dict[str, str] = {}
    for key, value in common.load_form(request.body):
        fields.setdefault(key, value)
    return fields


def error_of(fields: Mapping[str, str], status: str) -> ErrorInfo | None:
    reason = common.text(fields.get("failureReason"), max_len=64)
    if reason is not None:
        return common.error_info(reason, ERROR_CODES)
    if is_failure(status):  # not every telco says why
        return ErrorInfo(code=None, category="unknown")
    return None


@common.guarded
def parse(request: WebhookRequest) -> ParseResult:
    """One report -> at most one event; FramingError when the body is no form."""
    fields = _fields(request)
    result = ParseResult()
    message_id = common.text(fields.get("id"), max_len=128)
    word = common.text(fields.get("status"), max_len=32)
    if message_id is None:
        result.dead.append(DeadItem("delivery report without id", fields))
        return result
    if word is None:
        result.dead.append(DeadItem("delivery report without status", fields))
        return result
    status = STATUSES.lookup(word)
    if status is None:
        result.dead.append(DeadItem(f"unknown africastalking status {word!r}", fields))
        return result
    result.events.append(
        CanonicalEvent(
            provider=NAME,
            provider_message_id=message_id,
            status=status,
            provider_status=word,
            channel="sms",
            observed_at=request.received_at,
            occurred_at=None,  # reports carry no time
            account=None,
            error=error_of(fields, status),
            polled=request.polled,
        )
    )
    return result
