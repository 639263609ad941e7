"""Meta webhooks: WhatsApp Cloud API statuses, Messenger and Instagram receipts.

One POST may batch many statuses of many messages, mixed with inbound messages and
account-level errors. Each status becomes its own event; what is not a status is counted
as ignored (Meta must still get a 200, or it retries for days); an unknown status word
dead-letters that one item and the rest of the batch goes on (PROVIDERS.md "Meta").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from processors.config import Settings
from processors.model import CanonicalEvent, ErrorInfo
from processors.providers import common
from processors.providers.base import (
    DeadItem,
    FramingError,
    ParseResult,
    Registration,
    SignatureError,
    Watermark,
    WebhookRequest,
)
from processors.providers.coverage import DRR, Coverage

NAME = "meta"
CONTENT_TYPES: tuple[str, ...] = ("application/json",)
FRAMING = "json"
SIGNATURE_HEADERS: tuple[str, ...] = ("x-hub-signature-256",)
# Channels, signature and receipts as `msgstatus providers` and the README show them.
COVERAGE = Coverage(
    channels=("whatsapp", "messenger", "instagram"),
    signature="HMAC-SHA256 of body (X-Hub-Signature-256)",
    receipts={"whatsapp": DRR, "messenger": DRR, "instagram": ("read",)},
)
SECRET = "META_APP_SECRET"
VERIFY_TOKEN = "META_VERIFY_TOKEN"

# WhatsApp Cloud API `statuses[].status`.
STATUS_MAP: dict[str, str] = {
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "failed": "failed",
    "deleted": "deleted",  # engagement: the user deleted the message
}
# `warning`: a catalog item in the message is unavailable; the message itself went out.
IGNORED_STATUSES: frozenset[str] = frozenset({"warning"})
STATUSES = common.StatusTable(STATUS_MAP, IGNORED_STATUSES)

# errors[0].code -> (category, Meta's title). PROVIDERS.md lists the first six.
ERROR_CODES: dict[str, tuple[str, str]] = dict(
    common.check_error_table(
        {
            "131047": ("outside_window", "Re-engagement message"),
            "131026": ("unreachable", "Message undeliverable"),
            "131049": ("carrier_filtered", "Meta chose not to deliver this message"),
            "131050": ("opted_out", "User stopped marketing messages"),
            "131048": ("rate_limited", "Spam rate limit hit"),
            "131000": ("provider_error", "Something went wrong"),
            "130429": ("rate_limited", "Rate limit hit"),
            "131056": ("rate_limited", "Business/consumer pair rate limit hit"),
            "131031": ("account_problem", "Account has been locked"),
            "131042": ("account_problem", "Business eligibility payment issue"),
            "470": ("outside_window", "Re-engagement message (on-premises API)"),
        }
    )
)

# A receipt that names no message and cannot be tied to a conversation.
WATERMARK_WITHOUT_CONVERSATION = "receipt without mids and without a usable watermark/conversation"
_MESSAGING_CHANNELS = {"page": "messenger", "instagram": "instagram"}


def enabled(settings: Settings) -> bool:
    return settings.secret(SECRET) is not None


# --- signature and handshake -----------------------------------------------------------


def calculate_signature(app_secret: str, body: bytes) -> str:
    """The X-Hub-Signature-256 value: `sha256=<hex HMAC-SHA256(app secret, raw body)>`."""
    return "sha256=" + common.hmac_hex(app_secret, body, "sha256")


def verify(request: WebhookRequest, settings: Settings) -> None:
    """Check X-Hub-Signature-256 over the exact bytes; raises SignatureError only."""
    secrets = settings.secrets_for(SECRET)  # env first, then every configured app
    if not secrets:
        raise SignatureError("meta is not configured (MSGSTATUS_META_APP_SECRET unset)")
    given = request.header("x-hub-signature-256")
    if not given:
        raise SignatureError("missing X-Hub-Signature-256 header")
    algorithm, sep, digest = given.strip().partition("=")
    if not sep or algorithm.lower() != "sha256":
        raise SignatureError("X-Hub-Signature-256 must look like sha256=<hex>")
    expected = [calculate_signature(secret, request.body) for secret in secrets]
    if not common.any_equal(expected, "sha256=" + digest.strip().lower()):
        raise SignatureError("X-Hub-Signature-256 does not match")


def sign(url: str, body: bytes, app_secret: str) -> dict[str, str]:
    """Headers a genuine Meta POST would carry (tests and the demo sender use it)."""
    del url  # Meta signs the body only
    return {
        "content-type": "application/json",
        "x-hub-signature-256": calculate_signature(app_secret, body),
    }


# What the gateway answers (403) when handshake() refuses.
HANDSHAKE_REFUSED = "hub.verify_token does not match"


def handshake(query: Mapping[str, str], settings: Settings) -> str | None:
    """The `hub.challenge` to echo for `GET /webhooks/meta` (the gateway's answer to a GET
    on the webhook URL of a provider with a handshake), or None (answer 403).

    Only when hub.mode is "subscribe" and hub.verify_token equals
    MSGSTATUS_META_VERIFY_TOKEN (constant-time); unset token means never.
    """
    expected = settings.secrets_for(VERIFY_TOKEN)
    if not expected or query.get("hub.mode") != "subscribe":
        return None
    challenge = query.get("hub.challenge")
    given = query.get("hub.verify_token")
    if not challenge or not given or not common.any_equal(expected, given):
        return None
    return challenge


# --- parsing ----------------------------------------------------------------------------


def _whatsapp_error(status: Mapping[str, Any]) -> ErrorInfo | None:
    errors = common.items(status.get("errors"))
    if not errors:
        return None
    first = common.mapping(errors[0])
    details = common.text(common.mapping(first.get("error_data")).get("details"))
    title = common.text(first.get("message")) or common.text(first.get("title"))
    description = (
        f"{title}: {details}" if title and details and details != title else (title or details)
    )
    return common.error_info(first.get("code"), ERROR_CODES, description)


def _whatsapp_change(
    result: ParseResult, value: Mapping[str, Any], request: WebhookRequest, provider: str = NAME
) -> None:
    account = common.text(common.mapping(value.get("metadata")).get("phone_number_id"))
    # Inbound messages and account-level errors share the webhook but change no status.
    result.ignored += len(common.items(value.get("messages")))
    result.ignored += len(common.items(value.get("errors")))

    def one(item: Any) -> None:
        status_obj = common.mapping(item)
        if not status_obj:
            result.dead.append(DeadItem("whatsapp status is not an object", item))
            return
        wamid = common.text(status_obj.get("id"), max_len=256)
        word = common.text(status_obj.get("status"), max_len=64)
        if wamid is None:
            result.dead.append(DeadItem("whatsapp status without an id", item))
            return
        if word is None:
            result.dead.append(DeadItem("whatsapp status without a status value", item))
            return
        status = STATUSES.resolve(word, result, item, f"unknown whatsapp status {word!r}")
        if status is None:
            return
        error = _whatsapp_error(status_obj)
        if error is None and status == "failed":
            error = ErrorInfo(code=None, category="unknown")
        result.events.append(
            CanonicalEvent(
                provider=provider,
                provider_message_id=wamid,
                status=status,
                provider_status=word,
                channel="whatsapp",
                observed_at=request.received_at,
                occurred_at=common.event_time(status_obj.get("timestamp")),
                account=account,
                error=error,
                polled=request.polled,
            )
        )

    common.each(result, common.items(value.get("statuses")), one)


def _whatsapp(
    result: ParseResult, entries: list[Any], request: WebhookRequest, provider: str = NAME
) -> None:
    def entry_changes(entry: Any) -> None:
        for change in common.items(common.mapping(entry).get("changes")):
            change_obj = common.mapping(change)
            value = common.mapping(change_obj.get("value"))
            if change_obj.get("field", "messages") != "messages" or not value:
                result.ignored += 1  # template/account/quality updates: not message statuses
                continue
            _whatsapp_change(result, value, request, provider)

    common.each(result, entries, entry_changes)


# Reused by providers that forward WhatsApp's shapes (360dialog): same words, same errors.
def whatsapp_entries(
    result: ParseResult, entries: list[Any], request: WebhookRequest, *, provider: str = NAME
) -> None:
    """Cloud API `entry[].changes[].value` -> one event per status, under `provider`'s name."""
    _whatsapp(result, entries, request, provider)


