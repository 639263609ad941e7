"""Normalize: raw provider records -> canonical events grouped by target partition.

Pure. A record that cannot be parsed, or an item in it that cannot, becomes a
dead-letter with its reason; nothing here may stop the stream (DESIGN.md section 11.5):
`normalize()` never raises, every dead letter it returns serialises within
MAX_DEADLETTER_BYTES (`encode_dead_letter`), and its canonical events can always be
packed into records of at most MAX_RECORD_BYTES (`pack_events`), because every string
of a canonical event is capped here and a message_key must be printable and short.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from processors import providers
from processors.kafka import raw
from processors.kafka.topics import partition_for
from processors.model import CHANNELS, ERROR_CATEGORIES, STATUSES, CanonicalEvent
from processors.providers import common, limits
from processors.providers.base import FramingError

# The bounded set of dead-letter categories (a Prometheus label of the worker).
DEADLETTER_CATEGORIES: frozenset[str] = frozenset(
    {
        "bad_record",  # the raw record's msgstatus headers are missing or wrong
        "no_parser",  # the record names a provider this version has no parser for
        "unparseable",  # the body is not the provider's framing (not JSON, not a form)
        "too_deep",  # JSON nested deeper than limits.MAX_JSON_DEPTH
        "too_large",  # an output that cannot fit one record
        "bad_key",  # message_key not printable or longer than MAX_KEY_CHARS
        "unknown_status",  # a status/event word the provider's table does not know
        "missing_field",  # an item without its message id, status, ...
        "invalid_item",  # an item refused for another reason (shape, value)
        "non_canonical",  # a parser produced a status or channel outside DESIGN.md
        "parser_error",  # a parser (or normalize itself) raised: a bug to fix and redrive
    }
)
MAX_DEADLETTER_BYTES = 900_000  # a serialised dead letter, always (Faust's producer: 1 MB)
MAX_RECORD_BYTES = 256 * 1024  # a serialised {"events": [...]} canonical record
MAX_EVENTS_PER_RECORD = 500
MAX_KEY_CHARS = 256  # a whole message_key: Kafka key, Redis key, CloudEvent subject
MAX_REASON_CHARS = 1024
MAX_DEAD_PER_RECORD = 100  # more dead items of one record are summed up in one letter
# A record's body travels whole (up to the letter's limit) in its first dead letter, and
# in every other one only when it is this small: a batch with 500 bad items must not
# write 500 copies of a megabyte.
SMALL_BODY_BYTES = 16_384
# Caps on the strings of a canonical event (truncated, never dropped), so one event is
# always a few KB at most and pack_events() can always keep records under their limit.
MAX_PROVIDER_STATUS_CHARS = 128
MAX_ACCOUNT_CHARS = 256
MAX_ERROR_CODE_CHARS = 64
MAX_ERROR_DESCRIPTION_CHARS = 1024

_PROVIDER_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_EVENTS_HEAD = b'{"events":['
_EVENTS_TAIL = b"]}"


@dataclass(slots=True)
class Normalized:
    by_partition: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    dead: list[dict[str, Any]] = field(default_factory=list)
    events: int = 0
    ignored: int = 0
    observed_at: float | None = None  # when the gateway received the raw record
    # status.conversations partition -> {"registrations": [...], "watermarks": [...]}
    conversations: dict[int, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)


# --- text that always serialises ------------------------------------------------------


def safe_text(value: Any, limit: int) -> str:
    """`value` as a str of at most `limit` characters that orjson can always write (lone
    surrogates, which header values and broken parsers can carry, are escaped)."""
    text = value if isinstance(value, str) else repr(value) if value is not None else ""
    text = text[:limit]
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")[:limit]
    return text


def _optional_text(value: Any, limit: int) -> str | None:
    return None if value is None else safe_text(value, limit)


def describe(item: Any) -> str | None:
    """A short description of a dead item, never the item: a parsed tree may be too deep
    or too large to write, and its text may not be encodable."""
    if item is None:
        return None
    try:
        if isinstance(item, Mapping):
            keys = [safe_text(key, 40) for key, _ in zip(item, range(10), strict=False)]
            more = ", ..." if len(item) > 10 else ""
            return f"object with keys {', '.join(keys)}{more}" if keys else "empty object"
        if isinstance(item, list | tuple):
            return f"array of {len(item)} items"
        if isinstance(item, str | int | float | bool):
            return safe_text(item if isinstance(item, str) else repr(item), 200)
        return type(item).__name__
    except Exception:  # an exotic object whose len() or iteration fails
        return type(item).__name__


# --- dead letters ----------------------------------------------------------------------


def _category_of(reason: str) -> str:
    """The category of a provider's dead item, from its reason (providers write them)."""
    text = reason.lower()
    if text.startswith("parser error"):
        return "parser_error"
    if text.startswith("unknown"):
        return "unknown_status"
    if "missing" in text or "without" in text:
        return "missing_field"
    return "invalid_item"


