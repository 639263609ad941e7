"""The processor benchmark's input: realistic raw records written straight to Kafka.

Built with the same signed-traffic builders as the demo and the end-to-end tests, so
every record is a genuine provider body with the gateway's raw headers.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer

from bench import traffic
from processors.config import Settings, single_broker
from processors.kafka import client as kafka_client
from processors.kafka import raw
from processors.kafka.topics import raw_topic
from processors.providers import REGISTRY
from processors.providers.base import WebhookRequest

SECRETS = {
    "MSGSTATUS_TWILIO_AUTH_TOKEN": "bench-twilio",
    "MSGSTATUS_META_APP_SECRET": "bench-meta",
    "MSGSTATUS_RYZE_TOKEN": "bench-ryze",
    "MSGSTATUS_API_TOKEN": "bench-api",
    "MSGSTATUS_EVENTS_TOKEN": "bench-events",
}


@dataclass(slots=True)
class Workload:
    records: list[raw.RawRecord]
    messages: int
    statuses: int  # provider statuses in all records (a Meta record may carry several)


def build(settings: Settings, messages: int, target_records: int, seed: int = 9) -> Workload:
    """`messages` messages whose statuses are repeated (duplicates) and shuffled in windows
    so that out-of-order arrival is common, until about `target_records` raw records."""
    rng = random.Random(seed)
    msgs = traffic.make_messages(messages, rng, f"b{seed}")
    base = traffic.build_requests(msgs, "http://127.0.0.1:8080", SECRETS, rng)
    copies = max(1, round(target_records / len(base)))
    requests = [r for r in base for _ in range(copies)]
    # shuffle inside sliding windows: late and early statuses, not a uniform mix
    window = 5000
    for start in range(0, len(requests), window):
        chunk = requests[start : start + window]
        rng.shuffle(chunk)
        requests[start : start + window] = chunk
    rng.shuffle(requests)
    now = time.time()
    records = []
    statuses = 0
    for i, request in enumerate(requests[:target_records]):
        name = "events" if request.path == "/v1/events" else request.path.rsplit("/", 1)[1]
        webhook = WebhookRequest(
            name,
            "POST",
            "http://127.0.0.1:8080" + request.path,
            request.headers,
            request.body,
            now + i * 1e-5,
        )
        records.append(
            raw.encode(raw_topic(settings, name), webhook, REGISTRY[name].SIGNATURE_HEADERS)
        )
        statuses += len(request.keys)
    return Workload(records, messages, statuses)


def local_broker(bootstrap: str) -> dict[str, Any]:
    """aiokafka arguments for the bench's own plaintext broker, built like every client's
    (processors/kafka/client.py)."""
    return kafka_client.client_kwargs(single_broker(kafka_bootstrap=bootstrap))


async def produce(bootstrap: str, records: list[raw.RawRecord]) -> float:
    """Write every record (acks=all); returns seconds taken."""
    producer = AIOKafkaProducer(
        **local_broker(bootstrap),
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
        max_batch_size=512 * 1024,
    )
    await producer.start()
    started = time.perf_counter()
    try:
        pending = []
        for record in records:
            pending.append(
                await producer.send(
                    record.topic, record.value, key=record.key, headers=record.headers
                )
            )
            if len(pending) >= 20_000:
                for future in pending:
                    await future
                pending.clear()
        for future in pending:
            await future
    finally:
        await producer.stop()
    return time.perf_counter() - started
