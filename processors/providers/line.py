"""LINE Messaging API webhooks: verified, kept, and counted as ignored.

LINE has no delivery or read receipts for pushed messages: every webhook event
(message, follow, unfollow, join, leave, memberJoined, memberLeft, postback, unsend,
videoPlayComplete, beacon, accountLink, things, membership, module, activated,
deactivated, botSuspended, botResumed, and any type LINE adds later) is the user or the
platform talking to the bot, not a status of a message we sent. So parse() counts them
as ignored and never produces a status.

Senders report LINE statuses themselves through `POST /v1/events` with channel `line`
(e.g. `sent` when the push API answered 200: PROVIDERS.md "optimistic on API accept").
The webhook stays useful: it is verified and kept in raw.line for replays and audits.

Signature: `X-Line-Signature` = base64(HMAC-SHA256(channel secret, raw body)).
"""

from __future__ import annotations

from processors.config import Settings
from processors.providers import common
from processors.providers.base import (
    FramingError,
    ParseResult,
    SignatureError,
    WebhookRequest,
)
from processors.providers.coverage import Coverage

NAME = "line"
CONTENT_TYPES: tuple[str, ...] = ("application/json",)
FRAMING = "json"
SIGNATURE_HEADERS: tuple[str, ...] = ("x-line-signature",)
# Channels, signature and receipts as `msgstatus providers` and the README show them.
COVERAGE = Coverage(
    channels=("line",),
    signature="HMAC-SHA256 of body, base64 (X-Line-Signature)",
    receipts={},  # none: senders report LINE statuses through /v1/events
)
SECRET = "LINE_CHANNEL_SECRET"


def enabled(settings: Settings) -> bool:
    return settings.secret(SECRET) is not None


def calculate_signature(channel_secret: str, body: bytes) -> str:
    """The X-Line-Signature value: base64 HMAC-SHA256(channel secret, raw body)."""
    return common.hmac_b64(channel_secret, body, "sha256")


def sign(body: bytes, channel_secret: str) -> dict[str, str]:
    """Headers a genuine LINE POST would carry (tests and the demo sender use it)."""
    return {
        "content-type": "application/json",
        "x-line-signature": calculate_signature(channel_secret, body),
    }


def verify(request: WebhookRequest, settings: Settings) -> None:
    secret = settings.secret(SECRET)
    if secret is None:
        raise SignatureError("line is not configured (MSGSTATUS_LINE_CHANNEL_SECRET unset)")
    given = request.header("x-line-signature")
    if not given or not given.strip():
        raise SignatureError("missing X-Line-Signature header")
    if not common.any_equal([calculate_signature(secret, request.body)], given.strip()):
        raise SignatureError("X-Line-Signature does not match")


@common.guarded
def parse(request: WebhookRequest) -> ParseResult:
    """Every event is inbound: counted as ignored. FramingError when it is no LINE body."""
    data = common.load_json(request.body)
    if not isinstance(data, dict) or not isinstance(data.get("events"), list):
        raise FramingError("body must be a LINE webhook: a JSON object with an `events` list")
    # An empty list is LINE's "Verify" button in the console: nothing to count.
    return ParseResult(ignored=len(data["events"]))
