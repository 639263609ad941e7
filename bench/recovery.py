"""Recovery: how long a worker with an empty disk takes to be ready with 1M messages.

The ordering and emitter changelogs are filled with the state of N messages (what the
worker itself writes for a message that went sent -> delivered), then a worker starts
on an empty data directory, so every byte of state must come back from Kafka. "Ready"
is measured from process start until a probe status written to the raw topic comes
out on `message.status`: restore plus start-up plus one pass through the pipeline.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.processes import Process
from bench.processor import log
from bench.workload import local_broker
from processors.config import SINGLE_BROKER_ENV, Settings, single_broker
from processors.kafka import client as kafka_client
from processors.kafka import raw
from processors.kafka.topics import STATUS, all_topics, ensure_topics, partition_for, raw_topic
from processors.providers import REGISTRY
from processors.providers.base import WebhookRequest


def _states(key: str, now: float) -> tuple[bytes, bytes]:
    provider, mid = key.split(":", 1)
    ordering = orjson.dumps(
        {
            "s": "delivered",
            "i": 2,
            "a": ["sent", "delivered"],
            "c": 0,
            "r": {
                "sent|sent": [11, "applied", 1, None, []],
                "delivered|delivered": [12, "applied", 2, "sent", []],
            },
        }
    )
    emitter = orjson.dumps(
        {
            "seq": 2,
            "li": 2,
            "told": "delivered",
            "dl": None,
            "m": {
                "provider": provider,
                "provider_message_id": mid,
                "channel": "sms",
                "account": "AC1",
            },
            "out": {"1": [21, 1, None, now], "2": [22, 2, "sent", now]},
        }
    )
    return ordering, emitter


async def fill(settings: Settings, messages: int, provider: str = "twilio") -> float:
    app_id = f"{settings.topic_prefix}{settings.app_id}"
    topics = [f"{app_id}-ordering-changelog", f"{app_id}-emitter-changelog"]
    await ensure_topics(settings, topics)
    producer = AIOKafkaProducer(
        **kafka_client.client_kwargs(settings),
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
        max_batch_size=512 * 1024,
    )
    await producer.start()
    started = time.perf_counter()
    now = time.time()
    try:
        pending = []
        for i in range(messages):
            key = f"{provider}:SM{i:010d}"
            partition = partition_for(key, settings.partitions)
            ordering, emitter = _states(key, now)
            pending.append(
                await producer.send(topics[0], ordering, key=key.encode(), partition=partition)
            )
            pending.append(
                await producer.send(topics[1], emitter, key=key.encode(), partition=partition)
            )
            if len(pending) >= 40_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def _probe_seen(settings: Settings, key: str, deadline: float) -> bool:
    consumer = AIOKafkaConsumer(
        settings.topic(STATUS),
        **kafka_client.client_kwargs(settings),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                if any(r.key == key.encode() for r in records):
                    return True
        return False
    finally:
        await consumer.stop()


async def run(
    bootstrap: str, workdir: Path, messages: int = 1_000_000, quick: bool = False
) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    if quick:
        messages = 20_000
    prefix = f"r{uuid.uuid4().hex[:6]}."
    settings = single_broker(kafka_bootstrap=bootstrap, topic_prefix=prefix, partitions=4)
    await ensure_topics(settings, all_topics(settings, REGISTRY))
    log(f"recovery: writing the state of {messages} messages to the changelogs")
    fill_seconds = await fill(settings, messages)
    probe = f"probe{uuid.uuid4().hex[:6]}"
    body = orjson.dumps(
        {"provider": "crm", "provider_message_id": probe, "channel": "web", "status": "sent"}
    )
    webhook = WebhookRequest(
        "events",
        "POST",
        "http://127.0.0.1/v1/events",
        {"content-type": "application/json"},
        body,
        time.time(),
    )
    record = raw.encode(raw_topic(settings, "events"), webhook, ())
    producer = AIOKafkaProducer(**local_broker(bootstrap), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(
            record.topic, record.value, key=record.key, headers=list(record.headers)
        )
    finally:
        await producer.stop()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSGSTATUS_")}
    env.update(
        {
            "MSGSTATUS_KAFKA_BOOTSTRAP": bootstrap,
            "MSGSTATUS_TOPIC_PREFIX": prefix,
            "MSGSTATUS_DATA_DIR": str(workdir / f"recovery-{prefix}"),
            "MSGSTATUS_METRICS_PORT": "0",
            **SINGLE_BROKER_ENV,
        }
    )
    log("recovery: starting a worker on an empty disk")
    started = time.monotonic()
    worker = Process(
        [sys.executable, "-m", "processors.cli", "worker", "--no-read-model", "--no-supervisor"],
        env,
        workdir / "recovery-worker.log",
    ).start()
    try:
        seen = await _probe_seen(settings, f"crm:{probe}", started + (120 if quick else 300))
        ready = time.monotonic() - started
    finally:
        worker.stop(30)
    return {
        "messages": messages,
        "fill_seconds": fill_seconds,
        "ready_seconds": ready if seen else None,
        "changelog_records": 2 * messages,
    }
