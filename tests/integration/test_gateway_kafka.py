"""The real gateway process against a real broker (DESIGN.md section 7).

Two promises that only a real Kafka can prove: a request that is not answered 200 writes
nothing at all, and a request that is answered 200 is never lost, even when the broker
goes away while webhooks keep arriving and comes back later.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from support.infra import start_kafka
from support.processes import SECRETS, base_env, start_gateway, start_worker
from support.stream import check_message, collect, last_status

from bench import traffic
from processors.providers import meta, twilio

pytestmark = pytest.mark.integration

META_SECRET = SECRETS["MSGSTATUS_META_APP_SECRET"]
TWILIO_TOKEN = SECRETS["MSGSTATUS_TWILIO_AUTH_TOKEN"]
RAW_TOPICS = ("raw.twilio", "raw.meta", "raw.ryze", "raw.events")
STREAM_TOPICS = ("status.canonical", "status.transitions", "message.status", "status.deadletter")


def meta_body(message_id: str, status: str = "delivered", pad: str = "") -> bytes:
    payload = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"phone_number_id": "1065550000"},
                            "statuses": [
                                {"id": message_id, "status": status, "timestamp": "1760000000"}
                            ],
                        },
                    }
                ],
            }
        ],
    }
    if pad:
        payload["pad"] = pad
    return orjson.dumps(payload)


async def post(
    session: aiohttp.ClientSession, url: str, body: bytes | object, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    async with session.post(url, data=body, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.read()


def assert_json_error(status: int, headers: dict[str, str], body: bytes, want: int) -> dict:
    assert status == want, (status, body)
    assert headers.get("Content-Type", "").startswith("application/json"), headers
    doc = orjson.loads(body)
    assert isinstance(doc.get("error"), str) and doc["error"], doc
    for secret in SECRETS.values():
        assert secret.encode() not in body
    return doc


async def topic_records(
    bootstrap: str, topics: Iterable[str], timeout: float = 30
) -> tuple[int, list]:
    """(sum of end offsets, every record) of `topics`, read from the beginning."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions: list[TopicPartition] = []
        deadline = time.monotonic() + timeout
        for topic in topics:
            while True:
                await consumer._client.force_metadata_update()
                ids = consumer.partitions_for_topic(topic)
                if ids:
                    break
                assert time.monotonic() < deadline, f"topic {topic} does not exist"
                await asyncio.sleep(0.2)
            partitions += [TopicPartition(topic, p) for p in sorted(ids)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.beginning_offsets(partitions)
        total = sum(ends[tp] - starts[tp] for tp in partitions)
        records: list = []
        while len(records) < total:
            assert time.monotonic() < deadline, f"read {len(records)} of {total} records"
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
        return sum(ends.values()), records
    finally:
        await consumer.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    # A fresh connection per request: an early 413 may leave a connection half-read.
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=30)
    ) as s:
        yield s


# --- a) bad requests write nothing ----------------------------------------------------