def dead_letter(
    *,
    letter_id: str,
    reason: str,
    category: str,
    provider: str | None,
    source: str,
    body: bytes,
    keep_body: bool = True,
    body_in: str | None = None,
    item: Any = None,
) -> dict[str, Any]:
    """One dead letter: the reason and the exact raw bytes (base64; kept whole when they
    fit MAX_DEADLETTER_BYTES, else their beginning), with the body's full length and
    sha256 so a truncated copy still names its record."""
    letter: dict[str, Any] = {
        "id": safe_text(letter_id, 300),
        "reason": safe_text(reason, MAX_REASON_CHARS) or "(no reason given)",
        "category": category if category in DEADLETTER_CATEGORIES else "parser_error",
        "provider": _optional_text(provider, 64),
        "source": safe_text(source, 300),
        "item": describe(item),
        "body_b64": "",
        "body_bytes": len(body),
        "body_kept": 0,
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "body_in": _optional_text(body_in, 300),
    }
    if keep_body and body:
        room = MAX_DEADLETTER_BYTES - len(orjson.dumps(letter)) - 64
        kept = body[: max(0, room) // 4 * 3]
        letter["body_b64"] = base64.b64encode(kept).decode("ascii")
        letter["body_kept"] = len(kept)
    return letter


def _minimal_letter(dead: Mapping[str, Any], why: str) -> dict[str, Any]:
    """What is left of a letter that could not be written as it was: every field made
    safe and bounded, the body dropped."""
    category = dead.get("category")
    body_bytes = dead.get("body_bytes")
    digest = dead.get("body_sha256")
    return {
        "id": safe_text(dead.get("id"), 300),
        "reason": safe_text(f"{safe_text(dead.get('reason'), 800)} ({why})", MAX_REASON_CHARS),
        "category": category if category in DEADLETTER_CATEGORIES else "parser_error",
        "provider": _optional_text(dead.get("provider"), 64),
        "source": safe_text(dead.get("source"), 300),
        "item": _optional_text(dead.get("item"), 300),
        "body_b64": "",
        "body_bytes": body_bytes if isinstance(body_bytes, int) else None,
        "body_kept": 0,
        "body_sha256": safe_text(digest, 64) if isinstance(digest, str) else None,
        "body_in": None,
    }


def encode_dead_letter(dead: dict[str, Any]) -> bytes:
    """The letter as JSON of at most MAX_DEADLETTER_BYTES, whatever it holds: a value
    orjson refuses is made safe, a body that does not fit is cut (at a base64 boundary,
    `body_kept` updated), and as a last resort only the bounded fields are kept."""
    try:
        out = orjson.dumps(dead)
    except (TypeError, ValueError):  # orjson.JSONEncodeError is a TypeError
        return orjson.dumps(_minimal_letter(dead, "dead letter was not serialisable"))
    if len(out) <= MAX_DEADLETTER_BYTES:
        return out
    body = dead.get("body_b64")
    if isinstance(body, str) and body:
        keep = max(0, len(body) - (len(out) - MAX_DEADLETTER_BYTES) - 16) // 4 * 4
        cut = {**dead, "body_b64": body[:keep]}
        if "body_kept" in cut:
            padding = len(body) - len(body.rstrip("=")) if keep >= len(body) else 0
            cut["body_kept"] = keep // 4 * 3 - padding
        try:
            out = orjson.dumps(cut)
        except (TypeError, ValueError):
            out = b""
        if out and len(out) <= MAX_DEADLETTER_BYTES:
            return out
    return orjson.dumps(_minimal_letter(dead, "dead letter too large to keep whole"))


# --- canonical events ------------------------------------------------------------------


def pack_events(
    events: list[dict[str, Any]],
    max_bytes: int = MAX_RECORD_BYTES,
    max_events: int = MAX_EVENTS_PER_RECORD,
) -> list[bytes]:
    """`{"events": [...]}` record values, in order, each at most `max_bytes` and
    `max_events` events (byte for byte what orjson.dumps({"events": chunk}) writes).

    Each event is serialised once. An event larger than `max_bytes` on its own (which
    normalize's caps rule out) becomes a record of its own rather than an error.
    """
    out: list[bytes] = []
    chunk: list[bytes] = []
    size = len(_EVENTS_HEAD) + len(_EVENTS_TAIL)
    for event in events:
        data = orjson.dumps(event)
        grow = len(data) + (1 if chunk else 0)
        if chunk and (size + grow > max_bytes or len(chunk) >= max_events):
            out.append(_EVENTS_HEAD + b",".join(chunk) + _EVENTS_TAIL)
            chunk = []
            size = len(_EVENTS_HEAD) + len(_EVENTS_TAIL)
            grow = len(data)
        chunk.append(data)
        size += grow
    if chunk:
        out.append(_EVENTS_HEAD + b",".join(chunk) + _EVENTS_TAIL)
    return out


def _capped(value: Any, limit: int) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    return safe_text(value, limit)


def key_problem(provider: Any, message_id: Any) -> str | None:
    """Why `<provider>:<provider_message_id>` cannot be a message_key, or None."""
    if not isinstance(provider, str) or not _PROVIDER_NAME.fullmatch(provider):
        return f"provider name {safe_text(provider, 40)!r} is not a valid provider name"
    if not isinstance(message_id, str) or not message_id:
        return "provider_message_id is missing or not a string"
    if not message_id.isprintable():
        return "provider_message_id contains control or unprintable characters"
    if len(provider) + 1 + len(message_id) > MAX_KEY_CHARS:
        return f"message_key longer than {MAX_KEY_CHARS} characters"
    return None


def canonical(event: CanonicalEvent) -> tuple[dict[str, Any] | None, str, str]:
    """(the event as it travels, "", "") or (None, category, reason): the event's strings
    capped and made writable, its key checked."""
    if event.status not in STATUSES or event.channel not in CHANNELS:
        return (
            None,
            "non_canonical",
            f"parser produced non-canonical status/channel "
            f"{safe_text(event.status, 40)!r}/{safe_text(event.channel, 40)!r}",
        )
    problem = key_problem(event.provider, event.provider_message_id)
    if problem is not None:
        return None, "bad_key", problem
    occurred = event.occurred_at
    finite = isinstance(occurred, int | float) and not isinstance(occurred, bool)
    if not finite or not math.isfinite(occurred):
        occurred = None
    error = event.error
    return (
        {
            "provider": event.provider,
            "provider_message_id": event.provider_message_id,
            "status": event.status,
            "provider_status": _capped(event.provider_status, MAX_PROVIDER_STATUS_CHARS)
            or event.status,
            "channel": event.channel,
            "observed_at": event.observed_at,
            "occurred_at": occurred,
            "account": _capped(event.account, MAX_ACCOUNT_CHARS),
            "error": None
            if error is None
            else {
                "code": _capped(error.code, MAX_ERROR_CODE_CHARS),
                "category": error.category if error.category in ERROR_CATEGORIES else "unknown",
                "description": _capped(error.description, MAX_ERROR_DESCRIPTION_CHARS),
            },
            "polled": event.polled is True,
        },
        "",
        "",
    )


# --- normalize -----------------------------------------------------------------------------


class _Letters:
    """The dead letters of one raw record: numbered, the body kept once, at most
    MAX_DEAD_PER_RECORD of them plus one that sums up the rest."""

    def __init__(self, out: list[dict[str, Any]], value: bytes, source: str) -> None:
        self.out = out
        self.value = value
        self.source = source
        self.overflow: dict[str, int] = {}

    def add(self, category: str, reason: str, provider: str | None, item: Any = None) -> None:
        if len(self.out) >= MAX_DEAD_PER_RECORD:
            self.overflow[category] = self.overflow.get(category, 0) + 1
            return
        first = self.out[0]["id"] if self.out else None
        keep = first is None or len(self.value) <= SMALL_BODY_BYTES
        self.out.append(
            dead_letter(
                letter_id=f"{self.source}:{len(self.out)}",
                reason=reason,
                category=category,
                provider=provider,
                source=self.source,
                body=self.value,
                keep_body=keep,
                body_in=None if keep else first,
                item=item,
            )
        )

    def close(self, provider: str | None) -> None:
        if not self.overflow:
            return
        total = sum(self.overflow.values())
        counts = ", ".join(f"{name}: {n}" for name, n in sorted(self.overflow.items()))
        category = max(self.overflow, key=lambda name: self.overflow[name])
        self.out.append(
            dead_letter(
                letter_id=f"{self.source}:{len(self.out)}",
                reason=f"{total} more dead items in this record ({counts})",
                category=category,
                provider=provider,
                source=self.source,
                body=self.value,
                keep_body=len(self.value) <= SMALL_BODY_BYTES,
                body_in=None if len(self.value) <= SMALL_BODY_BYTES else self.out[0]["id"],
            )
        )
        self.overflow = {}


def normalize(
    value: bytes, headers: Sequence[tuple[str, bytes]], partitions: int, source: str
) -> Normalized:
    """`source` names the raw record (topic:partition:offset) in dead-letters. Never
    raises: whatever goes wrong becomes a dead letter of the record."""
    result = Normalized()
    value = value if isinstance(value, bytes) else b""  # a tombstone has no value
    letters = _Letters(result.dead, value, source)
    provider_name: str | None = None
    try:
        provider_name = _normalize(value, headers, partitions, result, letters)
    except Exception as exc:  # a bug here must not stop every provider's stream
        result.by_partition, result.conversations, result.events = {}, {}, 0
        letters.add("parser_error", f"normalize failed: {type(exc).__name__}: {exc}", None)
    letters.close(provider_name)
    return result


def _normalize(
    value: bytes,
    headers: Sequence[tuple[str, bytes]],
    partitions: int,
    result: Normalized,
    letters: _Letters,
) -> str | None:
    try:
        request = raw.decode(value, headers)
    except ValueError as exc:
        letters.add("bad_record", str(exc), None)
        return None
    name = request.provider
    result.observed_at = request.received_at
    provider = providers.get(name)
    if provider is None:
        letters.add("no_parser", f"no parser for provider {safe_text(name, 64)!r}", name)
        return name
    if common.looks_like_json(request) and limits.json_too_deep(value):
        letters.add("too_deep", f"JSON nested deeper than {limits.MAX_JSON_DEPTH} levels", name)
        return name
    try:
        parsed = provider.parse(request)
    except FramingError as exc:
        letters.add("unparseable", f"unparseable body: {exc}", name)
        return name
    except Exception as exc:  # a parser bug must not stop every provider's stream
        letters.add("parser_error", f"parser error {type(exc).__name__}: {exc}", name)
        return name
    for item in parsed.dead:
        reason = item.reason if isinstance(item.reason, str) else repr(item.reason)
        letters.add(_category_of(reason), reason, name, item.item)
    result.ignored = parsed.ignored if isinstance(parsed.ignored, int) else 0
    grouped: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for event in parsed.events:
        travelling, category, reason = canonical(event)
        if travelling is None:
            letters.add(category, reason, name, describe(event.provider_message_id))
            continue
        key = f"{travelling['provider']}:{travelling['provider_message_id']}"
        grouped[partition_for(key, partitions)].append(travelling)
        result.events += 1
    result.by_partition = dict(grouped)
    # Messenger watermarks and the messages they cover go to the conversation agent,
    # partitioned by conversation (processors/stream/watermarks.py): one record per
    # partition, so what does not fit one is dead-lettered rather than unwritable.
    sizes: dict[int, int] = {}
    for kind, facts in (("registrations", parsed.registrations), ("watermarks", parsed.watermarks)):
        for fact in facts:
            data = fact.to_dict()
            size = len(orjson.dumps(data)) + 1
            part = partition_for(fact.conversation, partitions)
            if sizes.get(part, 64) + size > MAX_RECORD_BYTES:
                letters.add("too_large", f"{kind[:-1]} does not fit one conversation record", name)
                continue
            sizes[part] = sizes.get(part, 64) + size
            bucket = result.conversations.setdefault(part, {"registrations": [], "watermarks": []})
            bucket[kind].append(data)
    return name
