"""Issue 12 on the real broker: hostile bodies go through the real gateway and the real
worker, end as dead letters (or as correctly split canonical records), and the messages
posted around them still reach message.status; the worker never stops.

- a signed body nested 300 deep is refused by the gateway (400), and the same body
  written straight to raw.sendgrid (an old record, a replay) is dead-lettered as too_deep;
- a signed body nested 60 deep (under the gateway's limit) is accepted and its item
  dead-lettered with the exact bytes;
- one signed SendGrid POST of 450 bounces with 2 KB reasons, all on one partition: the
  old worker wrote it as one 1 MB canonical record the producer refused, and stopped;
  now it is split into records of at most 256 KB and every bounce reaches message.status;
- a near-megabyte SendGrid POST of 2500 unknown events: a bounded set of dead letters,
  each within its size limit.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from cryptography.hazmat.primitives.asymmetric import ec
from support.processes import SECRETS, base_env, start_gateway, start_worker
from support.stream import check_message, collect, last_status

from processors.kafka import raw
from processors.providers import sendgrid
from processors.providers.base import WebhookRequest
from processors.stream.normalize import MAX_DEADLETTER_BYTES, MAX_RECORD_BYTES

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SG_KEY = ec.generate_private_key(ec.SECP256R1())
EVENTS_TOKEN = SECRETS["MSGSTATUS_EVENTS_TOKEN"]


async def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(force_close=True)
    async with (
        aiohttp.ClientSession(timeout=timeout, connector=connector) as session,
        session.post(url, data=body, headers=headers) as answer,
    ):
        return answer.status, await answer.read()


def sg(events: list[dict[str, Any]]) -> tuple[bytes, dict[str, str]]:
    body = orjson.dumps(events)
    return body, sendgrid.sign(body, SG_KEY, int(time.time()))


def sg_event(message_id: str, word: str, **extra: Any) -> dict[str, Any]:
    return {
        "email": "a@example.com",
        "timestamp": int(time.time()),
        "event": word,
        "sg_event_id": uuid.uuid4().hex,
        "sg_message_id": message_id,
        **extra,
    }


def nested(depth: int) -> bytes:
    return b"[" * depth + b"1" + b"]" * depth


async def write_raw(bootstrap: str, topic: str, provider: str, body: bytes) -> None:
    """A raw record as the gateway writes one, straight to the topic: what an old record
    or a replay from elsewhere would be (no gateway check on the way)."""
    request = WebhookRequest(
        provider,
        "POST",
        f"http://127.0.0.1/webhooks/{provider}",
        {"content-type": "application/json"},
        body,
        time.time(),
    )
    record = raw.encode(topic, request, ())
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            topic, record.value, key=record.key, headers=list(record.headers)
        )
    finally:
        await producer.stop()


async def read_topic(bootstrap: str, topic: str, want: int, timeout: float) -> list[Any]:
    """Records of `topic` from the start, until at least `want` arrived and everything
    the topic held when reading started was read, or the timeout."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        ends: dict[Any, int] = {}
        seen: dict[Any, int] = {}  # partition -> next offset after what was read
        while time.monotonic() < deadline:
            for tp, batch in (await consumer.getmany(timeout_ms=500, max_records=5000)).items():
                records.extend(batch)
                seen[tp] = batch[-1].offset + 1
            if not ends and consumer.assignment():
                ends = await consumer.end_offsets(list(consumer.assignment()))
            read_all = bool(ends) and all(seen.get(tp, 0) >= end for tp, end in ends.items())
            if len(records) >= want and read_all:
                break
    finally:
        await consumer.stop()
    return records


