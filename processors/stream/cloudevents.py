"""The public `message.status` event (DESIGN.md section 6), built from a transition.

Pure: the same transition, sequence and times always give the same bytes, so a
re-emission after a crash carries the same CloudEvent `id`.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from processors.model import ENGAGEMENT, rfc3339


def event_id(message_key: str, sequence: int, status: str) -> str:
    digest = hashlib.blake2b(f"{message_key}\x00{sequence}\x00{status}".encode(), digest_size=16)
    return digest.hexdigest()


def build(
    *,
    meta: dict[str, Any],
    status: str,
    previous_status: str | None,
    implied: list[str],
    sequence: int,
    provider_status: str | None,
    error: dict[str, Any] | None,
    occurred_at: float | None,
    observed_at: float,
    emitted_at: float,
) -> dict[str, Any]:
    key = f"{meta['provider']}:{meta['provider_message_id']}"
    return {
        "specversion": "1.0",
        "type": "message.engagement" if status in ENGAGEMENT else "message.status",
        "id": event_id(key, sequence, status),
        "source": f"msgstatus/{meta['provider']}",
        "subject": key,
        "time": rfc3339(emitted_at),
        "datacontenttype": "application/json",
        "data": {
            "message_key": key,
            "provider": meta["provider"],
            "provider_message_id": meta["provider_message_id"],
            "account": meta.get("account"),
            "channel": meta.get("channel") or "api",
            "status": status,
            "previous_status": previous_status,
            "implied": implied,
            "sequence": sequence,
            "provider_status": provider_status,
            "error": error,
            "occurred_at": rfc3339(occurred_at),
            "observed_at": rfc3339(observed_at),
            "emitted_at": rfc3339(emitted_at),
        },
    }


def encode(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event)
