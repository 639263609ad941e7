"""`MSGSTATUS_STATE_BACKEND=redis`: the agents' state in Redis, one atomic script per record.

Workers keep nothing on disk (no changelog topics, no restore): a partition that moves
to another worker is served from Redis at once. For each input record the agent's pure
decision runs over a `RedisBatch` (redis_batch.py); one call of the APPLY script
(redis_scripts.py) then writes everything the record changes if, and only if, the
worker still holds the partition's fencing token and every key the decision read is
unchanged; otherwise nothing is written and the decision runs again on what Redis
answered. So a redelivered record, a second worker after a rebalance, a zombie or any
other writer can never make a message regress or give one sequence number two events:
every applied unit is a decision made on the state it replaced.

Redis errors (down, restarting, loading, read-only, out of memory) never become dead
letters: the agent keeps the record in hand and retries with capped backoff, nothing is
published and `Progress` commits nothing past it, `msgstatus_dependency_up{dependency=
"redis"}` reads 0 and the worker's `/readyz` answers 503 until Redis answers again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from processors import dependencies
from processors.config import Settings
from processors.store.readmodel import connection_kwargs
from processors.store.state.base import Decide, StateBackend, StateTable, T, Undecidable, Wiring
from processors.store.state.redis_batch import (
    ABSENT,
    DELETED,
    Cache,
    Learnt,
    RedisBatch,
    Scan,
    is_index,
)
from processors.store.state.redis_scripts import APPLY, CLAIM
from processors.stream import metrics
from processors.stream.fence import Fenced, Token

log = logging.getLogger(__name__)

ERRORS = (RedisError, OSError)
FIRST_BACKOFF = 0.1
MAX_BACKOFF = 5.0
LEASE_POLL = 0.1


class Refused(Exception):
    """The partition is held by a newer consumer-group generation: this worker is a zombie
    (or its assignment is outdated) and must not write."""


def client(settings: Settings) -> aioredis.Redis:
    """A client with a bounded pool: callers wait up to MSGSTATUS_REDIS_TIMEOUT for a free
    connection instead of failing at once."""
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_pool_size,
        timeout=settings.redis_timeout,
        socket_timeout=settings.redis_timeout,
        socket_connect_timeout=settings.redis_timeout,
        **connection_kwargs(settings),
    )
    return aioredis.Redis(connection_pool=pool)


def partition_keys(prefix: str, table: str, partition: int) -> tuple[str, str, str]:
    """(values hash, index sorted set, fence hash) of one table partition, in one hash
    slot (Redis Cluster moves a partition as a whole)."""
    base = f"{prefix}msgstatus:state:{{{prefix}{table}:{partition}}}"
    return f"{base}:v", f"{base}:i", f"{base}:f"


def apply_args(token: str, batch: RedisBatch) -> list[Any]:
    args: list[Any] = [token, len(batch.reads)]
    for key, version in batch.reads.items():
        args += (key, version)
    args.append(len(batch.scans))
    for scan in batch.scans:
        args += (scan.start, scan.stop, scan.limit, len(scan.members), *scan.members)
    sets: list[Any] = []
    dels: list[str] = []
    adds: list[str] = []
    rems: list[str] = []
    for key, value in batch.pending.items():
        if is_index(key):
            (rems if value is DELETED else adds).append(key)
        elif value is DELETED:
            dels.append(key)
        else:
            sets += (key, value)
    args += (len(sets) // 2, *sets, len(dels), *dels, len(adds), *adds, len(rems), *rems)
    return args


def decode_stored(stored: bytes) -> tuple[bytes | None, int]:
    """A stored hash value is b"<version>:<value>"; b"" stands for an absent key."""
    if not stored:
        return None, ABSENT
    version, _, value = stored.partition(b":")
    return value, int(version)


class Health:
    """Says once when Redis goes away and once when it is back; feeds the gauge."""

    def __init__(self) -> None:
        self.down_since: float | None = None

    def failed(self, what: str, exc: BaseException) -> None:
        dependencies.mark(dependencies.REDIS, False)
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.warning(
                "Redis state unavailable (%s: %s: %s): pausing, retrying with backoff",
                what,
                type(exc).__name__,
                exc,
            )

    def answered(self) -> None:
        if self.down_since is not None:
            log.warning(
                "Redis state available again after %.1f s: resuming",
                time.monotonic() - self.down_since,
            )
            self.down_since = None
            dependencies.mark(dependencies.REDIS, True)


class RedisBackend(StateBackend):
    name = "redis"
    faust_store = "memory://"  # Faust keeps no table: the state is in Redis

    def __init__(self, settings: Settings, redis: aioredis.Redis | None = None) -> None:
        self.settings = settings
        self.redis = redis if redis is not None else client(settings)
        self.prefix = settings.redis_prefix
        self.claim_script = self.redis.register_script(CLAIM)
        self.apply_script = self.redis.register_script(APPLY)
        # a newer generation's claim lapses after this long without a write
        self.stale_after = max(60.0, 6 * settings.session_timeout)
        self.health = Health()
        self._checked_persistence = False

    def table(self, name: str, wiring: Wiring) -> RedisTable:
        return RedisTable(name, self, wiring)

    async def ping(self) -> bool:
        try:
            up = bool(await self.redis.ping())
        except ERRORS:
            up = False
        if up:
            self.health.answered()
            await self.check_persistence()
        return up

    async def check_persistence(self) -> None:
        """Warn once if Redis keeps the state only in memory or may evict it
        (docs/operations.md, "Redis as the state store")."""
        if self._checked_persistence:
            return
        self._checked_persistence = True
        try:
            persistence = await self.redis.info("persistence")
            memory = await self.redis.info("memory")
        except ERRORS:  # INFO may be renamed or forbidden by the ACL: not our call
            return
        if not persistence.get("aof_enabled"):
            log.warning(
                "Redis holds the worker state without an append-only file (appendonly no): "
                "a Redis restart loses it; see docs/operations.md, 'Redis as the state store'"
            )
        policy = memory.get("maxmemory_policy")
        if policy is not None and policy != "noeviction":
            log.warning(
                "Redis may evict the worker state (maxmemory-policy %s, not noeviction); "
                "see docs/operations.md, 'Redis as the state store'",
                policy,
            )

    async def close(self) -> None:
        await self.redis.aclose()


class RedisTable(StateTable):
    def __init__(self, name: str, backend: RedisBackend, wiring: Wiring) -> None:
        self.name = name
        self.backend = backend
        self.ownership = wiring.ownership
        self.lease = wiring.lease
        self.cache = Cache(backend.settings.redis_cache_bytes)
        self._keys: dict[int, tuple[str, str, str]] = {}
        self._generations: dict[int, int] = {}
        self._fences: dict[int, tuple[int, str]] = {}  # partition -> (token epoch, fence)
        self._refused_logged: set[int] = set()

    def keys(self, partition: int) -> tuple[str, str, str]:
        found = self._keys.get(partition)
        if found is None:
            found = self._keys[partition] = partition_keys(
                self.backend.prefix, self.name, partition
            )
        return found

    def assigned(self, partitions: set[int], generation: int) -> None:
        for partition in partitions:
            self._generations[partition] = generation
            self._fences.pop(partition, None)

    def forget(self, partitions: set[int]) -> None:
        for partition in partitions:
            self.cache.drop(partition)
            self._fences.pop(partition, None)

    async def size(self, partitions: set[int]) -> int | None:
        try:
            return sum([await self.backend.redis.hlen(self.keys(p)[0]) for p in partitions])
        except ERRORS:
            return None

    # --- one record -------------------------------------------------------------

    async def transact(
        self, token: Token, partition: int, decide: Decide[T], marker: bool = False
    ) -> T:
        learnt = Learnt()
        delay = FIRST_BACKOFF
        conflicts = 0
        while True:
            if not self.ownership.live(token):
                raise Fenced(f"{self.name} partition {partition} was revoked")
            if not self.lease.valid():  # the group may have replaced us: write nothing
                await asyncio.sleep(LEASE_POLL)
                continue
            try:
                fence = await self._fence(token, partition)
            except Refused as exc:
                metrics.STATE_RETRIES.labels(self.name, "fenced").inc()
                if partition not in self._refused_logged:
                    self._refused_logged.add(partition)
                    log.warning("%s partition %d: %s; waiting", self.name, partition, exc)
                await asyncio.sleep(delay)
                delay = min(MAX_BACKOFF, delay * 2)
                continue
            except ERRORS as exc:
                delay = await self._unavailable("claim", exc, delay)
                continue
            batch = RedisBatch(self.cache, partition, learnt)
            failure: Exception | None = None
            try:
                result = decide(batch)
                batch.check()
            except Exception as exc:
                if not batch.guessing:
                    raise Undecidable(str(exc)) from exc
                failure = exc  # perhaps only because of a wrong guess: validate the reads
                batch.pending = {}
            started = time.perf_counter()
            try:
                reply = await self.backend.apply_script(
                    keys=list(self.keys(partition)), args=apply_args(fence, batch)
                )
            except ERRORS as exc:
                # the script may have run without our hearing: trust nothing cached
                self.cache.drop(partition)
                learnt.clear()
                delay = await self._unavailable("apply", exc, delay)
                continue
            self.backend.health.answered()
            delay = FIRST_BACKOFF
            kind = int(reply[0])
            if kind == 1:
                if failure is not None:  # the reads were right: the failure is the record's
                    raise Undecidable(str(failure)) from failure
                metrics.STATE_APPLY_SECONDS.labels(self.name).observe(time.perf_counter() - started)
                self._applied(partition, batch, int(reply[1]))
                return result
            if kind == -1:  # the fencing token changed: claim again (or learn we lost it)
                metrics.STATE_RETRIES.labels(self.name, "fenced").inc()
                if reply[1]:
                    log.warning(
                        "%s partition %d: fencing token %s replaced by %s; claiming again",
                        self.name,
                        partition,
                        fence,
                        reply[1].decode(errors="replace"),
                    )
                else:  # the whole partition is gone from Redis, not just our claim
                    log.error(
                        "%s partition %d: Redis no longer has this partition's state (flushed, "
                        "or restarted without its append-only file?); going on from what it "
                        "has: see docs/operations.md, 'Redis as the state store'",
                        self.name,
                        partition,
                    )
                self._fences.pop(partition, None)
                self.cache.drop(partition)
                learnt.clear()
                continue
            if self._learn(partition, batch, reply[1], reply[2], learnt):
                conflicts += 1
                if conflicts % 10 == 0:
                    log.warning(
                        "%s partition %d: %d conflicting writers in a row; backing off",
                        self.name,
                        partition,
                        conflicts,
                    )
                    await asyncio.sleep(min(MAX_BACKOFF, 0.01 * conflicts))

    async def _fence(self, token: Token, partition: int) -> str:
        held = self._fences.get(partition)
        if held is not None and held[0] == token.epoch:
            return held[1]
        generation = self._generations.get(partition, 0)
        fence = self.keys(partition)[2]
        ok, value = await self.backend.claim_script(
            keys=[fence], args=[generation, int(self.backend.stale_after)]
        )
        if not int(ok):
            raise Refused(
                f"held by consumer-group generation {int(value)}, newer than ours ({generation})"
            )
        self._refused_logged.discard(partition)
        self.cache.drop(partition)
        self._fences[partition] = (token.epoch, str(int(value)))
        self.backend.health.answered()
        await self.backend.check_persistence()
        return self._fences[partition][1]

    async def _unavailable(self, what: str, exc: BaseException, delay: float) -> float:
        metrics.STATE_RETRIES.labels(self.name, "unavailable").inc()
        self.backend.health.failed(what, exc)
        await asyncio.sleep(delay)
        return min(MAX_BACKOFF, delay * 2)

    def _applied(self, partition: int, batch: RedisBatch, version: int) -> None:
        cache = self.cache
        for key in batch.guessed:
            if key not in batch.pending:
                cache.put(partition, key, None, ABSENT)  # confirmed absent
        for key, value in batch.pending.items():
            if is_index(key):
                continue
            if value is DELETED:
                cache.put(partition, key, None, ABSENT)
            else:
                cache.put(partition, key, value, version)

    def _learn(
        self,
        partition: int,
        batch: RedisBatch,
        stale: list[bytes],
        moved: list[list[Any]],
        learnt: Learnt,
    ) -> bool:
        """Take in what the script said differs; True if someone else wrote (not only a
        guess of ours that was wrong)."""
        conflict = False
        for i in range(0, len(stale), 2):
            key = stale[i].decode()
            value, version = decode_stored(stale[i + 1])
            learnt.values[key] = (value, version)
            self.cache.put(partition, key, value, version)
            if key not in batch.guessed:
                conflict = True
        recorded = {(s.start, s.stop): s for s in batch.scans}
        for start, stop, limit, members in moved:
            name = (start.decode(), stop.decode())
            learnt.scans[name] = Scan(name[0], name[1], int(limit), [m.decode() for m in members])
            seen = recorded.get(name)
            if seen is not None and seen.known:
                conflict = True
        metrics.STATE_RETRIES.labels(self.name, "conflict" if conflict else "learn").inc()
        return conflict
