"""Normalize: raw provider records -> canonical events grouped by target partition.

Pure. A record that cannot be parsed, or an item in it that cannot, becomes a
dead-letter with its reason; nothing here may stop the stream.
"""

from __future__ import annotations

import base64
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from processors import providers
from processors.ingest import raw
from processors.model import CHANNELS, STATUSES
from processors.providers.base import FramingError
from processors.topics import partition_for


@dataclass(slots=True)
class Normalized:
    by_partition: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    dead: list[dict[str, Any]] = field(default_factory=list)
    events: int = 0
    ignored: int = 0
    observed_at: float | None = None  # when the gateway received the raw record
    # status.conversations partition -> {"registrations": [...], "watermarks": [...]}
    conversations: dict[int, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)


def _jsonable(item: Any) -> Any:
    if item is None or isinstance(item, (str, int, float, bool, list, dict)):
        return item
    return repr(item)


def normalize(
    value: bytes, headers: Sequence[tuple[str, bytes]], partitions: int, source: str
) -> Normalized:
    """`source` names the raw record (topic:partition:offset) in dead-letters."""
    result = Normalized()

    def dead(reason: str, provider: str | None, item: Any = None) -> None:
        result.dead.append(
            {
                "id": f"{source}:{len(result.dead)}",
                "reason": reason,
                "provider": provider,
                "source": source,
                "item": _jsonable(item),
                "body_b64": base64.b64encode(value[:65536]).decode() if item is None else None,
            }
        )

    try:
        request = raw.decode(value, headers)
    except ValueError as exc:
        dead(str(exc), None)
        return result
    result.observed_at = request.received_at
    provider = providers.get(request.provider)
    if provider is None:
        dead(f"no parser for provider {request.provider!r}", request.provider)
        return result
    try:
        parsed = provider.parse(request)
    except FramingError as exc:
        dead(f"unparseable body: {exc}", request.provider)
        return result
    except Exception as exc:  # a parser bug must not stop every provider's stream
        dead(f"parser error {type(exc).__name__}: {exc}", request.provider)
        return result
    for item in parsed.dead:
        dead(item.reason, request.provider, item.item)
    result.ignored = parsed.ignored
    grouped: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for event in parsed.events:
        if event.status not in STATUSES or event.channel not in CHANNELS:
            dead(
                f"parser produced non-canonical status/channel {event.status!r}/{event.channel!r}",
                request.provider,
                event.to_dict(),
            )
            continue
        grouped[partition_for(event.message_key, partitions)].append(event.to_dict())
        result.events += 1
    result.by_partition = dict(grouped)
    # Messenger watermarks and the messages they cover go to the conversation agent,
    # partitioned by conversation (processors/stream/watermarks.py).
    for name, facts in (("registrations", parsed.registrations), ("watermarks", parsed.watermarks)):
        for fact in facts:
            part = partition_for(fact.conversation, partitions)
            bucket = result.conversations.setdefault(part, {"registrations": [], "watermarks": []})
            bucket[name].append(fact.to_dict())
    return result