def whatsapp_value(
    result: ParseResult, value: Mapping[str, Any], request: WebhookRequest, *, provider: str = NAME
) -> None:
    """One `value` object (`statuses`, `messages`, `errors`, optional `metadata`): this is
    also the whole body of the older on-premise API's webhooks."""
    _whatsapp_change(result, value, request, provider)


def _conversation(page: str | None, user: str | None) -> str | None:
    """`<page_id>:<user_psid>`, the key of a Messenger conversation's watermark index."""
    if not page or not user or ":" in page or ":" in user:
        return None
    return f"{page}:{user}"


def _epoch_ms(value: Any) -> int | None:
    """A Messenger time (ms; seconds tolerated) as integer epoch milliseconds."""
    seconds = common.event_time(value)
    return None if seconds is None else round(seconds * 1000)


def _messaging(
    result: ParseResult, entries: list[Any], request: WebhookRequest, channel: str
) -> None:
    """Messenger (`page`) and Instagram receipts, echoes and watermarks.

    Per-mid receipts become events. A Messenger `delivery.watermark` / `read.watermark`
    (ms) covers every earlier outbound message to that user: it becomes a Watermark for
    conversation `<page_id>:<user_psid>`, and each echo (our own outbound message) a
    Registration in that conversation's index, so the stream can expand one against the
    other (processors/stream/watermarks.py). Instagram has no watermarks (`read: {mid}`).
    """
    messenger = channel == "messenger"

    def event(mid: str, status: str, word: str, account: str | None, at: Any) -> None:
        result.events.append(
            CanonicalEvent(
                provider=NAME,
                provider_message_id=mid,
                status=status,
                provider_status=word,
                channel=channel,
                observed_at=request.received_at,
                occurred_at=common.event_time(at),
                account=account,
                polled=request.polled,
            )
        )

    def watermark(
        kind: str, value: Any, conversation: str | None, account: str | None, at: Any
    ) -> bool:
        """Record a Messenger watermark; False when there is none to record."""
        mark = _epoch_ms(value)
        if not messenger or mark is None or conversation is None:
            return False
        result.watermarks.append(
            Watermark(
                conversation=conversation,
                kind=kind,
                watermark_ms=mark,
                observed_at=request.received_at,
                occurred_at=common.event_time(at),
                account=account,
                provider=NAME,
                channel=channel,
                polled=request.polled,
            )
        )
        return True

    def entry_messaging(entry: Any) -> None:
        entry_obj = common.mapping(entry)
        account = common.text(entry_obj.get("id"))

        def one(item: Any) -> None:
            msg = common.mapping(item)
            if not msg:
                result.dead.append(DeadItem("messaging item is not an object", item))
                return
            at = msg.get("timestamp")
            sender = common.text(common.mapping(msg.get("sender")).get("id"))
            recipient = common.text(common.mapping(msg.get("recipient")).get("id"))
            if "delivery" in msg:  # the user's device got our messages: user -> page
                delivery = common.mapping(msg.get("delivery"))
                mids = [common.text(mid, max_len=256) for mid in common.items(delivery.get("mids"))]
                for mid in mids:
                    if mid is None:
                        result.dead.append(DeadItem("delivery mid is not a string", item))
                    else:
                        event(mid, "delivered", "delivery", account, at)
                conversation = _conversation(recipient or account, sender)
                covered = watermark(
                    "delivered", delivery.get("watermark"), conversation, account, at
                )
                if not covered and not any(mids):
                    result.dead.append(DeadItem(WATERMARK_WITHOUT_CONVERSATION, item))
            elif "read" in msg:
                read = common.mapping(msg.get("read"))
                mid = common.text(read.get("mid"), max_len=256)
                if mid is not None:
                    event(mid, "read", "read", account, at)  # Instagram: one message seen
                conversation = _conversation(recipient or account, sender)
                covered = watermark("read", read.get("watermark"), conversation, account, at)
                if not covered and mid is None:
                    result.dead.append(DeadItem(WATERMARK_WITHOUT_CONVERSATION, item))
            elif common.mapping(msg.get("message")).get("is_echo") is True:
                mid = common.text(common.mapping(msg.get("message")).get("mid"), max_len=256)
                if mid is None:
                    result.dead.append(DeadItem("message echo without a mid", item))
                    return
                event(mid, "sent", "echo", account, at)  # our own outbound message, sent
                conversation = _conversation(sender or account, recipient)  # page -> user
                if messenger and conversation is not None:
                    sent_at = _epoch_ms(at)
                    result.registrations.append(
                        Registration(
                            conversation=conversation,
                            provider=NAME,
                            provider_message_id=mid,
                            sent_at_ms=sent_at
                            if sent_at is not None
                            else round(request.received_at * 1000),
                            account=account,
                            channel=channel,
                        )
                    )
            else:
                result.ignored += 1  # inbound messages, postbacks, reactions, referrals ...

        common.each(result, common.items(entry_obj.get("messaging")), one)
        result.ignored += len(common.items(entry_obj.get("changes")))

    common.each(result, entries, entry_messaging)


@common.guarded
def parse(request: WebhookRequest) -> ParseResult:
    """Split a webhook into one event per status; FramingError when it is no Meta object."""
    data = common.load_json(request.body)
    if not isinstance(data, dict):
        raise FramingError("body must be a JSON object with `object` and `entry`")
    entries = data.get("entry")
    obj = data.get("object")
    if not isinstance(obj, str) or not isinstance(entries, list):
        raise FramingError("body must be a Meta webhook object with `object` and an `entry` list")
    result = ParseResult()
    if obj == "whatsapp_business_account":
        _whatsapp(result, entries, request)
    elif obj in _MESSAGING_CHANNELS:
        _messaging(result, entries, request, _MESSAGING_CHANNELS[obj])
    else:
        result.ignored += len(entries)  # other subscriptions (user, permissions, ...)
    return result
