"""Helpers shared by provider modules: framing, defensive field access, times, tables.

Provider payloads are untrusted and often half-documented, so every accessor here
returns None instead of raising: a parser built from them can only fail on purpose
(FramingError for the whole body, DeadItem for one item).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote

import orjson

from processors.model import ERROR_CATEGORIES, STATUSES, ErrorInfo, parse_time
from processors.providers.base import (
    DeadItem,
    FramingError,
    ParseResult,
    WebhookRequest,
    as_bytes,
)

# Latest plausible provider time (year 9999): anything beyond is garbage, not a date.
_MAX_EPOCH = 253_402_300_799.0

T = TypeVar("T")


# --- framing -------------------------------------------------------------------------


def load_json(body: bytes) -> Any:
    """The decoded JSON body, or FramingError (the message never quotes the body)."""
    if not body or not body.strip():
        raise FramingError("body is empty, expected JSON")
    try:
        return orjson.loads(body)
    except (orjson.JSONDecodeError, ValueError, TypeError, RecursionError) as exc:
        raise FramingError(f"body is not valid JSON ({type(exc).__name__})") from None


def load_form(body: bytes) -> list[tuple[str, str]]:
    """`application/x-www-form-urlencoded` pairs in body order (repeats kept)."""
    if not body or not body.strip():
        raise FramingError("body is empty, expected a form")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise FramingError("body is not a valid application/x-www-form-urlencoded form") from None
    # parse_qsl(keep_blank_values=True, strict_parsing=True), without its per-field
    # overhead: it was the largest single cost of normalizing Twilio callbacks.
    pairs = []
    for field in text.split("&"):
        name, sep, value = field.partition("=")
        if not sep:
            raise FramingError("body is not a valid application/x-www-form-urlencoded form")
        pairs.append((_form_unquote(name), _form_unquote(value)))
    return pairs


def _form_unquote(text: str) -> str:
    if "+" in text:
        text = text.replace("+", " ")
    return unquote(text) if "%" in text else text


def looks_like_json(request: WebhookRequest) -> bool:
    """JSON by content type; without one (old raw records) sniff the first byte."""
    ctype = request.content_type
    if ctype:
        return ctype == "application/json" or ctype.endswith("+json")
    return request.body.lstrip()[:1] in (b"{", b"[")


# --- defensive field access -------------------------------------------------------------


def text(value: Any, *, max_len: int = 1024) -> str | None:
    """A non-empty string from a str or an int field (ids arrive as both); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not value or len(value) > max_len:
        return None
    return value


def mapping(value: Any) -> Mapping[str, Any]:
    """`value` if it is a JSON object, else an empty one (so `.get` chains never raise)."""
    return value if isinstance(value, Mapping) else {}


def items(value: Any) -> list[Any]:
    """`value` if it is a JSON array, else an empty list."""
    return value if isinstance(value, list) else []


