"""The Redis read model behind `GET /v1/messages/<key>` and `msgstatus status`.

Derived data: the emitter writes it after publishing, idempotently (a replayed write of
an older sequence never overwrites a newer one; history entries are set members), so it
can be dropped and rebuilt by replaying `status.transitions`.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from processors.config import Settings

log = logging.getLogger(__name__)

# Replace the document only when its sequence is not older than the stored one.
_SET_IF_NEWER = """
local current = redis.call('HGET', KEYS[1], 'sequence')
if current and tonumber(current) > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'sequence', ARGV[1], 'doc', ARGV[2])
return 1
"""


class ReadModelUnavailable(Exception):
    pass


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


class ReadModel:
    def __init__(self, url: str, prefix: str = "", **connection: Any) -> None:
        self._redis = aioredis.from_url(
            url, socket_timeout=2.0, socket_connect_timeout=2.0, **connection
        )
        self._prefix = f"{prefix}msgstatus:"
        self._set_if_newer = self._redis.register_script(_SET_IF_NEWER)

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

    async def close(self) -> None:
        await self._redis.aclose()

    async def write(
        self, docs: list[dict[str, Any]], history: list[tuple[str, dict[str, Any]]]
    ) -> None:
        """Apply one batch: current documents and history entries (message_key, entry)."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for doc in docs:
                    await self._set_if_newer(
                        keys=[self._doc_key(doc["message_key"])],
                        args=[doc["sequence"], orjson.dumps(doc)],
                        client=pipe,
                    )
                for key, entry in history:
                    pipe.zadd(
                        self._hist_key(key),
                        {orjson.dumps(entry, option=orjson.OPT_SORT_KEYS): entry["observed_ts"]},
                    )
                await pipe.execute()
        except RedisError as exc:
            raise ReadModelUnavailable(f"Redis unavailable: {exc}") from exc

    async def get(self, message_key: str) -> dict[str, Any] | None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hget(self._doc_key(message_key), "doc")
                pipe.zrange(self._hist_key(message_key), 0, -1)
                raw_doc, raw_hist = await pipe.execute()
        except RedisError as exc:
            raise ReadModelUnavailable(f"Redis unavailable: {exc}") from exc
        if raw_doc is None and not raw_hist:
            return None
        doc = orjson.loads(raw_doc) if raw_doc else {"message_key": message_key, "status": None}
        history = [orjson.loads(item) for item in raw_hist]
        for entry in history:
            entry.pop("observed_ts", None)
        doc["history"] = history
        return doc
