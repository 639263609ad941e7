"""Read and judge what msgstatus published on `message.status`."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from jsonschema import Draft202012Validator

from processors.model import ENGAGEMENT, FAILURES, MILESTONES, RANK

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "schemas" / "message.status.schema.json").read_text()
)
VALIDATOR = Draft202012Validator(SCHEMA)


async def collect(
    bootstrap: str,
    topic: str,
    done: Callable[[dict[str, list[dict[str, Any]]]], bool],
    timeout: float,
) -> dict[str, list[dict[str, Any]]]:
    """Read the topic from the start until `done(events_by_key)` or the timeout."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for records in batch.values():
                for record in records:
                    event = orjson.loads(record.value)
                    assert record.key.decode() == event["data"]["message_key"]
                    by_key[event["data"]["message_key"]].append(event)
            if done(by_key):
                # drain a little longer: anything extra (duplicates) must show up too
                await asyncio.sleep(1.0)
                for records in (await consumer.getmany(timeout_ms=1000)).values():
                    for record in records:
                        event = orjson.loads(record.value)
                        by_key[event["data"]["message_key"]].append(event)
                break
    finally:
        await consumer.stop()
    return dict(by_key)


def last_status(events: list[dict[str, Any]]) -> str | None:
    told = [e["data"]["status"] for e in events if e["data"]["status"] not in ENGAGEMENT]
    return told[-1] if told else None


def allowed(previous: str | None, status: str) -> bool:
    if previous is None:
        return True
    if status in RANK:
        if previous in FAILURES:
            return RANK[status] >= RANK["delivered"]
        return RANK[status] > RANK.get(previous, -1)
    if status in FAILURES:
        return previous not in FAILURES and RANK.get(previous, -1) < RANK["delivered"]
    return False


def check_message(key: str, events: list[dict[str, Any]], allow_repeats: bool = False) -> list[str]:
    """Every contract of the output for one message; returns the problems found."""
    problems: list[str] = []
    by_seq: dict[int, dict[str, Any]] = {}
    for event in events:
        errors = sorted(VALIDATOR.iter_errors(event), key=str)
        if errors:
            problems.append(f"{key}: schema: {errors[0].message}")
        seq = event["data"]["sequence"]
        if seq in by_seq:
            if not allow_repeats:
                problems.append(f"{key}: sequence {seq} emitted twice")
            elif by_seq[seq]["id"] != event["id"]:
                problems.append(f"{key}: sequence {seq} re-emitted with a different id")
            elif by_seq[seq] != event:
                problems.append(f"{key}: sequence {seq} re-emitted with different bytes")
            continue
        by_seq[seq] = event
    ordered = [by_seq[s] for s in sorted(by_seq)]
    if [e["data"]["sequence"] for e in ordered] != list(range(1, len(ordered) + 1)):
        problems.append(f"{key}: sequences {sorted(by_seq)} are not 1..n")
    told: str | None = None
    reached: set[str] = set()
    for event in ordered:
        data = event["data"]
        status = data["status"]
        if status in ENGAGEMENT:
            continue
        if data["previous_status"] != told:
            problems.append(
                f"{key}: #{data['sequence']} previous_status {data['previous_status']} != {told}"
            )
        if not allowed(told, status):
            problems.append(f"{key}: regression {told} -> {status}")
        for implied in data["implied"]:
            if implied in reached:
                problems.append(
                    f"{key}: #{data['sequence']} implies {implied} which was already told"
                )
        reached.update(data["implied"])
        reached.add(status)
        if status in RANK:
            missing = [m for m in MILESTONES if RANK[m] < RANK[status] and m not in reached]
            if missing:
                problems.append(f"{key}: {status} without {missing} told or implied")
        told = status
    return problems


async def send_events(bootstrap: str, topic: str, bodies: list[list[dict[str, Any]]]) -> None:
    """Write each body as the gateway writes a `/v1/events` request to `topic` (acks=all)."""
    import time

    from aiokafka import AIOKafkaProducer

    from processors.kafka import raw
    from processors.providers.base import WebhookRequest

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for body in bodies:
            webhook = WebhookRequest(
                "events",
                "POST",
                "http://127.0.0.1/v1/events",
                {"content-type": "application/json"},
                orjson.dumps(body),
                time.time(),
            )
            record = raw.encode(topic, webhook, ())
            await producer.send_and_wait(
                record.topic, record.value, key=record.key, headers=list(record.headers)
            )
    finally:
        await producer.stop()


async def read_to_end(bootstrap: str, topic: str) -> dict[str, list[dict[str, Any]]]:
    """Every event of the topic up to its end offsets as of now, by message key."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    try:
        cluster = await consumer._client.fetch_all_metadata()
        partitions = cluster.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        left = {tp for tp in tps if ends[tp] > 0}
        while left:
            batch = await consumer.getmany(*left, timeout_ms=1000, max_records=5000)
            for tp, records in batch.items():
                for record in records:
                    event = orjson.loads(record.value)
                    by_key[event["data"]["message_key"]].append(event)
                if records and records[-1].offset + 1 >= ends[tp]:
                    left.discard(tp)
    finally:
        await consumer.stop()
    return dict(by_key)
