"""A worker on an empty disk gets its tables back through the bulk restore
(processors/stream/restore.py): every changelog record, tombstones included, is in
RocksDB before the first event is processed, and the pipeline acts on that state."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest
from aiokafka import AIOKafkaProducer
from support.processes import base_env, start_worker
from support.stream import collect, send_events

from bench.recovery import fill
from processors.config import single_broker
from processors.kafka.topics import all_topics, ensure_topics, partition_for
from processors.providers import REGISTRY

pytestmark = pytest.mark.integration

MESSAGES = 3000


def _restored(port: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("msgstatus_restored_changelog_records_total{"):
            table = line.split('table="', 1)[1].split('"', 1)[0]
            out[table] = float(line.rsplit(" ", 1)[1])
    return out


async def test_empty_disk_worker_restores_state_in_bulk(kafka, topic_prefix, tmp_path):
    settings = single_broker(
        kafka_bootstrap=kafka.bootstrap, topic_prefix=topic_prefix, partitions=4
    )
    await ensure_topics(settings, all_topics(settings, REGISTRY))
    # Every message's state says `delivered` (sequence 2) in both tables ...
    await fill(settings, MESSAGES, provider="crm")
    # ... except one, deleted again by tombstones: it must be unknown after the restore.
    gone = "crm:SM0000000007"
    app_id = f"{topic_prefix}{settings.app_id}"
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        for table in ("ordering", "emitter"):
            await producer.send_and_wait(
                f"{app_id}-{table}-changelog",
                None,
                key=gone.encode(),
                partition=partition_for(gone, settings.partitions),
            )
        items = [
            # known as delivered: a late `sent` is stale, `read` follows as sequence 3
            {
                "provider": "crm",
                "provider_message_id": "SM0000000001",
                "channel": "web",
                "status": "sent",
            },
            {
                "provider": "crm",
                "provider_message_id": "SM0000000001",
                "channel": "web",
                "status": "read",
            },
            {
                "provider": "crm",
                "provider_message_id": "SM0000000007",
                "channel": "web",
                "status": "sent",
            },
        ]
    finally:
        await producer.stop()
    await send_events(kafka.bootstrap, settings.topic("raw.events"), [items])

    env = base_env(kafka.bootstrap, topic_prefix, tmp_path / "empty")
    worker = start_worker(env, tmp_path, "--no-read-model")
    try:
        by_key = await collect(
            kafka.bootstrap,
            settings.topic("message.status"),
            lambda got: "crm:SM0000000001" in got and gone in got,
            timeout=90,
        )
        known = [(e["data"]["status"], e["data"]["sequence"]) for e in by_key["crm:SM0000000001"]]
        assert known == [("read", 3)], f"{known}\n{worker.log_tail()}"
        fresh = [(e["data"]["status"], e["data"]["sequence"]) for e in by_key[gone]]
        assert fresh == [("sent", 1)], fresh
        restored: dict[str, float] = {}
        for _ in range(50):
            restored = _restored(env_port(worker))
            if restored:
                break
            await asyncio.sleep(0.2)
        # every state record plus the tombstone, per table, came through the bulk path
        assert restored.get("ordering") == MESSAGES + 1, restored
        assert restored.get("emitter") == MESSAGES + 1, restored
    finally:
        worker.stop()


def env_port(worker) -> str:
    return worker.env["MSGSTATUS_METRICS_PORT"]
