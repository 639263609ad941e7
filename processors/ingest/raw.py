"""The raw record: the provider's exact bytes plus what re-verification needs.

The gateway writes it and the normalize agent reads it back into a `WebhookRequest`,
so both sides share this one encoding (schemas/raw.envelope.schema.json).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from processors.providers.base import WebhookRequest

H_PROVIDER = "msgstatus-provider"
H_METHOD = "msgstatus-method"
H_URL = "msgstatus-url"
H_RECEIVED_AT = "msgstatus-received-at"
H_POLLED = "msgstatus-polled"
H_CONTENT_TYPE = "msgstatus-content-type"
KEPT_PREFIX = "h-"


@dataclass(slots=True, frozen=True)
class RawRecord:
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def encode(topic: str, request: WebhookRequest, keep: Iterable[str]) -> RawRecord:
    headers = [
        (H_PROVIDER, request.provider.encode()),
        (H_METHOD, request.method.encode()),
        (H_URL, request.url.encode()),
        (H_RECEIVED_AT, repr(request.received_at).encode()),
        (H_CONTENT_TYPE, request.headers.get("content-type", "").encode()),
    ]
    if request.polled:
        headers.append((H_POLLED, b"1"))
    for name in keep:
        value = request.headers.get(name.lower())
        if value is not None:
            headers.append((KEPT_PREFIX + name.lower(), value.encode()))
    # Keyed by content: a provider's retry of the same body lands on the same partition.
    key = hashlib.blake2b(request.body, digest_size=12).hexdigest().encode()
    return RawRecord(topic, key, request.body, headers)


def decode(
    value: bytes, headers: Sequence[tuple[str, bytes]] | Mapping[str, bytes]
) -> WebhookRequest:
    """Rebuild the request a provider made; raises ValueError when headers are missing."""
    # Kafka clients hand over a list or tuple: skip the (slow) Mapping ABC check for them.
    if isinstance(headers, list | tuple) or not isinstance(headers, Mapping):
        items: Any = headers
    else:
        items = headers.items()
    meta: dict[str, str] = {}
    kept: dict[str, str] = {}
    for name, raw in items:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        if name.startswith(KEPT_PREFIX):
            kept[name[len(KEPT_PREFIX) :]] = text
        else:
            meta[name] = text
    try:
        provider = meta[H_PROVIDER]
        received_at = float(meta[H_RECEIVED_AT])
    except (KeyError, ValueError) as exc:
        raise ValueError(f"raw record without valid msgstatus headers: {exc}") from None
    if meta.get(H_CONTENT_TYPE):
        kept.setdefault("content-type", meta[H_CONTENT_TYPE])
    return WebhookRequest(
        provider=provider,
        method=meta.get(H_METHOD, "POST"),
        url=meta.get(H_URL, ""),
        headers=kept,
        body=value,
        received_at=received_at,
        polled=meta.get(H_POLLED) == "1",
    )
