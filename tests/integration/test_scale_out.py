"""A truthful `delivery_unknown` with three workers (issue 13), real broker and processes.

A generator posts `sent` receipts at a steady rate and each `delivered` 3 s after its
`sent`, except for control messages (every 25th) that never get one. With
MSGSTATUS_DELIVERY_UNKNOWN_AFTER=30, whatever happens to the workers:
- zero `delivery_unknown` for messages whose `delivered` arrived within the deadline,
- exactly one for each control message,
- every other message ends `delivered` (what a single worker gives for this input),
- sequences 1..n, one event per sequence number.
Scenarios: (a) one worker SIGSTOPped longer than the deadline while traffic flows, then
resumed; (b) every worker down (longer than the deadline) while traffic flows, then
started: a catch-up over a backlog several deadlines long; (c) workers joining and
leaving mid-stream. `make test` runs (b) with a 45 s outage; `make test-faults` with
MSGSTATUS_SCALE_OUTAGE_SECONDS=120 (issue 13's two minutes).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid

import pytest
from support.faults import AFTER, crm_event, fault_env, judge
from support.processes import start_gateway, start_worker
from support.stream import collect, last_status

from bench.processes import Process
from bench.traffic import post_all

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTAGE = float(os.environ.get("MSGSTATUS_SCALE_OUTAGE_SECONDS", "45"))


class Traffic:
    """~20 messages/s; `delivered` 3 s after `sent` (well within the deadline)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.run = uuid.uuid4().hex[:5]
        self.delivered: list[str] = []
        self.controls: list[str] = []
        self.stop = asyncio.Event()

    async def __call__(self) -> None:
        n = 0
        due: list[tuple[float, str]] = []
        while not self.stop.is_set():
            batch = []
            for _ in range(4):
                control = n % 25 == 0
                mid = f"{'c' if control else 'd'}{self.run}{n}"
                (self.controls if control else self.delivered).append(mid)
                batch.append(crm_event(mid, "sent"))
                if not control:
                    due.append((time.monotonic() + 3.0, mid))
                n += 1
            now = time.monotonic()
            batch += [crm_event(m, "delivered") for t, m in due if t <= now]
            due = [(t, m) for t, m in due if t > now]
            answers = await post_all(self.url, batch)
            assert answers == {200: len(batch)}, answers
            await asyncio.sleep(0.2)
        await asyncio.sleep(3.1)
        assert set(await post_all(self.url, [crm_event(m, "delivered") for _, m in due])) <= {200}


async def _check(kafka, prefix: str, traffic: Traffic) -> None:
    def done(by_key: dict) -> bool:
        return all(
            last_status(by_key.get(f"crm:{m}", [])) == "delivered" for m in traffic.delivered
        ) and all(
            any(e["data"]["status"] == "delivery_unknown" for e in by_key.get(f"crm:{m}", []))
            for m in traffic.controls
        )

    topic = f"{prefix}message.status"
    by_key = await collect(kafka.bootstrap, topic, done, timeout=180)
    await asyncio.sleep(3)
    by_key = await collect(kafka.bootstrap, topic, done, timeout=30)
    problems = judge(by_key, traffic.delivered, traffic.controls)
    counts = f"{len(traffic.delivered)} delivered, {len(traffic.controls)} controls"
    assert not problems, f"{counts}: {len(problems)} problems: {problems[:10]}"


def _workers(env, tmp_path, count: int, start: int = 0) -> list[Process]:
    return [
        start_worker(env, tmp_path, "--no-read-model", data_dir=tmp_path / f"w{i}")
        for i in range(start, start + count)
    ]


async def _setup(kafka, topic_prefix, tmp_path):
    env = fault_env(kafka, topic_prefix, tmp_path)  # AFTER 30 s, grace 1 s
    gateway, url = start_gateway(env, tmp_path)
    return env, gateway, Traffic(url)


async def test_a_worker_paused_longer_than_the_deadline(kafka, topic_prefix, tmp_path):
    env, gateway, traffic = await _setup(kafka, topic_prefix, tmp_path)
    workers = _workers(env, tmp_path, 3)
    generator = asyncio.create_task(traffic())
    try:
        await asyncio.sleep(10)
        paused = workers[1]
        os.killpg(paused.proc.pid, signal.SIGSTOP)  # frozen: its partitions go elsewhere
        await asyncio.sleep(AFTER + 10)
        os.killpg(paused.proc.pid, signal.SIGCONT)  # a zombie wakes up
        await asyncio.sleep(10)
        traffic.stop.set()
        await generator
        await _check(kafka, topic_prefix, traffic)
    finally:
        traffic.stop.set()
        generator.cancel()
        gateway.stop()
        for part in workers:
            if part.proc is not None and part.proc.poll() is None:
                os.killpg(part.proc.pid, signal.SIGCONT)
            part.stop()


async def test_every_worker_down_then_a_catch_up(kafka, topic_prefix, tmp_path):
    env, gateway, traffic = await _setup(kafka, topic_prefix, tmp_path)
    workers = _workers(env, tmp_path, 3)
    generator = asyncio.create_task(traffic())
    try:
        await asyncio.sleep(10)
        for part in workers:
            part.kill()
        await asyncio.sleep(OUTAGE)  # traffic keeps coming: a backlog longer than the deadline
        workers += _workers(env, tmp_path, 3)  # same disks
        await asyncio.sleep(10)
        traffic.stop.set()
        await generator
        await _check(kafka, topic_prefix, traffic)
    finally:
        traffic.stop.set()
        generator.cancel()
        gateway.stop()
        for part in workers:
            part.stop()


@pytest.mark.soak  # make test: test_rebalances.py and test_state_contract.py join and leave
async def test_workers_joining_and_leaving(kafka, topic_prefix, tmp_path):
    env, gateway, traffic = await _setup(kafka, topic_prefix, tmp_path)
    workers = _workers(env, tmp_path, 1)
    generator = asyncio.create_task(traffic())
    try:
        await asyncio.sleep(8)
        workers += _workers(env, tmp_path, 2, start=1)  # join
        await asyncio.sleep(12)
        workers[0].stop()  # a clean leave
        await asyncio.sleep(8)
        workers[1].kill()  # a crash
        await asyncio.sleep(8)
        workers += _workers(env, tmp_path, 1, start=3)
        await asyncio.sleep(10)
        traffic.stop.set()
        await generator
        await _check(kafka, topic_prefix, traffic)
    finally:
        traffic.stop.set()
        generator.cancel()
        gateway.stop()
        for part in workers:
            part.stop()
