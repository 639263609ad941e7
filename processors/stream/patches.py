"""Every change msgstatus makes to Faust and aiokafka, in one place, installed explicitly.

The worker relies on behaviour Faust and aiokafka do not offer as settings. Each patch
below says why it exists. They were written against the exact versions in VERSIONS
(the lock file, requirements.lock, installs those); `check()` refuses to start the
worker with other versions unless MSGSTATUS_ALLOW_UNTESTED_DEPENDENCIES=1, and
tests/unit/test_patches.py fails when the source of any patched or relied-on internal
differs from the one recorded in INTERNALS, so an upgrade can never silently undo a fix.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
import logging
import os
import time
from typing import Any

from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.producer.message_accumulator import MessageAccumulator
from faust.app.base import App
from faust.tables.recovery import Recovery
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka

from processors.stream import fence, restore

log = logging.getLogger(__name__)

VERSIONS = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0", "rocksdict": "0.3.29"}
ALLOW_ENV = "MSGSTATUS_ALLOW_UNTESTED_DEPENDENCIES"

# name -> (object, sha256 prefix of its source when the patch was written)
INTERNALS: dict[str, tuple[Any, str]] = {
    # patched
    "faust Consumer.__init__": (faust_consumer.Consumer.__init__, "302410d59e6972d1"),
    "faust Producer._settings_extra": (faust_aiokafka.Producer._settings_extra, "a4c7bc41b6382223"),
    "faust AIOKafkaConsumerThread._create_worker_consumer": (
        faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer,
        "c2701bfc3e6f6cad",
    ),
    "faust Recovery._build_offsets": (Recovery._build_offsets, "27eec86be06cb51f"),
    "aiokafka GroupCoordinator._do_heartbeat": (GroupCoordinator._do_heartbeat, "dc1d6632aaa68e96"),
    "aiokafka GroupCoordinator._on_join_complete": (
        GroupCoordinator._on_join_complete,
        "0b0b3d204b408f3c",
    ),
    "aiokafka MessageAccumulator.drain_by_nodes": (
        MessageAccumulator.drain_by_nodes,
        "fc995afbfc5718e2",
    ),
    # wrapped per app instance (processors/stream/app.py)
    "faust App._on_partitions_revoked": (App._on_partitions_revoked, "d5c895bbe57dc73a"),
    "faust App._on_partitions_assigned": (App._on_partitions_assigned, "de932b7927db85b3"),
    "faust App._new_consumer": (App._new_consumer, "bff6ccd646b71ea9"),
    "faust App._stop_consumer": (App._stop_consumer, "55854a5de12c3f52"),
    # relied on: the read-offset filter we disable, the batch queue our writers use
    "faust Consumer._drain_messages": (faust_consumer.Consumer._drain_messages, "44a2500309e83c63"),
    "aiokafka MessageAccumulator.add_batch": (MessageAccumulator.add_batch, "5ed1c5b1367ad854"),
    "aiokafka MessageAccumulator.create_builder": (
        MessageAccumulator.create_builder,
        "13dcd0ebf6b9eb44",
    ),
}


def source_hash(obj: Any) -> str:
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16]


def changed_internals() -> list[str]:
    """Internals whose source is not the one the patches were written against."""
    return [name for name, (obj, digest) in INTERNALS.items() if source_hash(obj) != digest]


def check(env: dict[str, str] | None = None) -> None:
    """Refuse untested dependency versions (a clear error, before anything starts)."""
    env = dict(os.environ) if env is None else env
    wrong = []
    for package, wanted in VERSIONS.items():
        found = importlib.metadata.version(package)
        if found != wanted:
            wrong.append(f"{package} {found} (written for {wanted})")
    if wrong and env.get(ALLOW_ENV) != "1":
        raise RuntimeError(
            "msgstatus's Faust/aiokafka patches (processors/stream/patches.py) were written "
            f"for other versions: {', '.join(wrong)}. Install from requirements.lock "
            f"(`make install`), or set {ALLOW_ENV}=1 to run untested."
        )
    if wrong:
        log.warning("running with untested dependency versions: %s", ", ".join(wrong))


# --- 1. idempotent producer ---------------------------------------------------------
# Faust enables idempotence only inside transactions; we run at-least-once and want
# acks=all writes that cannot be duplicated or reordered by producer retries.
def _settings_extra(self: Any) -> dict[str, Any]:
    return {"enable_idempotence": True}


# --- 2. no fetch-side read-offset filter ----------------------------------------------
class NoReadOffsets(dict):
    """Faust's read-offset filter dropped refetched records after rebalances (a fetch of
    the old generation overwrote the read offset; records below it were dropped as
    "already read" and some were then committed unprocessed). The agents' own progress
    tracking (progress.py) admits records strictly in order and skips what it has done,
    so Faust must deliver everything it fetches."""

    def __getitem__(self, key: Any) -> None:
        return None

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def update(self, *args: Any, **kwargs: Any) -> None:
        pass


_original_consumer_init = faust_consumer.Consumer.__init__


def _consumer_init(self: Any, *args: Any, **kwargs: Any) -> None:
    _original_consumer_init(self, *args, **kwargs)
    self._read_offset = NoReadOffsets()


# --- 3. the worker consumer's fetch wait ----------------------------------------------
# Faust builds its consumer with fetch_max_wait_ms=1500: a fetch for partitions that have
# nothing new waits at the broker up to 1.5 s, and while it is in flight aiokafka cannot
# fetch the partitions whose records the agents just finished. Each hop between the
# worker's own stages waited for it. MSGSTATUS_FETCH_MAX_WAIT_MS sets it (measured: ~3 %
# of a core more for the worker and ~6 % for the broker at 20 ms than at 1500 ms).
FETCH_WAIT_ATTR = "msgstatus_fetch_max_wait_ms"
_original_worker_consumer = faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer


def _create_worker_consumer(self: Any, transport: Any) -> Any:
    consumer = _original_worker_consumer(self, transport)
    wait = getattr(self.app, FETCH_WAIT_ATTR, None)
    if wait is not None:
        consumer._fetch_max_wait_ms = wait  # read when the consumer starts
    return consumer


# --- 4. the group lease (fence.py) -----------------------------------------------------
_original_heartbeat = GroupCoordinator._do_heartbeat
_original_join_complete = GroupCoordinator._on_join_complete


async def _do_heartbeat(self: Any) -> bool:
    sent = time.monotonic()
    ok = await _original_heartbeat(self)
    lease = fence.LEASES.get(self.group_id)
    if lease is not None:
        if ok:
            lease.renewed(sent)
        elif self.generation < 0 or not self.member_id:
            lease.broken()  # unknown member / illegal generation: someone else owns it now
    return ok


async def _on_join_complete(self: Any, *args: Any, **kwargs: Any) -> Any:
    lease = fence.LEASES.get(self.group_id)
    if lease is not None:
        lease.joined()
    return await _original_join_complete(self, *args, **kwargs)


# --- 5. hold the agents' producer while the lease is not valid ------------------------
LEASE_ATTR = "_msgstatus_lease"
_original_drain = MessageAccumulator.drain_by_nodes


def _drain_by_nodes(self: Any, ignore_nodes: Any, muted_partitions: Any = frozenset()) -> Any:
    lease = getattr(self, LEASE_ATTR, None)
    if lease is None or lease.valid():
        return _original_drain(self, ignore_nodes, muted_partitions)
    held = frozenset(self._batches)
    result = _original_drain(self, ignore_nodes, frozenset(muted_partitions) | held)
    if held:  # look again soon: the lease may be renewed, or the revoke fails them
        waiter = self._waiter_future
        self._loop.call_later(0.05, lambda: waiter.done() or waiter.set_result(None))
    return result


def attach_lease(producer: Any, lease: fence.Lease) -> None:
    """Hold `producer` (an AIOKafkaProducer) whenever `lease` is not valid."""
    setattr(producer._message_accumulator, LEASE_ATTR, lease)


def fail_held(producer: Any) -> int:
    """Fail every batch the producer holds (a zombie's writes): their futures get Fenced."""
    accumulator = producer._message_accumulator
    failed = 0
    for tp in list(accumulator._batches):
        batches = accumulator._batches.pop(tp)
        while batches:
            batch = batches.popleft()
            batch.failure(exception=fence.Fenced(f"{tp} was revoked while held"))
            failed += 1
    return failed


_installed = False


def install() -> None:
    """Install every patch (idempotent). Called by the worker's app builder."""
    global _installed
    if _installed:
        return
    faust_aiokafka.Producer._settings_extra = _settings_extra  # type: ignore[method-assign]
    faust_consumer.Consumer.__init__ = _consumer_init  # type: ignore[method-assign]
    faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer = (  # type: ignore[method-assign]
        _create_worker_consumer
    )
    GroupCoordinator._do_heartbeat = _do_heartbeat  # type: ignore[method-assign]
    GroupCoordinator._on_join_complete = _on_join_complete  # type: ignore[method-assign]
    MessageAccumulator.drain_by_nodes = _drain_by_nodes  # type: ignore[method-assign]
    restore.install()  # 6. bulk restore of RocksDB tables (restore.py)
    _installed = True


def installed() -> bool:
    return _installed
