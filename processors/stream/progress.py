"""Input progress of the worker's agents, committed by us rather than by Faust.

Each agent reads its partitions one record at a time, in order (concurrency=1), so "how
far is this partition done" is one number: the next offset to process. Faust's own
commit machinery (acks, gap trees, a fetch-side read-offset filter) exists for
out-of-order processing we do not have, and it stalled for good when a committed offset
fell below the log start; its read-offset filter dropped refetched records after
rebalances. So the agents' input topics run with Faust's acks off and this module:

- starts every newly assigned partition at its committed offset (or the log start when
  the committed one is gone or absent) and admits records strictly in order: a record
  below the next offset was processed already (skipped, never re-emitted); a record
  above it is either the log start moving up (accepted) or a stale fetch (skipped, and
  the consumer seeks back);
- commits what is done every interval and at every revoke, always after the records'
  writes are acknowledged (drain the writers, flush the producer, then commit), so a
  rebalance repeats nothing and a crash repeats at most the last interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from processors.stream import faults, metrics
from processors.stream.fence import Lease, Ownership, Token

log = logging.getLogger(__name__)

SKIP = None


class Progress:
    def __init__(
        self,
        app: Any,
        ownership: Ownership,
        lease: Lease,
        flush: Callable[[], Awaitable[None]],
    ) -> None:
        self.app = app
        self.ownership = ownership
        self.lease = lease
        self.flush = flush  # drains the partition writers, then flushes the producer
        self.next: dict[Any, int] = {}
        self.committed: dict[Any, int] = {}
        self._ready: dict[Any, asyncio.Future[None]] = {}
        self._busy: dict[str, asyncio.Future[None]] = {}  # stage -> record in hand
        self._lock = asyncio.Lock()

    # --- assignment ---------------------------------------------------------------

    def assigning(self, tps: set[Any]) -> None:
        """Records of these partitions wait until their start offsets are known."""
        loop = asyncio.get_running_loop()
        for tp in tps:
            self.next.pop(tp, None)
            self._ready[tp] = loop.create_future()

    async def learn_starts(self, tps: set[Any]) -> None:
        """Committed offset per partition, raised to the log start when it is below it."""
        if not tps:
            return
        thread = self.app.consumer._thread

        async def fetch() -> tuple[dict[Any, int | None], dict[Any, int]]:
            consumer = thread._ensure_consumer()
            parts = [TopicPartition(tp.topic, tp.partition) for tp in tps]
            committed = {tp: await consumer.committed(tp) for tp in parts}
            earliest = await consumer.beginning_offsets(parts)
            return committed, earliest

        committed, earliest = await thread.call_thread(fetch)
        for tp in tps:
            key = TopicPartition(tp.topic, tp.partition)
            start = committed.get(key)
            low = earliest.get(key, 0)
            if start is None or start < low:
                if start is not None:
                    log.warning("%s: committed offset %s is below the log start %s", tp, start, low)
                    metrics.INPUT_GAPS.inc()
                start = low
            self.next[tp] = start
            self.committed[tp] = start
            ready = self._ready.get(tp)
            if ready is not None and not ready.done():
                ready.set_result(None)

    def forget(self, tps: set[Any]) -> None:
        for tp in tps:
            self.next.pop(tp, None)
            self.committed.pop(tp, None)
            ready = self._ready.pop(tp, None)
            if ready is not None and not ready.done():
                ready.cancel()

    # --- records ------------------------------------------------------------------

    async def admit(self, stage: str, tp: Any, offset: int) -> Token | None:
        """The token to process this record under, or None to skip it."""
        token = self.ownership.token(tp)
        if token is None:
            return SKIP
        ready = self._ready.get(tp)
        if ready is not None and not ready.done():
            try:
                await ready
            except asyncio.CancelledError:
                return SKIP
            token = self.ownership.token(tp)
            if token is None:
                return SKIP
        expected = self.next.get(tp)
        if expected is None:
            return SKIP  # not (or no longer) assigned
        if offset < expected:
            return SKIP  # done before: its writes are in the state and its outputs sent
        if offset > expected and not await self._gap_is_real(tp, expected, offset):
            return SKIP
        self._busy[stage] = asyncio.get_running_loop().create_future()
        return token

    async def _gap_is_real(self, tp: Any, expected: int, offset: int) -> bool:
        earliest = (await self.app.consumer.earliest_offsets(tp)).get(tp, 0)
        if offset <= earliest:
            log.warning("%s: records %d..%d left the log before processing", tp, expected, offset)
            metrics.INPUT_GAPS.inc()
            return True
        log.warning("%s: got offset %d while expecting %d: seeking back", tp, offset, expected)
        metrics.INPUT_RESEEKS.inc()
        await self.app.consumer.seek(tp, expected)
        return False

    def done(self, stage: str, token: Token, offset: int) -> None:
        if self.ownership.live(token) and self.next.get(token.tp) == offset:
            self.next[token.tp] = offset + 1
        busy = self._busy.pop(stage, None)
        if busy is not None and not busy.done():
            busy.set_result(None)

    async def idle(self) -> None:
        """Wait until no agent holds a record."""
        pending = [f for f in self._busy.values() if not f.done()]
        if pending:
            await asyncio.wait(pending)

    # --- commits ------------------------------------------------------------------

    async def commit(self, tps: set[Any] | None = None) -> bool:
        """Commit what is done, once its writes are acknowledged."""
        async with self._lock:
            offsets = {
                tp: n
                for tp, n in self.next.items()
                if (tps is None or tp in tps) and n != self.committed.get(tp)
            }
            if not offsets:
                return True
            await self.flush()
            faults.point("before-commit")
            if not self.lease.valid():
                log.warning("not committing: this worker's group membership may have lapsed")
                return False
            ok = await commit_offsets(self.app, offsets)
            if ok:
                self.committed.update(offsets)
            return ok

    async def run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.commit()
            except Exception as exc:  # a commit retried next interval loses nothing
                log.warning("committing the agents' offsets failed: %r", exc)


async def commit_offsets(app: Any, offsets: dict[Any, int]) -> bool:
    """Commit through Faust's consumer thread without Faust's crash-on-failure wrapper: a
    commit refused after a rebalance only means the next owner repeats those records."""
    thread = app.consumer._thread

    async def do() -> None:
        consumer = thread._ensure_consumer()
        await consumer.commit(
            {
                TopicPartition(tp.topic, tp.partition): OffsetAndMetadata(offset, "")
                for tp, offset in offsets.items()
            }
        )

    try:
        await thread.call_thread(do)
    except (CommitFailedError, IllegalStateError) as exc:
        log.warning("offsets not committed (rebalance): %s", exc)
        return False
    except KafkaError as exc:
        log.warning("offsets not committed: %r", exc)
        return False
    return True
