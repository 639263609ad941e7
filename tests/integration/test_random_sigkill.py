"""SIGKILL at random instants under steady load, then a failover to an empty disk.

A generator keeps posting `sent` receipts and, a second later, `delivered` for most of
them, while the worker is killed (SIGKILL, no clean-up) at random moments and restarted
on the same disk; finally it is replaced by a worker on an empty disk. Checks as in
test_crash_consistency.py: nothing lost, no false or missing `delivery_unknown`, one
event per sequence number. `make test` runs MSGSTATUS_FAULT_ROUNDS=1 seed; `make
test-faults` runs more (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid

import pytest
from support.faults import AFTER, crm_event, fault_env, judge
from support.processes import start_gateway, start_worker
from support.stream import collect, last_status

from bench.processes import Process
from bench.traffic import post_all

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.faults]

ROUNDS = int(os.environ.get("MSGSTATUS_FAULT_ROUNDS", "1"))
SEEDS = [int(s) for s in os.environ.get("MSGSTATUS_FAULT_SEEDS", "").split(",") if s] or list(
    range(1, ROUNDS + 1)
)


async def _generate(url: str, run: str, delivered: list[str], controls: list[str], stop):
    """~40 messages/s: `sent` now, `delivered` a second later (controls never)."""
    n = 0
    pending: list[tuple[float, str]] = []
    while not stop.is_set():
        batch = []
        for _ in range(8):
            mid = f"{'c' if n % 25 == 0 else 'd'}{run}{n}"
            (controls if n % 25 == 0 else delivered).append(mid)
            batch.append(crm_event(mid, "sent"))
            if n % 25:
                pending.append((time.monotonic() + 1.0, mid))
            n += 1
        due = [m for t, m in pending if t <= time.monotonic()]
        pending = [(t, m) for t, m in pending if t > time.monotonic()]
        batch += [crm_event(m, "delivered") for m in due]
        answers = await post_all(url, batch)
        assert answers == {200: len(batch)}, answers
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.1)
    answers = await post_all(url, [crm_event(m, "delivered") for _, m in pending])
    assert set(answers) <= {200}


@pytest.mark.parametrize("seed", SEEDS)
async def test_random_sigkills_then_failover(kafka, topic_prefix, tmp_path, seed):
    rng = random.Random(seed)
    env = fault_env(kafka, topic_prefix, tmp_path)
    gateway, url = start_gateway(env, tmp_path)
    run = uuid.uuid4().hex[:5]
    delivered: list[str] = []
    controls: list[str] = []
    workers: list[Process] = [start_worker(env, tmp_path, "--no-read-model")]
    stop = asyncio.Event()
    generator = asyncio.create_task(_generate(url, run, delivered, controls, stop))
    status_topic = f"{topic_prefix}message.status"
    try:
        await collect(kafka.bootstrap, status_topic, lambda by: len(by) >= 20, timeout=60)
        for _ in range(3):
            await asyncio.sleep(rng.uniform(1.0, 6.0))
            workers[-1].kill()
            await asyncio.sleep(rng.uniform(0.0, 2.0))
            workers.append(start_worker(env, tmp_path, "--no-read-model"))
        await asyncio.sleep(rng.uniform(2.0, 5.0))
        stop.set()
        await generator
        await asyncio.sleep(2)
        workers[-1].kill()
        workers.append(start_worker(env, tmp_path, "--no-read-model", data_dir=tmp_path / "new"))

        def done(by_key: dict) -> bool:
            return all(
                last_status(by_key.get(f"crm:{m}", [])) == "delivered" for m in delivered
            ) and all(
                any(e["data"]["status"] == "delivery_unknown" for e in by_key.get(f"crm:{m}", []))
                for m in controls
            )

        by_key = await collect(kafka.bootstrap, status_topic, done, timeout=120 + AFTER)
        await asyncio.sleep(3)
        by_key = await collect(kafka.bootstrap, status_topic, done, timeout=30)
        problems = judge(by_key, delivered, controls)
        summary = f"seed {seed}: {len(delivered)} delivered, {len(controls)} controls"
        assert not problems, f"{summary}: {len(problems)} problems: {problems[:10]}"
    finally:
        stop.set()
        generator.cancel()
        gateway.stop()
        for part in workers:
            part.stop()
