"""The schemes of providers that sign nothing: a shared token (in a header or in the
URL), or HTTP Basic credentials.

They prove who sent a request, not what it says (the body is not covered). A provider
module declares its scheme once and takes its functions from it, so the checks, the
messages and the test signers are the same for every such provider:

    AUTH = auth.SharedToken(NAME, SECRET, "TikTok")
    enabled, verify, calculate_signature, sign = AUTH.exports()
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from processors.config import Settings
from processors.providers import query_string
from processors.providers.base import SignatureError, WebhookRequest, verify_token
from processors.providers.common import any_equal

JSON = "application/json"


@dataclass(frozen=True, slots=True)
class SharedToken:
    """The `token` header or the `Authorization: Bearer` credential must equal
    MSGSTATUS_<secret> (a relay or provider that can only be given a static header)."""

    name: str
    secret: str
    label: str  # the provider as people write it, for messages

    def enabled(self, settings: Settings) -> bool:
        return settings.secret(self.secret) is not None

    def verify(self, request: WebhookRequest, settings: Settings) -> None:
        verify_token(request, settings, self.secret, self.name, self.label)

    @staticmethod
    def calculate_signature(token: str) -> str:
        """The `token` header value: the token itself (it proves nothing about the body)."""
        return token

    def sign(self, url: str, body: bytes, token: str) -> dict[str, str]:
        """Headers a request of this provider carries (tests and the demo sender)."""
        del url, body
        return {"content-type": JSON, "token": self.calculate_signature(token)}

    def exports(self) -> tuple[Callable[..., Any], ...]:
        """(enabled, verify, calculate_signature, sign) for the provider module."""
        return self.enabled, self.verify, self.calculate_signature, self.sign


@dataclass(frozen=True, slots=True)
class QueryToken:
    """A provider whose webhook settings hold nothing but a URL: the shared token travels
    as `?token=` (a `token` header or `Authorization: Bearer` is accepted too), any value
    of MSGSTATUS_<secret>; the module lists `token` in QUERY_CREDENTIALS so the gateway
    never stores it."""

    name: str
    secret: str

    def enabled(self, settings: Settings) -> bool:
        return settings.secret(self.secret) is not None

    def verify(self, request: WebhookRequest, settings: Settings) -> None:
        query_string.verify_shared_token(request, settings, self.secret, self.name)

    @staticmethod
    def sign(url: str, token: str) -> str:
        """The callback URL to give the provider for `url` (tests and the demo sender)."""
        separator = "&" if "?" in url else "?"
        return f"{url}{separator}{query_string.TOKEN_PARAM}={token}"

    def exports(self) -> tuple[Callable[..., Any], ...]:
        """(enabled, verify, sign) for the provider module."""
        return self.enabled, self.verify, self.sign


def basic_header(user: str, password: str) -> str:
    """The `Authorization` header value: `Basic base64(user:password)`."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def basic_credentials(request: WebhookRequest) -> bytes | None:
    """The decoded `user:password` of an `Authorization: Basic` header, or None."""
    auth = (request.header("authorization") or "").strip()
    scheme, _, credential = auth.partition(" ")
    if scheme.lower() != "basic" or not credential.strip():
        return None
    try:
        return base64.b64decode(credential.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None


def check_basic(request: WebhookRequest, user: str, password: str, label: str) -> None:
    """SignatureError unless the request carries exactly these Basic credentials."""
    given = basic_credentials(request)
    if given is None:
        raise SignatureError(f"missing or malformed `Authorization: Basic` header ({label})")
    if not any_equal([f"{user}:{password}"], given.decode("utf-8", "replace")):
        raise SignatureError(f"{label} Basic credentials do not match")


@dataclass(frozen=True, slots=True)
class BasicAuth:
    """HTTP Basic credentials equal to MSGSTATUS_<user> / MSGSTATUS_<password> (the
    provider's callback settings, or credentials in the callback URL)."""

    name: str
    user: str
    password: str
    label: str

    def enabled(self, settings: Settings) -> bool:
        return settings.secret(self.user) is not None and settings.secret(self.password) is not None

    def verify(self, request: WebhookRequest, settings: Settings) -> None:
        user, password = settings.secret(self.user), settings.secret(self.password)
        if user is None or password is None:
            raise SignatureError(
                f"{self.name} is not configured (MSGSTATUS_{self.user} / _PASSWORD unset)"
            )
        check_basic(request, user, password, self.label)

    @staticmethod
    def calculate_signature(user: str, password: str) -> str:
        return basic_header(user, password)

    def sign(self, url: str, body: bytes, user: str, password: str) -> dict[str, str]:
        """Headers a request of this provider carries (tests and the demo sender)."""
        del url, body
        return {"content-type": JSON, "authorization": basic_header(user, password)}

    def exports(self) -> tuple[Callable[..., Any], ...]:
        """(enabled, verify, calculate_signature, sign) for the provider module."""
        return self.enabled, self.verify, self.calculate_signature, self.sign
