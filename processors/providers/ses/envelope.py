"""SES's SNS envelope: which topics may speak, what an envelope is, what is signed.

SNS POSTs a JSON envelope whose `Message` is the SES event as a JSON string; the
envelope names its topic (`TopicArn`, allow-listed by MSGSTATUS_SES_TOPIC_ARN) and
carries its own RSA signature over `string_to_sign()`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from processors.config import Settings

NAME = "ses"
SECRET = "SES_TOPIC_ARN"
CHANNEL = "email"

NOTIFICATION = "Notification"
CONFIRMATIONS = frozenset({"SubscriptionConfirmation", "UnsubscribeConfirmation"})
SIGNED_FIELDS: dict[str, tuple[str, ...]] = {
    NOTIFICATION: ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
    "UnsubscribeConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
OPTIONAL_SIGNED_FIELDS = frozenset({"Subject"})


def topic_arns(settings: Settings) -> frozenset[str]:
    raw = settings.secret(SECRET) or ""
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


def load_envelope(body: bytes) -> dict[str, Any] | None:
    """The SNS envelope of a body, or None when it is no JSON object."""
    try:
        data = orjson.loads(body)
    except (orjson.JSONDecodeError, ValueError, TypeError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def string_to_sign(envelope: Mapping[str, Any]) -> bytes:
    """AWS's canonical string for the envelope's Type; ValueError when a field is missing."""
    kind = envelope.get("Type")
    fields = SIGNED_FIELDS.get(kind) if isinstance(kind, str) else None
    if fields is None:
        raise ValueError("unknown SNS message Type")
    out: list[str] = []
    for name in fields:
        value = envelope.get(name)
        if value is None and name in OPTIONAL_SIGNED_FIELDS:
            continue
        if not isinstance(value, str):
            raise ValueError(f"SNS message field {name} is missing or not a string")
        out.append(f"{name}\n{value}\n")
    return "".join(out).encode("utf-8", "surrogatepass")
