"""360dialog (WhatsApp Business API partner): forwarded WhatsApp status webhooks.

360dialog forwards WhatsApp's own webhook bodies (PROVIDERS.md "Meta ... (and
360dialog)"), in one of two shapes:

- Cloud API: `{"object": "whatsapp_business_account", "entry": [{"changes": [{"value":
  {"metadata", "statuses": [...]}}]}]}`, exactly Meta's;
- On-premise API (older channels): the `value` object at top level,
  `{"statuses": [...], "messages"?: [...], "errors"?: [...]}`.

Both are parsed by meta.py's WhatsApp functions (`meta.whatsapp_entries`,
`meta.whatsapp_value`), so the status words, the known-but-ignored ones and the error
codes are Meta's, and the events are named `360dialog`.

Authentication: 360dialog signs nothing. Configure the webhook with a shared secret and
send it either as header `D360-API-KEY: <token>` (360dialog's own header name), as
header `token: <token>`, or as `Authorization: Bearer <token>`; it must equal
MSGSTATUS_360DIALOG_TOKEN (constant-time compare). The token proves the sender only,
not the body.
"""

from __future__ import annotations

from typing import Any

from processors.config import Settings
from processors.providers import common, meta
from processors.providers.base import (
    FramingError,
    ParseResult,
    SignatureError,
    WebhookRequest,
    bearer_or_token,
    constant_time_equal,
)
from processors.providers.coverage import DRR, Coverage

NAME = "360dialog"
CONTENT_TYPES: tuple[str, ...] = ("application/json",)
FRAMING = "json"
SIGNATURE_HEADERS: tuple[str, ...] = ()  # the credential is the token itself: never kept
# Channels, signature and receipts as `msgstatus providers` and the README show them.
COVERAGE = Coverage(
    channels=("whatsapp",),
    signature="shared token (D360-API-KEY, `token` or Bearer)",
    receipts={"whatsapp": DRR},
)
SECRET = "360DIALOG_TOKEN"
API_KEY_HEADER = "d360-api-key"

# The mapping is WhatsApp's; re-exported so this module reads like every other one.
STATUS_MAP = meta.STATUS_MAP
IGNORED_STATUSES = meta.IGNORED_STATUSES
STATUSES = meta.STATUSES
ERROR_CODES = meta.ERROR_CODES
CLOUD_OBJECT = "whatsapp_business_account"


def enabled(settings: Settings) -> bool:
    return settings.secret(SECRET) is not None


# --- authentication -------------------------------------------------------------------


def calculate_signature(token: str) -> str:
    """The `D360-API-KEY` header value: 360dialog proves nothing about the body."""
    return token


def verify(request: WebhookRequest, settings: Settings) -> None:
    """`D360-API-KEY`, `token` or `Authorization: Bearer` must equal the configured token."""
    expected = settings.secret(SECRET)
    if expected is None:
        raise SignatureError("360dialog is not configured (MSGSTATUS_360DIALOG_TOKEN unset)")
    given = request.header(API_KEY_HEADER) or bearer_or_token(request)
    if not given:
        raise SignatureError("missing D360-API-KEY, `token` or `Authorization: Bearer` header")
    if not constant_time_equal(expected, given.strip()):
        raise SignatureError("360dialog token does not match")


def sign(url: str, body: bytes, token: str) -> dict[str, str]:
    """Headers a 360dialog-forwarded webhook would carry (tests and the demo use it)."""
    del url, body
    return {"content-type": "application/json", API_KEY_HEADER: calculate_signature(token)}


# --- parsing ----------------------------------------------------------------------------


@common.guarded
def parse(request: WebhookRequest) -> ParseResult:
    """Cloud API or on-premise body -> one event per status; FramingError otherwise."""
    data: Any = common.load_json(request.body)
    if not isinstance(data, dict):
        raise FramingError("body must be a JSON object (Cloud API or on-premise webhook)")
    result = ParseResult()
    if "object" in data or "entry" in data:
        entries = data.get("entry")
        if not isinstance(entries, list):
            raise FramingError("Cloud API webhook without an `entry` list")
        if data.get("object") == CLOUD_OBJECT:
            meta.whatsapp_entries(result, entries, request, provider=NAME)
        else:
            result.ignored += len(entries)  # other subscriptions: not message statuses
        return result
    if not any(key in data for key in ("statuses", "messages", "errors", "contacts")):
        raise FramingError("neither a Cloud API webhook nor an on-premise `statuses` body")
    meta.whatsapp_value(result, data, request, provider=NAME)
    return result
