"""The raw record: the provider's exact bytes plus what re-verification needs.

The gateway writes it and the normalize agent reads it back into a `WebhookRequest`,
so both sides share this one encoding (schemas/raw.envelope.schema.json).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.record.default_records import DefaultRecordBatchBuilder

from processors.providers.base import WebhookRequest

H_PROVIDER = "msgstatus-provider"
H_METHOD = "msgstatus-method"
H_URL = "msgstatus-url"
H_RECEIVED_AT = "msgstatus-received-at"
H_POLLED = "msgstatus-polled"
H_CONTENT_TYPE = "msgstatus-content-type"
KEPT_PREFIX = "h-"

# Bounds on what the envelope takes from a request, so its worst case is known and the
# body limit can leave room for it (body_ceiling). The gateway refuses a request beyond
# them before anything else: 414 for the URL, 431 for a kept header, 415 for the type.
MAX_URL_BYTES = 4096
MAX_KEPT_HEADER_BYTES = 1024
MAX_CONTENT_TYPE_BYTES = 256
MAX_PROVIDER_BYTES = 32  # provider names are at most 32 characters
MAX_METHOD_BYTES = 16
KEY_BYTES = 24  # hex of a 12-byte blake2b digest


@dataclass(slots=True, frozen=True)
class RawRecord:
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def _bytes(text: str) -> bytes:
    """The bytes a header value arrived as: aiohttp keeps undecodable bytes as lone
    surrogates (surrogateescape), which plain .encode() refuses."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return text.encode("utf-8", "surrogatepass")


def envelope_problem(request: WebhookRequest, keep: Iterable[str]) -> tuple[int, str] | None:
    """(HTTP status, reason) when a request would not fit the envelope's bounds."""
    if len(_bytes(request.url)) > MAX_URL_BYTES:
        return 414, f"request URL longer than {MAX_URL_BYTES} bytes"
    if len(_bytes(request.headers.get("content-type", ""))) > MAX_CONTENT_TYPE_BYTES:
        return 415, f"Content-Type longer than {MAX_CONTENT_TYPE_BYTES} bytes"
    for name in keep:
        value = request.headers.get(name.lower())
        if value is not None and len(_bytes(value)) > MAX_KEPT_HEADER_BYTES:
            return 431, f"header {name} longer than {MAX_KEPT_HEADER_BYTES} bytes"
    return None


def body_ceiling(keep: Iterable[str], max_record_bytes: int) -> int:
    """The largest body whose raw record fits `max_record_bytes` (the producer's limit)
    whatever else the request carries within the envelope's bounds."""
    worst = [
        (H_PROVIDER, b"p" * MAX_PROVIDER_BYTES),
        (H_METHOD, b"M" * MAX_METHOD_BYTES),
        (H_URL, b"u" * MAX_URL_BYTES),
        (H_RECEIVED_AT, repr(-1.2345678901234567e300).encode()),
        (H_CONTENT_TYPE, b"c" * MAX_CONTENT_TYPE_BYTES),
        (H_POLLED, b"1"),
    ]
    worst += [(KEPT_PREFIX + name.lower(), b"h" * MAX_KEPT_HEADER_BYTES) for name in keep]
    key = b"k" * KEY_BYTES
    overhead = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, b"", worst)
    size = max_record_bytes - overhead
    # the value's length prefix grows with it (a varint): step down until it fits
    while size > 0 and (
        DefaultRecordBatchBuilder.estimate_size_in_bytes(key, bytes(size), worst) > max_record_bytes
    ):
        size -= 1
    return max(size, 0)


def encode(topic: str, request: WebhookRequest, keep: Iterable[str]) -> RawRecord:
    headers = [
        (H_PROVIDER, _bytes(request.provider)),
        (H_METHOD, _bytes(request.method)),
        (H_URL, _bytes(request.url)),
        (H_RECEIVED_AT, repr(request.received_at).encode()),
        (H_CONTENT_TYPE, _bytes(request.headers.get("content-type", ""))),
    ]
    if request.polled:
        headers.append((H_POLLED, b"1"))
    for name in keep:
        value = request.headers.get(name.lower())
        if value is not None:
            headers.append((KEPT_PREFIX + name.lower(), _bytes(value)))
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
    if not math.isfinite(received_at):  # every event's observed_at: must be a real time
        raise ValueError("raw record's msgstatus-received-at is not a finite number")
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
