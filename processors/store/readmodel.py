"""The Redis read model behind `GET /v1/messages/<key>` and `msgstatus status`.

Derived data, written only by the read-model projector (projector.py) from
`message.status` and `status.transitions`. Every write is idempotent (a document is
replaced only by one whose sequence is not older; history entries are sorted-set members
scored by receive time), and each batch records, in the same atomic script and after its
data, the next offset of every input partition it covers. Those offsets are the
projector's truth: if Redis comes back with less data than it had (restarted without
persistence, restored from an older snapshot), the offsets it kept went back with the
data, and the projector re-reads from there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from processors.config import Settings

log = logging.getLogger(__name__)

# KEYS: the offsets hash, then a (document, history) pair per message.
# ARGV: n, n (field, offset Redis must hold now ('' = none), next offset) triples; then per
# message: ttl in ms ('' = none), sequence ('' = no document), document, m, m (score,
# member) pairs.
# Nothing is written unless Redis holds the offsets the projector expects (returns 0): a
# Redis that lost data, or a partition another projector moved on, is noticed before a
# batch lands on top of a gap. A failing redis.call stops the script before the offsets
# are written: a batch that did not get through is written again, never skipped.
_APPLY = """
local i = 1
local n = tonumber(ARGV[i]); i = i + 1
local offsets = {}
for _ = 1, n do
  local current = redis.call('HGET', KEYS[1], ARGV[i]) or ''
  if current ~= ARGV[i + 1] then return 0 end
  offsets[#offsets + 1] = ARGV[i]; offsets[#offsets + 1] = ARGV[i + 2]; i = i + 3
end
for k = 2, #KEYS, 2 do
  local doc_key, hist_key = KEYS[k], KEYS[k + 1]
  local ttl, seq, doc, m = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  i = i + 4
  if seq ~= '' then
    local current = redis.call('HGET', doc_key, 'sequence')
    if not current or tonumber(current) <= tonumber(seq) then
      redis.call('HSET', doc_key, 'sequence', seq, 'doc', doc)
    end
  end
  for _ = 1, m do
    redis.call('ZADD', hist_key, ARGV[i], ARGV[i + 1]); i = i + 2
  end
  if ttl ~= '' then
    local ms = tonumber(ttl)
    for _, key in ipairs({doc_key, hist_key}) do
      local left = redis.call('PTTL', key)
      if left == -1 or (left >= 0 and left < ms) then redis.call('PEXPIRE', key, ms) end
    end
  end
end
if n > 0 then redis.call('HSET', KEYS[1], unpack(offsets)) end
return 1
"""

# Error replies that say "not now" rather than "never": the batch waits and is retried.
TRANSIENT_REPLIES = (
    "OOM",
    "READONLY",
    "LOADING",
    "BUSY",
    "NOSCRIPT",
    "MASTERDOWN",
    "MISCONF",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "NOREPLICAS",
    "NOAUTH",
    "WRONGPASS",
    "NOPERM",
)


class ReadModelUnavailable(Exception):
    """Redis cannot take (or give) the data now; nothing was lost, try again later."""


class OffsetsMoved(Exception):
    """Redis does not hold the offsets the batch was read after (it lost data, or another
    projector wrote those partitions): nothing was written; read again from Redis's."""


def connection_kwargs(settings: Settings) -> dict[str, Any]:
    """Auth and TLS for redis-py beyond what MSGSTATUS_REDIS_URL says: an ACL user and
    password kept out of the URL, and for rediss:// URLs the CA and client certificate
    (certificates are always verified)."""
    kwargs: dict[str, Any] = {}
    if settings.redis_username:
        kwargs["username"] = settings.redis_username
    if settings.redis_password:
        kwargs["password"] = settings.redis_password
    if settings.redis_url.startswith("rediss://"):
        kwargs["ssl_cert_reqs"] = "required"
        if settings.redis_ssl_ca_file:
            kwargs["ssl_ca_certs"] = settings.redis_ssl_ca_file
        if settings.redis_ssl_cert_file:
            kwargs["ssl_certfile"] = settings.redis_ssl_cert_file
            kwargs["ssl_keyfile"] = settings.redis_ssl_key_file
    return kwargs


def is_transient(exc: BaseException) -> bool:
    """A Redis error that goes away by itself (connection, restart, memory, failover)."""
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError):
        return True
    if isinstance(exc, ResponseError):
        return str(exc).lstrip("-").startswith(TRANSIENT_REPLIES)
    return False


@dataclass(slots=True)
class MessageWrites:
    """One message's share of a batch: its newest document and its new history entries."""

    doc: dict[str, Any] | None = None
    history: dict[bytes, float] = field(default_factory=dict)  # member -> score
    newest: float = 0.0  # time (epoch s) of the newest record the writes come from


@dataclass(slots=True)
class Batch:
    messages: dict[str, MessageWrites] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)  # "topic:partition" -> next offset
    # what Redis must hold for those partitions before the batch (None: nothing)
    expected: dict[str, int | None] = field(default_factory=dict)

    def message(self, key: str) -> MessageWrites:
        found = self.messages.get(key)
        if found is None:
            found = self.messages[key] = MessageWrites()
        return found


