"""Query strings as payload and as credential carrier.

Two kinds of provider put something in the URL instead of the body:
- receipts sent as `GET` with the receipt in the query string (Vonage SMS API, Kannel's
  `dlr-url`, legacy MessageBird): for these the gateway stores the raw query string, byte
  for byte, as the record's body (method `GET`), so `parse()` reads it like a form and a
  replay re-parses the same bytes;
- providers that sign nothing and can only be given a URL (Africa's Talking, Gupshup,
  Brevo, Kannel): a shared token travels as `?token=...`. A provider module lists such
  parameters in `QUERY_CREDENTIALS`; the gateway removes them from the stored URL and
  query body after verification, so a secret never lands in Kafka or a dead letter.
"""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import unquote_plus, urlsplit, urlunsplit

from processors.config import Settings
from processors.providers.base import (
    SignatureError,
    WebhookRequest,
    bearer_or_token,
    constant_time_equal,
)

TOKEN_PARAM = "token"
MAX_QUERY = 16_384


def is_query(request: WebhookRequest) -> bool:
    """A GET receipt: its body is the query string, form-encoded, without content type."""
    return request.method == "GET"


def query_of(url: str) -> str:
    """The raw (still percent-encoded) query of `url`; empty when it has none."""
    try:
        return urlsplit(url).query
    except ValueError:
        return ""


def param(query: str, name: str) -> str | None:
    """The first value of `name` in a raw query string (`+` and `%xx` decoded)."""
    if len(query) > MAX_QUERY:
        return None
    for field in query.split("&"):
        key, sep, value = field.partition("=")
        if sep and unquote_plus(key) == name:
            return unquote_plus(value)
    return None


def without_params(query: str, names: tuple[str, ...]) -> str:
    """`query` without the fields named in `names`; every other field keeps its exact bytes
    and order (what a replay must re-parse)."""
    kept = [
        field
        for field in query.split("&")
        if field and unquote_plus(field.partition("=")[0]) not in names
    ]
    return "&".join(kept)


def without_credentials(request: WebhookRequest, names: tuple[str, ...]) -> WebhookRequest:
    """The request as it may be stored: credential parameters removed from its URL and,
    for a GET receipt, from its query-string body."""
    try:
        parts = urlsplit(request.url)
    except ValueError:
        return request
    url = urlunsplit(parts._replace(query=without_params(parts.query, names)))
    body = request.body
    if is_query(request):
        body = without_params(body.decode("utf-8", "replace"), names).encode()
    if url == request.url and body == request.body:
        return request
    return replace(request, url=url, body=body)


def shared_token(request: WebhookRequest) -> str | None:
    """The `token` header, the `Authorization: Bearer` credential, or `?token=` of the URL
    (providers whose webhook settings hold nothing but a URL)."""
    return bearer_or_token(request) or param(query_of(request.url), TOKEN_PARAM)


def verify_shared_token(
    request: WebhookRequest, settings: Settings, secret: str, name: str
) -> None:
    """SignatureError unless the request carries MSGSTATUS_<secret> as its shared token
    (any configured value; each compared in constant time)."""
    expected = settings.secrets_for(secret)
    if not expected:
        raise SignatureError(f"{name} is not configured (MSGSTATUS_{secret} unset)")
    given = shared_token(request)
    if not given:
        raise SignatureError(
            "missing token: `?token=` in the URL, a `token` header or `Authorization: Bearer`"
        )
    found = False
    for candidate in expected:
        found |= constant_time_equal(candidate, given)
    if not found:
        raise SignatureError(f"{name} token does not match")
