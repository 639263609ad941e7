"""Octopods status polls: `GET {url}/api/v1/{whatsapp|sms}/messages/{id}`, Bearer token.

The answer (assumed, PROVIDERS.md "Octopods") is `{"message_id", "channel",
"message_status": {"message_status", "failure_reason"}, "updated_at"}`; while SENT or
UNKNOWN Octopods asks to re-poll after 10-30 s, hence the wide jitter around the
interval (15 s by default). Only WhatsApp and SMS have a documented status endpoint.
"""

from __future__ import annotations

from urllib.parse import quote

import orjson

from processors.ingest.pollers.tracker import Pending, PollSpec

NAME = "octopods"
# message channel -> path segment of the status endpoint
PATHS: dict[str, str] = {"whatsapp": "whatsapp", "sms": "sms"}
SPEC = PollSpec(
    provider=NAME,
    channels=frozenset(PATHS),
    jitter=(2 / 3, 2.0),  # 10-30 s with the default 15 s interval
)
URL_SETTING = "OCTOPODS_API_URL"
TOKEN_SETTING = "OCTOPODS_API_TOKEN"
RATE_SETTING = "OCTOPODS_RATE_LIMIT"
DEFAULT_RATE_LIMIT = 60  # not published by Octopods: a cautious assumption


def poll_url(base_url: str, channel: str, message_id: str) -> str:
    return f"{base_url.rstrip('/')}/api/v1/{PATHS[channel]}/messages/{quote(message_id, safe='')}"


def request(base_url: str, token: str, message: Pending) -> tuple[str, dict[str, str]]:
    url = poll_url(base_url, message.channel, message.message_id)
    return url, {"authorization": f"Bearer {token}", "accept": "application/json"}


def error_message(body: bytes) -> str | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    error = data.get("error", data.get("message"))
    if isinstance(error, dict):
        error = error.get("message")
    return error[:200] if isinstance(error, str) else None