class ReadModel:
    def __init__(self, url: str, prefix: str = "", **connection: Any) -> None:
        self._redis = aioredis.from_url(
            url, socket_timeout=2.0, socket_connect_timeout=2.0, **connection
        )
        self._prefix = f"{prefix}msgstatus:"
        self._apply = self._redis.register_script(_APPLY)

    @classmethod
    def from_settings(cls, settings: Settings) -> ReadModel:
        """The read model as configured: MSGSTATUS_REDIS_URL plus its auth and TLS."""
        return cls(settings.redis_url, settings.redis_prefix, **connection_kwargs(settings))

    async def ping(self) -> bool:
        """True when Redis answers (for the dependency metric); never raises."""
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    def _doc_key(self, message_key: str) -> str:
        return f"{self._prefix}msg:{message_key}"

    def _hist_key(self, message_key: str) -> str:
        return f"{self._prefix}hist:{message_key}"

    @property
    def offsets_key(self) -> str:
        return f"{self._prefix}readmodel:offsets"

    async def close(self) -> None:
        await self._redis.aclose()

    async def apply(self, batch: Batch, retention: float, now: float) -> list[str]:
        """Write one batch and then its offsets, atomically; returns the keys of messages
        Redis refused for good (e.g. a key of the wrong type), which are skipped.

        Keys expire `retention` seconds after their newest record (0: never), so a
        rebuild from an old log does not keep long-finished messages for a full period.
        Raises ReadModelUnavailable while Redis cannot take it (nothing is skipped then),
        OffsetsMoved when Redis does not hold `batch.expected` (nothing is written then).
        """
        args = self._message_args(batch, retention, now)
        offsets = {
            name: (batch.expected.get(name), offset) for name, offset in batch.offsets.items()
        }
        try:
            await self._run(offsets, args)
            return []
        except (ReadModelUnavailable, OffsetsMoved):
            raise
        except RedisError as exc:
            log.warning("read model: a batch was refused (%s); writing message by message", exc)
        refused: list[str] = []
        for key, keys, values in args:
            try:
                await self._run({}, [(key, keys, values)])
            except ReadModelUnavailable:
                raise
            except RedisError as exc:
                log.error("read model: %s cannot be written, skipped: %s", key, exc)
                refused.append(key)
        await self._run(offsets, [])
        return refused

    async def write(
        self, docs: list[dict[str, Any]], history: list[tuple[str, dict[str, Any]]]
    ) -> None:
        """Write documents and history entries (message_key, entry with `observed_ts`)
        outside the projector, e.g. a tool correcting messages while the workers are
        stopped. Idempotent like the projector's writes, records no offsets, sets no TTL
        (the projector's next write of the key does); the projector writes the same
        events again when it reads them from `message.status`, harmlessly."""
        batch = Batch()
        for doc in docs:
            writes = batch.message(doc["message_key"])
            if writes.doc is None or writes.doc["sequence"] <= doc["sequence"]:
                writes.doc = doc
        for key, entry in history:
            member = orjson.dumps(entry, option=orjson.OPT_SORT_KEYS)
            batch.message(key).history[member] = float(entry["observed_ts"])
        await self._run({}, self._message_args(batch, 0.0, 0.0))

    def _message_args(
        self, batch: Batch, retention: float, now: float
    ) -> list[tuple[str, list[str], list[Any]]]:
        out = []
        for key, writes in batch.messages.items():
            ttl: Any = ""
            if retention > 0:
                ttl = max(1, int((writes.newest + retention - now) * 1000))
            doc = writes.doc
            values: list[Any] = [
                ttl,
                "" if doc is None else doc["sequence"],
                "" if doc is None else orjson.dumps(doc),
                len(writes.history),
            ]
            for member, score in writes.history.items():
                values += [repr(score), member]
            out.append((key, [self._doc_key(key), self._hist_key(key)], values))
        return out

    async def _run(
        self,
        offsets: dict[str, tuple[int | None, int]],
        messages: list[tuple[str, list[str], list[Any]]],
    ) -> None:
        keys = [self.offsets_key]
        values: list[Any] = [len(offsets)]
        for name, (expected, offset) in offsets.items():
            values += [name, "" if expected is None else str(expected), offset]
        for _, message_keys, message_values in messages:
            keys += message_keys
            values += message_values
        try:
            written = await self._apply(keys=keys, args=values)
        except RedisError as exc:
            if is_transient(exc):
                raise ReadModelUnavailable(f"Redis unavailable: {exc}") from exc
            raise
        except OSError as exc:
            raise ReadModelUnavailable(f"Redis unavailable: {exc}") from exc
        if not written:
            raise OffsetsMoved("Redis does not hold the offsets this batch was read after")

    async def positions(self, names: list[str]) -> dict[str, int | None]:
        """The next offset the read model holds for each input partition (None: nothing
        of that partition is in this Redis)."""
        if not names:
            return {}
        try:
            values = await self._redis.hmget(self.offsets_key, names)
        except (RedisError, OSError) as exc:
            raise ReadModelUnavailable(f"Redis unavailable: {exc}") from exc
        return {
            name: None if value is None else int(value)
            for name, value in zip(names, values, strict=True)
        }

    async def get(self, message_key: str) -> dict[str, Any] | None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hget(self._doc_key(message_key), "doc")
                pipe.zrange(self._hist_key(message_key), 0, -1)
                raw_doc, raw_hist = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise ReadModelUnavailable(f"Redis unavailable: {exc}") from exc
        if raw_doc is None and not raw_hist:
            return None
        doc = orjson.loads(raw_doc) if raw_doc else {"message_key": message_key, "status": None}
        doc["history"] = history(raw_hist)
        return doc


def history(members: list[bytes]) -> list[dict[str, Any]]:
    """The stored entries in observed order, without their sort field; an applied event
    appears once (one sequence is one event, whichever version of msgstatus wrote it)."""
    out: list[dict[str, Any]] = []
    told: set[int] = set()
    for item in members:
        entry = orjson.loads(item)
        entry.pop("observed_ts", None)
        sequence = entry.get("sequence")
        if sequence is not None:
            if sequence in told:
                continue
            told.add(sequence)
        out.append(entry)
    return out