def to_int(value: Any) -> int | None:
    """An int from an int or a numeric string ("2", "-1"); booleans and floats are not."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        raw = value.strip()
        digits = raw.removeprefix("-")
        if digits.isascii() and digits.isdigit() and len(raw) <= 20:
            return int(raw)
    return None


def event_time(value: Any) -> float | None:
    """Provider time (unix s, ms or RFC 3339) as epoch seconds; None when absent or absurd."""
    if isinstance(value, bool):
        return None
    try:
        ts = parse_time(value)
    except (ValueError, TypeError, OverflowError):
        return None
    if ts is None or not math.isfinite(ts) or ts < 0 or ts > _MAX_EPOCH:
        return None
    return ts


# --- tables -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatusTable:
    """A provider's status words onto canonical statuses, plus words known and ignored.

    "Ignored" (a word we know carries no status change) and "unknown" (a word we have
    never seen: dead-letter it so an operator notices) are different outcomes.
    Checked at import, so a typo in a literal table fails the first test, not production.
    """

    mapping: Mapping[str, str]
    ignored: frozenset[str] = frozenset()
    case_sensitive: bool = False

    def __post_init__(self) -> None:
        wrong = sorted(set(self.mapping.values()) - STATUSES)
        if wrong:
            raise ValueError(f"status table maps onto non-canonical statuses: {wrong}")
        both = sorted(set(self.mapping) & self.ignored)
        if both:
            raise ValueError(f"status words both mapped and ignored: {both}")

    def _key(self, word: str) -> str:
        return word if self.case_sensitive else word.strip().lower()

    def lookup(self, word: str) -> str | None:
        return self.mapping.get(self._key(word))

    def is_ignored(self, word: str) -> bool:
        return self._key(word) in self.ignored

    def resolve(self, word: str, result: ParseResult, item: Any, unknown: str) -> str | None:
        """The canonical status of `word`; None once `word` is counted as ignored or
        `item` is dead-lettered with the reason `unknown` (which should name the word)."""
        status = self.lookup(word)
        if status is None:
            if self.is_ignored(word):
                result.ignored += 1
            else:
                result.dead.append(DeadItem(unknown, item))
        return status


def check_error_table(table: Mapping[str, tuple[str, str]]) -> Mapping[str, tuple[str, str]]:
    """Fail at import when an error table names a category DESIGN.md section 6 lacks."""
    wrong = sorted({category for category, _ in table.values()} - ERROR_CATEGORIES)
    if wrong:
        raise ValueError(f"error table uses unknown categories: {wrong}")
    return table


def error_info(
    code: Any, table: Mapping[str, tuple[str, str]], description: str | None = None
) -> ErrorInfo:
    """ErrorInfo for a provider code: category from the table ("unknown" when unlisted).

    The provider's own description wins over the table's generic one.
    """
    key = text(code)
    category, generic = table.get(key, ("unknown", None)) if key else ("unknown", None)
    return ErrorInfo(code=key, category=category, description=description or generic)


# --- robustness -------------------------------------------------------------------------


def each(result: ParseResult, values: Iterable[T], handle: Callable[[T], None]) -> None:
    """Run `handle` per item; a bug on one item dead-letters that item, not the batch."""
    for value in values:
        try:
            handle(value)
        except Exception as exc:  # parse() must never raise on item content
            result.dead.append(DeadItem(f"parser error on item: {type(exc).__name__}", value))


def guarded(
    parse: Callable[[WebhookRequest], ParseResult],
) -> Callable[[WebhookRequest], ParseResult]:
    """Wrap a parse(): FramingError passes, any other exception becomes one DeadItem.

    parse() runs inside the stream; an exception there would stall a partition, while a
    dead-letter can be redriven once the parser is fixed.
    """

    @functools.wraps(parse)
    def wrapper(request: WebhookRequest) -> ParseResult:
        try:
            return parse(request)
        except FramingError:
            raise
        except Exception as exc:
            return ParseResult(dead=[DeadItem(f"parser error: {type(exc).__name__}")])

    return wrapper


# --- the usual parse() ------------------------------------------------------------------

Item = Callable[[ParseResult, Any, WebhookRequest], None]
OBJECT_OR_ARRAY = "body must be a JSON object (or an array of them)"


def object_or_array(
    one: Item,
    refusal: str = OBJECT_OR_ARRAY,
    *,
    single: bool = True,
    unwrap: Callable[[Mapping[str, Any]], list[Any] | None] | None = None,
) -> Callable[[WebhookRequest], ParseResult]:
    """parse() of a provider whose body is a JSON array of items, or (`single`) one item
    as an object: `one(result, item, request)` handles each item, and an exception on
    one item dead-letters that item only; any other body is a FramingError saying
    `refusal`. `unwrap` finds the items inside an object that wraps them (None: the
    object is the item)."""

    @guarded
    def parse(request: WebhookRequest) -> ParseResult:
        data = load_json(request.body)
        if single and isinstance(data, dict):
            listed = unwrap(data) if unwrap is not None else None
            batch = listed if listed is not None else [data]
        elif isinstance(data, list):
            batch = data
        else:
            raise FramingError(refusal)
        result = ParseResult()
        each(result, batch, lambda item: one(result, item, request))
        return result

    return parse


# --- crypto -------------------------------------------------------------------------------


def hmac_hex(key: str | bytes, message: bytes, digest: str = "sha256") -> str:
    raw_key = key.encode() if isinstance(key, str) else key
    return hmac.new(raw_key, message, getattr(hashlib, digest)).hexdigest()


def hmac_b64(key: str | bytes, message: bytes, digest: str = "sha256") -> str:
    raw_key = key.encode() if isinstance(key, str) else key
    mac = _keyed_hmac(raw_key, digest).copy()
    mac.update(message)
    return base64.b64encode(mac.digest()).decode()


@functools.lru_cache(maxsize=64)
def _keyed_hmac(key: bytes, digest: str) -> hmac.HMAC:
    """An HMAC with the key already absorbed (keys are configured secrets, a handful);
    copying it is ~40 % cheaper per message than hmac.new, and the gateway computes one
    or two per webhook."""
    return hmac.new(key, digestmod=getattr(hashlib, digest))


def any_equal(expected: Iterable[str], given: str) -> bool:
    """Constant-time membership: every candidate is compared, no early exit."""
    given_bytes = as_bytes(given)
    found = False
    for candidate in expected:
        found |= hmac.compare_digest(as_bytes(candidate), given_bytes)
    return found
