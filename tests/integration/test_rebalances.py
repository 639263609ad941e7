"""Rebalances on the real broker: they re-emit nothing, and a committed offset below the
log start (records expired while the worker was away) never stalls it."""

from __future__ import annotations

import asyncio
import urllib.request
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from support.faults import crm_event, fault_env
from support.processes import free_port, start_gateway, start_worker
from support.stream import check_message, collect, last_status

from bench.processes import Process
from bench.traffic import post_all

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_workers_joining_and_leaving_re_emit_nothing(kafka, topic_prefix, tmp_path):
    env = fault_env(kafka, topic_prefix, tmp_path)
    gateway, url = start_gateway(env, tmp_path)
    run = uuid.uuid4().hex[:6]
    ports = [free_port() for _ in range(3)]
    workers: list[Process] = []

    def worker(i: int) -> Process:
        part = start_worker(
            {**env, "MSGSTATUS_METRICS_PORT": str(ports[i])},
            tmp_path,
            "--no-read-model",
            data_dir=tmp_path / f"w{i}",
        )
        workers.append(part)
        return part

    status_topic = f"{topic_prefix}message.status"
    try:
        first = worker(0)
        mids = [f"r{run}{i}" for i in range(600)]
        for chunk in range(6):  # traffic while workers join and leave
            part = mids[chunk * 100 : (chunk + 1) * 100]
            assert await post_all(url, [crm_event(m, "sent") for m in part]) == {200: 100}
            assert await post_all(url, [crm_event(m, "delivered") for m in part]) == {200: 100}
            if chunk == 1:
                worker(1)
            if chunk == 3:
                worker(2)
            if chunk == 4:
                workers[1].stop()  # a clean leave
            await asyncio.sleep(3)

        def done(by_key: dict) -> bool:
            return all(last_status(by_key.get(f"crm:{m}", [])) == "delivered" for m in mids)

        by_key = await collect(kafka.bootstrap, status_topic, done, timeout=120)
        await asyncio.sleep(3)
        by_key = await collect(kafka.bootstrap, status_topic, done, timeout=30)
        # not one event twice: no repeats allowed at all
        problems = [p for k, evs in by_key.items() for p in check_message(k, evs)]
        assert not problems, problems[:10]
        alive = [i for i, p in enumerate(workers) if p.alive()]
        assert sum(_metric(ports[i], "msgstatus_reemitted_total") for i in alive) == 0
        assert sum(_metric(ports[i], "msgstatus_rebalances_total") for i in alive) >= 1
        assert first.alive()
    finally:
        gateway.stop()
        for part in workers:
            part.stop()


async def test_a_committed_offset_below_the_log_start_does_not_stall(kafka, topic_prefix, tmp_path):
    env = fault_env(kafka, topic_prefix, tmp_path)
    gateway, url = start_gateway(env, tmp_path)
    run = uuid.uuid4().hex[:6]
    status_topic = f"{topic_prefix}message.status"
    worker = start_worker(env, tmp_path, "--no-read-model")
    try:
        early = [f"e{run}{i}" for i in range(50)]
        assert await post_all(url, [crm_event(m, "sent") for m in early]) == {200: 50}
        await collect(kafka.bootstrap, status_topic, lambda by: len(by) >= 50, timeout=60)
        await asyncio.sleep(2)
        worker.stop()
        # while the worker is away, records pile up in its inputs and then expire
        lost = [f"x{run}{i}" for i in range(50)]
        assert await post_all(url, [crm_event(m, "sent") for m in lost]) == {200: 50}
        # and records the agents have not read (markers: harmless to lose) in their inputs
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
        await producer.start()
        try:
            for name in ("status.canonical", "status.transitions", "status.conversations"):
                for p in range(4):
                    await producer.send_and_wait(
                        f"{topic_prefix}{name}", b'{"wm": {"bound": 1.0}}', key=b"~wm", partition=p
                    )
        finally:
            await producer.stop()
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
        await admin.start()
        probe = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap)
        await probe.start()
        try:
            tps = [
                TopicPartition(f"{topic_prefix}{name}", p)
                for name in (
                    "raw.events",
                    "status.canonical",
                    "status.transitions",
                    "status.conversations",
                )
                for p in range(4)
            ]
            ends = await probe.end_offsets(tps)
            await admin.delete_records({tp: RecordsToDelete(ends[tp]) for tp in tps if ends[tp]})
        finally:
            await probe.stop()
            await admin.close()
        worker = start_worker(env, tmp_path, "--no-read-model")
        later = [f"l{run}{i}" for i in range(50)]
        assert await post_all(url, [crm_event(m, "sent") for m in later]) == {200: 50}
        assert await post_all(url, [crm_event(m, "delivered") for m in early]) == {200: 50}

        def done(by_key: dict) -> bool:
            return all(f"crm:{m}" in by_key for m in later) and all(
                last_status(by_key.get(f"crm:{m}", [])) == "delivered" for m in early
            )

        by_key = await collect(kafka.bootstrap, status_topic, done, timeout=90)
        assert done(by_key), worker.log_tail()
        assert worker.alive()
    finally:
        gateway.stop()
        worker.stop()