async def test_hostile_bodies_end_as_dead_letters_and_the_pipeline_goes_on(
    kafka, topic_prefix, tmp_path
):
    env = base_env(
        kafka.bootstrap,
        topic_prefix,
        tmp_path / "data",
        MSGSTATUS_SENDGRID_PUBLIC_KEY=sendgrid.public_key_setting(SG_KEY),
        MSGSTATUS_PARTITIONS="1",  # every canonical event of one batch on one partition
    )
    gateway, url = start_gateway(env, tmp_path)
    worker = start_worker(env, tmp_path, "--no-read-model")
    run = uuid.uuid4().hex[:8]
    before, after = f"{run}-before.f.0", f"{run}-after.f.0"
    bounces = [f"{run}-bounce-{i}.f.0" for i in range(450)]
    expected = {f"sendgrid:{before}": "delivered", f"sendgrid:{after}": "delivered"}
    expected |= {f"crm:{run}-events-before": "sent", f"crm:{run}-events-after": "sent"}
    expected |= {f"sendgrid:{m}": "undelivered" for m in bounces}
    events_headers = {"content-type": "application/json", "authorization": f"Bearer {EVENTS_TOKEN}"}

    def report(message_id: str) -> bytes:
        return orjson.dumps(
            {"provider": "crm", "provider_message_id": message_id, "status": "sent"}
        )

    try:
        # messages before the hostile ones
        body, headers = sg([sg_event(before, "processed"), sg_event(before, "delivered")])
        assert (await post(url + "/webhooks/sendgrid", body, headers))[0] == 200
        status, _ = await post(url + "/v1/events", report(f"{run}-events-before"), events_headers)
        assert status == 200

        # 1. nested 300 deep: refused by the gateway; written around it: dead-lettered
        deep_body, headers = sg([sg_event("x", "processed", pad=orjson.Fragment(nested(300)))])
        status, answer = await post(url + "/webhooks/sendgrid", deep_body, headers)
        assert status == 400 and b"nested deeper than 64" in answer, answer
        await write_raw(kafka.bootstrap, topic_prefix + "raw.sendgrid", "sendgrid", deep_body)

        # 2. nested 60 deep: accepted (under the gateway's limit), its item dead-lettered
        medium = b"[" + nested(59) + b"]"
        status, _ = await post(
            url + "/webhooks/sendgrid", medium, sendgrid.sign(medium, SG_KEY, int(time.time()))
        )
        assert status == 200

        # 3. the oversized batch: 450 bounces with 2 KB reasons in one POST
        reason = "550 5.1.1 The email account that you tried to reach does not exist. " * 30
        big = [
            sg_event(
                m,
                "bounce",
                status="5.1.1",
                type="bounce",
                reason=reason[:2000],
                bounce_classification="Invalid Address",
            )
            for m in bounces
        ]
        body, headers = sg(big)
        assert 900_000 < len(body) < 1_040_000, len(body)
        status, answer = await post(url + "/webhooks/sendgrid", body, headers)
        assert status == 200, answer

        # 4. a near-megabyte POST of 2500 unknown events: bounded dead letters
        junk = [sg_event(f"{run}-junk-{i}", f"weird-{i}", pad="p" * 150) for i in range(2500)]
        body, headers = sg(junk)
        assert 700_000 < len(body) < 1_040_000, len(body)
        status, answer = await post(url + "/webhooks/sendgrid", body, headers)
        assert status == 200, answer

        # messages after them
        body, headers = sg([sg_event(after, "processed"), sg_event(after, "delivered")])
        assert (await post(url + "/webhooks/sendgrid", body, headers))[0] == 200
        status, _ = await post(url + "/v1/events", report(f"{run}-events-after"), events_headers)
        assert status == 200

        def done(by_key: dict[str, list[dict[str, Any]]]) -> bool:
            return all(last_status(by_key.get(k, [])) == want for k, want in expected.items())

        by_key = await collect(kafka.bootstrap, topic_prefix + "message.status", done, timeout=180)
        wrong = {
            k: last_status(by_key.get(k, []))
            for k, want in expected.items()
            if last_status(by_key.get(k, [])) != want
        }
        assert not wrong, (list(wrong.items())[:5], worker.log_tail())
        for key in expected:
            assert check_message(key, by_key[key]) == []
        for m in bounces[:5]:
            error = by_key[f"sendgrid:{m}"][-1]["data"]["error"]
            assert error["category"] == "unreachable" and len(error["description"]) == 1024

        # the canonical records of the big batch were split, each within its limit
        canonical = await read_topic(
            kafka.bootstrap, topic_prefix + "status.canonical", 1, timeout=30
        )
        sizes = [len(r.value) for r in canonical]
        assert max(sizes) <= MAX_RECORD_BYTES
        carrying_bounces = [r for r in canonical if f"{run}-bounce-".encode() in r.value]
        assert len({r.offset for r in carrying_bounces}) >= 3

        # the dead letters: too_deep for the raw record, the 60-deep item, the junk batch
        letters = [
            orjson.loads(r.value)
            for r in await read_topic(
                kafka.bootstrap, topic_prefix + "status.deadletter", 103, timeout=60
            )
        ]
        assert all(len(orjson.dumps(d)) <= MAX_DEADLETTER_BYTES for d in letters)
        categories = [d["category"] for d in letters]
        assert categories.count("too_deep") == 1, categories[:10]
        deep_letter = next(d for d in letters if d["category"] == "too_deep")
        assert base64.b64decode(deep_letter["body_b64"]) == deep_body
        medium_letter = next(d for d in letters if d["category"] == "invalid_item")
        assert base64.b64decode(medium_letter["body_b64"]) == medium
        unknown = [d for d in letters if d["category"] == "unknown_status"]
        assert 100 <= len(unknown) <= 101 and "more dead items" in unknown[-1]["reason"]

        assert worker.alive(), worker.log_tail()
        assert gateway.alive(), gateway.log_tail()
        assert "Traceback" not in gateway.log_tail(200)
    finally:
        worker.stop()
        gateway.stop()
    await asyncio.sleep(0)
