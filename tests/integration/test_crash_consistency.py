"""Crash consistency on the real broker (issue 11, docs/architecture.md "Crash consistency").

Each scenario lets a worker take every message to `sent`, replaces it (same disk) by one
armed to die at a named point (MSGSTATUS_CRASH_AT, processors/stream/faults.py) while
the `delivered` receipts flow (the last write of each message: the one a lost changelog
record would never repair), restarts it on the same disk, and then fails over to a
worker on an empty disk (state only from the changelogs). Afterwards, on `message.status`:
- every delivered message's last status is `delivered` (nothing acknowledged is lost);
- every control message that never got a receipt has exactly one `delivery_unknown`;
- no delivered message ever got a `delivery_unknown` (none false);
- per message, sequences are 1..n and a repeated sequence is the identical event.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid

import pytest
from support.faults import crm_event, fault_env, judge
from support.processes import start_gateway, start_worker
from support.state_contract import forget_redis
from support.stream import collect, last_status

from bench.processes import Process
from bench.traffic import post_all

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def _wait_exit(part: Process, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if part.proc is not None and part.proc.poll() is not None:
            return part.proc.returncode
        await asyncio.sleep(0.2)
    return None


async def _scenario(
    kafka, prefix, tmp_path, crash_at: str, second_worker: bool = False, **env_extra
):
    env = fault_env(kafka, prefix, tmp_path, **env_extra)
    gateway, url = start_gateway(env, tmp_path)
    run = uuid.uuid4().hex[:6]
    delivered = [f"d{run}{i}" for i in range(240)]
    controls = [f"c{run}{i}" for i in range(20)]
    status_topic = f"{prefix}message.status"
    first = start_worker(env, tmp_path, "--no-read-model")
    workers: list[Process] = [first]
    try:
        sends = [crm_event(m, "sent") for m in delivered + controls]
        random.Random(7).shuffle(sends)
        assert await post_all(url, sends) == {200: len(sends)}
        everyone = len(delivered) + len(controls)
        await collect(kafka.bootstrap, status_topic, lambda by: len(by) >= everyone, timeout=60)
        first.stop()
        crashing = start_worker(
            {**env, "MSGSTATUS_CRASH_AT": crash_at}, tmp_path, "--no-read-model"
        )
        workers.append(crashing)
        await asyncio.sleep(3)  # its assignment and the local tables (same disk)
        if second_worker:  # a rebalance while records are in hand
            workers.append(start_worker(env, tmp_path, "--no-read-model", data_dir=tmp_path / "b"))
        answers = await post_all(url, [crm_event(m, "delivered") for m in delivered])
        assert answers == {200: len(delivered)}
        code = await _wait_exit(crashing, 60)
        assert code == 99, (
            f"the worker did not die at {crash_at} (exit {code})\n{crashing.log_tail()}"
        )
        # the same disk: local RocksDB as the crash left it; it finishes the work (a
        # redelivered record may find its writes there) and commits
        workers.append(start_worker(env, tmp_path, "--no-read-model"))

        def all_delivered(by_key: dict) -> bool:
            return all(last_status(by_key.get(f"crm:{m}", [])) == "delivered" for m in delivered)

        await collect(kafka.bootstrap, status_topic, all_delivered, timeout=90)
        await asyncio.sleep(4)  # past its next commit
        for part in workers:
            part.kill()
        # a failover: an empty disk, state only from the changelogs
        workers.append(start_worker(env, tmp_path, "--no-read-model", data_dir=tmp_path / "fresh"))

        def done(by_key: dict) -> bool:
            return all_delivered(by_key) and all(
                any(e["data"]["status"] == "delivery_unknown" for e in by_key.get(f"crm:{m}", []))
                for m in controls
            )

        by_key = await collect(kafka.bootstrap, status_topic, done, timeout=120)
        await asyncio.sleep(3)  # every deadline has passed: anything extra shows up now
        by_key = await collect(kafka.bootstrap, status_topic, done, timeout=30)
        problems = judge(by_key, delivered, controls)
        assert not problems, f"{len(problems)} problems: {problems[:10]}\n{workers[-1].log_tail()}"
    finally:
        gateway.stop()
        for part in workers:
            part.stop()


async def test_crash_after_a_table_unit_is_handed_over_before_its_ack(
    kafka, topic_prefix, tmp_path
):
    await _scenario(kafka, topic_prefix, tmp_path, "changelog-handed/emitter:3")


@pytest.mark.soak
async def test_crash_after_the_changelog_ack_before_rocksdb(kafka, topic_prefix, tmp_path):
    await _scenario(kafka, topic_prefix, tmp_path, "changelog-acked/emitter:3")


async def test_crash_mid_record_whose_writes_exceed_a_producer_batch(kafka, topic_prefix, tmp_path):
    """With 2 KB producer batches, one input record's table writes are larger than a batch:
    they still travel as one (atomic), so a crash between batches never halves a record."""
    await _scenario(
        kafka,
        topic_prefix,
        tmp_path,
        "changelog-acked/ordering:3",
        MSGSTATUS_PRODUCER_BATCH_BYTES="2048",
    )


@pytest.mark.soak
async def test_crash_while_a_revoke_waits_for_the_record_in_hand(kafka, topic_prefix, tmp_path):
    await _scenario(kafka, topic_prefix, tmp_path, "revoke-waiting", second_worker=True)


@pytest.mark.soak
async def test_crash_after_outputs_are_acknowledged_before_the_commit(
    kafka, topic_prefix, tmp_path
):
    await _scenario(kafka, topic_prefix, tmp_path, "before-commit:2")


@pytest.mark.parametrize(
    "crash_at",
    [
        # outputs acknowledged, input offsets not committed
        pytest.param("before-commit:2", marks=pytest.mark.soak),
        # mid-record: Redis has its writes, no output handed yet
        pytest.param("state-applied/ordering:3", marks=pytest.mark.soak),
        "state-applied/emitter:3",  # the same where sequence numbers are given out
    ],
)
async def test_redis_backend_crashes(kafka, redis_server, topic_prefix, tmp_path, crash_at):
    """The same scenarios with MSGSTATUS_STATE_BACKEND=redis: a record whose state Redis
    applied but whose outputs never left is redelivered, finds its own writes and says
    exactly what it said (or would have said) before; the 'empty disk' failover changes
    nothing (the state is in Redis)."""
    try:
        await _scenario(
            kafka,
            topic_prefix,
            tmp_path,
            crash_at,
            MSGSTATUS_STATE_BACKEND="redis",
            MSGSTATUS_REDIS_URL=redis_server.url,
        )
    finally:
        await forget_redis(redis_server.url, topic_prefix)
