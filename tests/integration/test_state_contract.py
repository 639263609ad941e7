"""The backend contract suite: both state backends, the real broker, the real Redis.

The same shuffled, duplicated input (tests/support/state_contract.py) goes through a
real `msgstatus worker` with MSGSTATUS_STATE_BACKEND=rocksdb and =redis. Each run must
publish exactly what the model of the pure pipeline says (ids, sequences, statuses,
every byte but the run's own times) and keep the same final states, with one worker and
with two workers that rebalance while records flow and one of which is then killed, and
with a writer racing the Redis worker's compare-and-apply.
"""

from __future__ import annotations

import asyncio
import random
import urllib.request
import uuid

import pytest
import redis.asyncio as aioredis
from support.processes import free_port, start_worker
from support.state_contract import (
    PARTITIONS,
    changelog_states,
    differences,
    forget_redis,
    model,
    produce,
    published,
    redis_states,
    state_differences,
    wait_processed,
    watching,
    worker_env,
    workload,
)
from support.stream import check_message, collect

from processors.store.state.redis import partition_keys

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BACKENDS = ["rocksdb", "redis"]


async def _finish(kafka, redis_server, prefix, backend, work, parts) -> None:
    """Wait for every control's delivery_unknown and every input processed, then judge."""
    status = f"{prefix}message.status"

    def fired(by_key: dict) -> bool:
        return all(
            any(e["data"]["status"] == "delivery_unknown" for e in by_key.get(f"crm:{c}", []))
            for c in work.controls
        )

    await collect(kafka.bootstrap, status, fired, timeout=120)
    await wait_processed(kafka.bootstrap, prefix, 120, watching(parts))
    got = await published(kafka.bootstrap, status)
    for part in parts:
        part.stop()
    want = model(work)
    problems = differences(want, got)
    for key, events in got.items():
        problems += check_message(key, events, allow_repeats=True)
    assert not problems, f"{len(problems)} problems: {problems[:8]}\n{parts[-1].log_tail()}"
    assert set(want.events) == {f"crm:{m}" for m in work.messages + work.controls}
    if backend == "redis":
        states = await redis_states(redis_server.url, prefix)
    else:
        states = await changelog_states(kafka.bootstrap, prefix)
    problems = state_differences(want, states)
    sizes = {t: {p: len(v) for p, v in parts.items()} for t, parts in states.items()}
    assert not problems, f"{len(problems)} state differences: {problems[:8]}; keys read {sizes}"


@pytest.mark.parametrize("backend", BACKENDS)
async def test_one_worker_publishes_and_keeps_what_the_model_says(
    kafka, redis_server, topic_prefix, tmp_path, backend
):
    work = workload(uuid.uuid4().hex[:6])
    await produce(kafka.bootstrap, topic_prefix, work.records)
    env = worker_env(kafka, redis_server, topic_prefix, tmp_path, backend)
    parts = [start_worker(env, tmp_path, "--no-read-model")]
    try:
        await _finish(kafka, redis_server, topic_prefix, backend, work, parts)
    finally:
        for part in parts:
            part.stop()
        await forget_redis(redis_server.url, topic_prefix)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_two_workers_a_rebalance_and_a_kill_publish_what_the_model_says(
    kafka, redis_server, topic_prefix, tmp_path, backend
):
    """Worker A starts alone; B joins while records flow (a rebalance: both write the same
    tables in turn); then A is SIGKILLed mid-stream and B takes its partitions over. With
    Redis, B reads what A applied (and A's fencing token is replaced by B's claim)."""
    work = workload(uuid.uuid4().hex[:6], messages=200)
    half = len(work.records) // 2
    env = worker_env(kafka, redis_server, topic_prefix, tmp_path, backend)
    await produce(kafka.bootstrap, topic_prefix, work.records[:half])
    first = start_worker(env, tmp_path, "--no-read-model")
    parts = [first]
    try:
        await collect(
            kafka.bootstrap, f"{topic_prefix}message.status", lambda by: len(by) >= 20, 60
        )
        parts.append(start_worker(env, tmp_path, "--no-read-model", data_dir=tmp_path / "b"))
        await asyncio.sleep(4)  # B joins: the group rebalances
        await produce(kafka.bootstrap, topic_prefix, work.records[half:])
        await asyncio.sleep(1.5)
        first.kill()  # mid-stream: its uncommitted records are B's to redo
        await _finish(kafka, redis_server, topic_prefix, backend, work, parts)
    finally:
        for part in parts:
            part.stop()
        await forget_redis(redis_server.url, topic_prefix)


# Rewrites one stored state with the same value under a new version, atomically: nothing
# changes for the pipeline, but every decision made on the old version must be refused.
_TOUCH = """
local stored = redis.call('HGET', KEYS[1], ARGV[1])
if not stored then return 0 end
local colon = string.find(stored, ':', 1, true)
local version = redis.call('HINCRBY', KEYS[2], 'version', 1)
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d', version) .. string.sub(stored, colon))
return 1
"""


async def test_a_writer_racing_the_redis_workers_compare_and_apply(
    kafka, redis_server, topic_prefix, tmp_path
):
    """While the worker runs, another client keeps bumping the versions of the states it
    works on (same values): the worker's cached reads keep going stale, its scripts are
    refused and it decides again, and what it publishes and keeps is still the model's."""
    work = workload(uuid.uuid4().hex[:6], messages=150)
    env = worker_env(kafka, redis_server, topic_prefix, tmp_path, "redis")
    port = free_port()
    env["MSGSTATUS_METRICS_PORT"] = str(port)
    client = aioredis.from_url(redis_server.url)
    touch = client.register_script(_TOUCH)
    touched = 0
    stop = asyncio.Event()

    async def race() -> None:
        nonlocal touched
        rng = random.Random(3)
        while not stop.is_set():
            for table in ("ordering", "emitter"):
                values, _, fence = partition_keys(topic_prefix, table, rng.randrange(PARTITIONS))
                fields = await client.hkeys(values)
                for field in rng.sample(fields, min(20, len(fields))):
                    touched += await touch(keys=[values, fence], args=[field])
            await asyncio.sleep(0.01)

    parts = [start_worker(env, tmp_path, "--no-read-model")]
    racer = asyncio.ensure_future(race())
    try:
        await produce(kafka.bootstrap, topic_prefix, work.records[: len(work.records) // 2])
        await asyncio.sleep(2)
        await produce(kafka.bootstrap, topic_prefix, work.records[len(work.records) // 2 :])
        await asyncio.sleep(2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            metrics = answer.read().decode()
        stop.set()
        await racer
        conflicts = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("msgstatus_state_retries_total") and 'reason="conflict"' in line
        )
        assert touched > 0 and conflicts > 0, (touched, conflicts)
        await _finish(kafka, redis_server, topic_prefix, "redis", work, parts)
    finally:
        stop.set()
        if not racer.done():
            racer.cancel()
        for part in parts:
            part.stop()
        await client.aclose()
        await forget_redis(redis_server.url, topic_prefix)