async def test_only_the_good_request_reaches_kafka(
    kafka, topic_prefix: str, tmp_path: Path, session: aiohttp.ClientSession
):
    limit = 4096
    env = base_env(
        kafka.bootstrap, topic_prefix, tmp_path / "data", MSGSTATUS_MAX_BODY_BYTES=str(limit)
    )
    gateway, url = start_gateway(env, tmp_path)
    try:
        body = meta_body("wamid.BAD1")
        answers = []

        # bad signature, missing signature
        answers.append(
            (401, await post(session, url + "/webhooks/meta", body, meta.sign("", body, "wrong")))
        )
        answers.append(
            (
                401,
                await post(
                    session, url + "/webhooks/meta", body, {"content-type": "application/json"}
                ),
            )
        )
        form = b"MessageSid=SMbad&MessageStatus=delivered"
        answers.append(
            (
                401,
                await post(
                    session,
                    url + "/webhooks/twilio",
                    form,
                    {"content-type": "application/x-www-form-urlencoded"},
                ),
            )
        )
        signed_elsewhere = twilio.sign(
            "https://elsewhere.example/webhooks/twilio", form, TWILIO_TOKEN
        )
        answers.append((401, await post(session, url + "/webhooks/twilio", form, signed_elsewhere)))
        answers.append(
            (
                401,
                await post(
                    session,
                    url + "/v1/events",
                    b'{"provider": "crm"}',
                    {"content-type": "application/json", "authorization": "Bearer nope"},
                ),
            )
        )
        # oversized: with Content-Length and chunked without it
        big = meta_body("wamid.BIG", pad="x" * (limit * 4))
        answers.append(
            (413, await post(session, url + "/webhooks/meta", big, meta.sign("", big, META_SECRET)))
        )

        async def pieces() -> AsyncIterator[bytes]:
            for start in range(0, len(big), 1024):
                yield big[start : start + 1024]

        answers.append(
            (
                413,
                await post(
                    session, url + "/webhooks/meta", pieces(), meta.sign("", big, META_SECRET)
                ),
            )
        )
        # wrong content type, signed body that is not JSON, unknown provider
        answers.append(
            (
                415,
                await post(
                    session,
                    url + "/webhooks/meta",
                    body,
                    {**meta.sign("", body, META_SECRET), "content-type": "text/plain"},
                ),
            )
        )
        broken = b'{"object": "whatsapp_business_account", '
        answers.append(
            (
                400,
                await post(
                    session, url + "/webhooks/meta", broken, meta.sign("", broken, META_SECRET)
                ),
            )
        )
        answers.append(
            (
                404,
                await post(
                    session, url + "/webhooks/nosuch", body, {"content-type": "application/json"}
                ),
            )
        )
        async with session.get(url + "/webhooks/twilio") as resp:
            answers.append((405, (resp.status, dict(resp.headers), await resp.read())))
        assert answers[-1][1][1].get("Allow") == "POST"

        for want, (status, headers, text) in answers:
            assert_json_error(status, headers, text, want)

        good = meta_body(f"wamid.GOOD{uuid.uuid4().hex[:8]}")
        status, _, text = await post(
            session, url + "/webhooks/meta", good, meta.sign("", good, META_SECRET)
        )
        assert status == 200, text
    finally:
        gateway.stop()
    assert not gateway.alive()

    topics = [topic_prefix + t for t in (*RAW_TOPICS, *STREAM_TOPICS)]
    total, records = await topic_records(kafka.bootstrap, topics)
    assert total == 1, [(r.topic, r.value[:80]) for r in records]
    assert len(records) == 1
    assert records[0].topic == topic_prefix + "raw.meta"
    assert records[0].value == good


# --- b) Kafka stops while webhooks arrive -------------------------------------------------


async def post_once(
    session: aiohttp.ClientSession, base: str, request: traffic.Request
) -> tuple[int, dict[str, str], bytes]:
    try:
        return await post(session, base + request.path, request.body, request.headers)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return 0, {}, repr(exc).encode()


async def retry_until_ok(
    session: aiohttp.ClientSession, base: str, request: traffic.Request, deadline: float
) -> int:
    """Post like a provider: retry after 503 (honouring Retry-After, capped) until 200."""
    attempts = 0
    while time.monotonic() < deadline:
        attempts += 1
        status, headers, body = await post_once(session, base, request)
        if status == 200:
            return attempts
        assert status in (0, 503), (status, body)
        pause = min(float(headers.get("Retry-After", "1")), 1.0)
        await asyncio.sleep(pause)
    raise AssertionError(f"{request.path} not accepted in time after {attempts} attempts")


