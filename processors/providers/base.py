"""What every provider module offers, and the request it is handed.

A provider module is pure: `verify()` checks the sender with the provider's own scheme,
`parse()` turns the exact bytes the gateway kept into canonical events. The gateway runs
`verify()` before anything reaches Kafka; the normalize agent runs `parse()` on the raw
topic, so a fixed mapping can be replayed over old records.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from processors.config import Settings
from processors.model import CanonicalEvent


class SignatureError(Exception):
    """The request does not prove it comes from the provider (HTTP 401)."""


class RetryLater(SignatureError):
    """Not proven yet, but the provider says it will retry signed (HTTP 503 + Retry-After;
    nothing is written). A SignatureError, so a caller that knows only those refuses it."""


class FramingError(Exception):
    """The body is not in the provider's framing at all (HTTP 400 / dead-letter)."""


@dataclass(slots=True, frozen=True)
class WebhookRequest:
    """A provider's request as received: exact bytes, lower-cased header names.

    `url` is the public URL the provider called (MSGSTATUS_PUBLIC_URL + path + query when
    set, else the URL the server saw): URL-signing providers sign exactly that.
    """

    provider: str
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    received_at: float
    polled: bool = False

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def content_type(self) -> str:
        raw = self.headers.get("content-type", "")
        return raw.split(";", 1)[0].strip().lower()


@dataclass(slots=True)
class DeadItem:
    reason: str
    item: Any = None


@dataclass(slots=True, frozen=True)
class Watermark:
    """A receipt covering every earlier outbound message of a conversation (Messenger).

    `conversation` is "<page_id>:<user_psid>"; `kind` is "delivered" or "read"; the
    stream expands it against the messages registered for that conversation
    (processors/stream/watermarks.py).
    """

    conversation: str
    kind: str
    watermark_ms: int
    observed_at: float
    occurred_at: float | None = None
    account: str | None = None
    provider: str = "meta"
    channel: str = "messenger"
    polled: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "conversation": self.conversation,
            "kind": self.kind,
            "watermark_ms": self.watermark_ms,
            "observed_at": self.observed_at,
            "occurred_at": self.occurred_at,
            "account": self.account,
            "provider": self.provider,
            "channel": self.channel,
            "polled": self.polled,
        }


@dataclass(slots=True, frozen=True)
class Registration:
    """An outbound message of a conversation, so later watermarks can cover it.

    `withdrawn` takes a message out of the index again (it failed at send time: a
    watermark must not turn that failure into a delivery).
    """

    conversation: str
    provider: str
    provider_message_id: str
    sent_at_ms: int
    account: str | None = None
    channel: str = "messenger"
    withdrawn: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "conversation": self.conversation,
            "provider": self.provider,
            "provider_message_id": self.provider_message_id,
            "sent_at_ms": self.sent_at_ms,
            "account": self.account,
            "channel": self.channel,
            "withdrawn": self.withdrawn,
        }


@dataclass(slots=True)
class ParseResult:
    events: list[CanonicalEvent] = field(default_factory=list)
    dead: list[DeadItem] = field(default_factory=list)
    ignored: int = 0  # known but deliberately not statuses (inbound messages, account errors)
    # Conversation-scoped facts for the conversation agent (Messenger watermarks).
    watermarks: list[Watermark] = field(default_factory=list)
    registrations: list[Registration] = field(default_factory=list)


class Pending(Protocol):
    """A message the poller asks about (processors/ingest/pollers/tracker.py)."""

    message_id: str
    channel: str
    account: str | None


@dataclass(frozen=True, slots=True)
class Polling:
    """A provider that can be asked about one message (`msgstatus poller`). The module
    says how to ask and how to read a refusal; the poller does the rest, and writes each
    answer to the provider's raw topic for its own parse() (marked as polled)."""

    # (base URL, API token, message) -> (URL, headers) of the status request
    request: Callable[[str, str, Pending], tuple[str, dict[str, str]]]
    # the provider's own words in an error answer, or None
    error_message: Callable[[bytes], str | None]
    channels: frozenset[str]  # channels it can be asked about
    rate_limit: int  # requests per minute unless MSGSTATUS_<P>_RATE_LIMIT says otherwise
    default_channel: str | None = None  # for a message whose channel is `api` or unset
    needs_account: bool = False  # asked per account: no account, no poll
    jitter: tuple[float, float] = (0.8, 1.2)  # poll interval multiplier range


class Provider(Protocol):
    """A provider module (see processors/providers/twilio.py for a complete one)."""

    NAME: str
    CONTENT_TYPES: tuple[str, ...]  # accepted request content types (415 otherwise)
    FRAMING: str  # "json" or "form": what a body must decode as (400 otherwise)
    SIGNATURE_HEADERS: tuple[str, ...]  # kept on the raw record for re-verification

    def enabled(self, settings: Settings) -> bool: ...

    def verify(self, request: WebhookRequest, settings: Settings) -> None: ...

    def parse(self, request: WebhookRequest) -> ParseResult: ...


def as_bytes(value: str | bytes) -> bytes:
    """UTF-8 bytes of any str: header values carry undecodable bytes as lone surrogates
    (aiohttp decodes them with surrogateescape), which plain .encode() refuses."""
    return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value


def constant_time_equal(expected: str | bytes, given: str | bytes | None) -> bool:
    if given is None:
        return False
    return hmac.compare_digest(as_bytes(expected), as_bytes(given))


def bearer_or_token(request: WebhookRequest) -> str | None:
    """The `token` header, or the credential of `Authorization: Bearer <token>`."""
    token = request.header("token")
    if token:
        return token
    auth = request.header("authorization") or ""
    scheme, _, credential = auth.partition(" ")
    if scheme.lower() == "bearer" and credential:
        return credential.strip()
    return None


def verify_token(
    request: WebhookRequest, settings: Settings, secret: str, name: str, label: str
) -> None:
    """Providers that prove nothing but a shared token: the `token` header or the
    `Authorization: Bearer` credential must equal MSGSTATUS_<secret>."""
    expected = settings.secret(secret)
    if expected is None:
        raise SignatureError(f"{name} is not configured (MSGSTATUS_{secret} unset)")
    given = bearer_or_token(request)
    if not given:
        raise SignatureError("missing `token` header or `Authorization: Bearer` credential")
    if not constant_time_equal(expected, given):
        raise SignatureError(f"{label} token does not match")
