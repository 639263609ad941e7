"""RyzeAPI status polls: `GET {url}/api/chat/status/{instance}?messageId={id}`.

Header `token`; the instance is the message's `account` (from its `/v1/events`
registration). The answer has no instance, so the request URL kept on the raw record
names it for `processors.providers.ryze.parse` (PROVIDERS.md "RyzeAPI").
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

import orjson

from processors.ingest.pollers.tracker import Pending, PollSpec

NAME = "ryze"
SPEC = PollSpec(
    provider=NAME,
    channels=frozenset({"whatsapp"}),
    default_channel="whatsapp",  # RyzeAPI is WhatsApp only
    needs_account=True,
    jitter=(0.8, 1.2),
)
URL_SETTING = "RYZE_API_URL"
TOKEN_SETTING = "RYZE_API_TOKEN"
RATE_SETTING = "RYZE_RATE_LIMIT"
DEFAULT_RATE_LIMIT = 100  # documented: "Rate-limit: Global (100/min)"


def poll_url(base_url: str, instance: str, message_id: str) -> str:
    query = urlencode({"messageId": message_id})
    return f"{base_url.rstrip('/')}/api/chat/status/{quote(instance, safe='')}?{query}"


def request(base_url: str, token: str, message: Pending) -> tuple[str, dict[str, str]]:
    """URL and headers of the status query for `message` (its account is the instance)."""
    if not message.account:
        raise ValueError("a RyzeAPI poll needs the message's instance (its account)")
    url = poll_url(base_url, message.account, message.message_id)
    return url, {"token": token, "accept": "application/json"}


def error_message(body: bytes) -> str | None:
    """`error.message` of an error answer (`{"success": false, "error": {"message"}}`)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    message = error.get("message") if isinstance(error, dict) else error
    return message[:200] if isinstance(message, str) else None