@pytest.mark.slow
async def test_nothing_acknowledged_is_lost_when_kafka_stops(
    redis_server, topic_prefix: str, tmp_path: Path, session: aiohttp.ClientSession
):
    broker = start_kafka(tmp_path / "kafka")
    gateway = worker = None
    try:
        env = base_env(
            broker.bootstrap,
            topic_prefix,
            tmp_path / "data",
            MSGSTATUS_PRODUCE_TIMEOUT="2",
            MSGSTATUS_REDIS_URL=redis_server.url,
        )
        gateway, url = start_gateway(env, tmp_path)
        rng = random.Random(4242)
        messages = traffic.make_messages(20, rng, uuid.uuid4().hex[:6])
        requests = traffic.build_requests(messages, url, SECRETS, rng)
        rng.shuffle(requests)
        assert len({r.body for r in requests}) == len(requests)
        half = len(requests) // 2
        before, during = requests[:half], requests[half:]
        acknowledged: list[bytes] = []

        # 1. Kafka up: accepted
        for request in before:
            status, _, body = await post_once(session, url, request)
            assert status == 200, body
            acknowledged.append(request.body)

        # 2. Kafka down: every answer is 503 + Retry-After + JSON error, never 200
        broker.stop()
        started = time.monotonic()
        answers = await asyncio.gather(*(post_once(session, url, r) for r in during))
        outage_seconds = time.monotonic() - started
        for status, headers, body in answers:
            assert status != 200, "acknowledged while Kafka was down"
            assert_json_error(status, headers, body, 503)
            assert int(headers["Retry-After"]) > 0
        async with session.get(url + "/readyz") as resp:
            assert_json_error(resp.status, dict(resp.headers), await resp.read(), 503)
            assert "Retry-After" in resp.headers
        assert gateway.alive(), gateway.log_tail()

        # 3. Kafka back on the same data dir: the provider's retries get through
        broker.start()
        broker.wait_ready(120)
        deadline = time.monotonic() + 60
        attempts = await asyncio.gather(
            *(retry_until_ok(session, url, r, deadline) for r in during)
        )
        acknowledged += [r.body for r in during]
        recovery_seconds = time.monotonic() - started
        async with session.get(url + "/readyz") as resp:
            assert resp.status == 200

        # 4. every acknowledged body is in its raw topic (duplicates allowed, no loss)
        raw_topics = [topic_prefix + t for t in RAW_TOPICS]
        _, records = await topic_records(broker.bootstrap, raw_topics)
        stored = [r.value for r in records]
        missing = [b for b in acknowledged if b not in set(stored)]
        assert not missing, f"{len(missing)} acknowledged webhooks lost, e.g. {missing[:2]}"
        assert len(stored) >= len(acknowledged)
        for record in records:
            provider = record.topic.removeprefix(topic_prefix + "raw.")
            assert dict(record.headers)["msgstatus-provider"] == provider.encode()

        # 5. and the worker turns them all into message.status, ordered and complete
        worker = start_worker(env, tmp_path, data_dir=tmp_path / "worker")
        expected = {m.key: m.expected for m in messages}

        def done(by_key):
            return all(last_status(by_key.get(k, [])) == want for k, want in expected.items())

        by_key = await collect(broker.bootstrap, topic_prefix + "message.status", done, 120)
        wrong = {
            k: (last_status(by_key.get(k, [])), want)
            for k, want in expected.items()
            if last_status(by_key.get(k, [])) != want
        }
        assert not wrong, f"{len(wrong)} messages incomplete: {list(wrong.items())[:5]}\n" + (
            worker.log_tail()
        )
        problems = [p for key, evs in by_key.items() for p in check_message(key, evs)]
        assert not problems, problems[:20]
        assert set(by_key) == set(expected)
        print(
            f"\n{len(before)} accepted, {len(during)} refused during the outage "
            f"({outage_seconds:.1f}s), all accepted {recovery_seconds:.1f}s after the stop "
            f"(max {max(attempts)} attempts); {len(stored)} raw records for "
            f"{len(acknowledged)} acknowledged webhooks"
        )
    finally:
        if worker is not None:
            worker.stop()
        if gateway is not None:
            gateway.stop()
        broker.stop()
    assert not broker.is_running()
