"""The Redis read model on real parts: what one batch writes, and a projector that waits
out a stalled Redis and rebuilds a Redis that came back empty, dropping nothing."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
import urllib.error
import urllib.request
import uuid

import orjson
import pytest
import redis.asyncio as aioredis
from support.infra import start_redis
from support.processes import SECRETS, base_env, start_gateway, start_worker
from support.stream import check_message, collect, last_status, read_to_end

from bench import traffic
from processors.model import ENGAGEMENT
from processors.store.readmodel import Batch, OffsetsMoved, ReadModel, ReadModelUnavailable

pytestmark = pytest.mark.integration


def doc(key: str, sequence: int, status: str) -> dict:
    return {"message_key": key, "sequence": sequence, "status": status}


async def test_a_batch_is_idempotent_keeps_newer_documents_and_records_offsets(
    redis_server, topic_prefix
) -> None:
    model = ReadModel(redis_server.url, topic_prefix)
    raw = aioredis.from_url(redis_server.url)
    try:
        newer = Batch(offsets={"t.message.status:0": 8})
        writes = newer.message("crm:a")
        writes.doc, writes.newest = doc("crm:a", 2, "delivered"), time.time()
        writes.history[orjson.dumps({"status": "delivered", "sequence": 2})] = 2.0
        older = Batch(offsets={"t.message.status:0": 5, "t.status.transitions:1": 3})
        writes = older.message("crm:a")
        writes.doc, writes.newest = doc("crm:a", 1, "sent"), time.time()
        writes.history[orjson.dumps({"status": "sent", "sequence": 1})] = 1.0
        # each batch lands only on the offsets it was read after
        held: dict[str, int | None] = {"t.message.status:0": None, "t.status.transitions:1": None}
        for batch in (newer, older, newer, older):  # replays change nothing
            batch.expected = {name: held[name] for name in batch.offsets}
            assert await model.apply(batch, retention=3600.0, now=time.time()) == []
            held.update(batch.offsets)
        got = await model.get("crm:a")
        assert got["status"] == "delivered" and got["sequence"] == 2
        assert [e["sequence"] for e in got["history"]] == [1, 2]
        positions = await model.positions(
            ["t.message.status:0", "t.status.transitions:1", "t.message.status:3"]
        )
        assert positions == {
            "t.message.status:0": 5,
            "t.status.transitions:1": 3,
            "t.message.status:3": None,
        }
        ttl = await raw.pttl(f"{topic_prefix}msgstatus:msg:crm:a")
        assert 3_590_000 < ttl <= 3_600_000
        # read after other offsets than Redis holds (it lost data, or another projector
        # moved on): nothing is written
        stale = Batch(offsets={"t.message.status:0": 9}, expected={"t.message.status:0": 8})
        stale.message("crm:z").doc = doc("crm:z", 1, "sent")
        with pytest.raises(OffsetsMoved):
            await model.apply(stale, retention=0.0, now=time.time())
        assert await model.get("crm:z") is None
        assert await model.positions(["t.message.status:0"]) == {"t.message.status:0": 5}
        forever = Batch()
        forever.message("crm:b").doc = doc("crm:b", 1, "sent")
        await model.apply(forever, retention=0.0, now=time.time())
        assert await raw.pttl(f"{topic_prefix}msgstatus:msg:crm:b") == -1
    finally:
        await model.close()
        await raw.aclose()


async def test_a_key_redis_refuses_is_skipped_and_the_rest_written(
    redis_server, topic_prefix
) -> None:
    model = ReadModel(redis_server.url, topic_prefix)
    raw = aioredis.from_url(redis_server.url)
    try:
        await raw.set(f"{topic_prefix}msgstatus:msg:crm:bad", "someone else's string")
        batch = Batch(offsets={"t.message.status:0": 3}, expected={"t.message.status:0": None})
        for key in ("crm:good", "crm:bad"):
            batch.message(key).doc = doc(key, 1, "sent")
        assert await model.apply(batch, retention=0.0, now=time.time()) == ["crm:bad"]
        assert (await model.get("crm:good"))["status"] == "sent"
        assert await model.positions(["t.message.status:0"]) == {"t.message.status:0": 3}
    finally:
        await model.close()
        await raw.aclose()


# --- the whole system: Redis stalled, then killed and restarted empty -------------------


def metric(port: str, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def readyz(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=10) as answer:
            return answer.status, orjson.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


async def readyz_until(url: str, want: tuple[int, dict], timeout: float = 20) -> tuple[int, dict]:
    """/readyz until it answers `want` (a loaded shared broker can miss one probe)."""
    deadline = time.monotonic() + timeout
    while (got := await asyncio.to_thread(readyz, url)) != want and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    return got


def api_get(url: str, key: str) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{url}/v1/messages/{key}",
        headers={"Authorization": f"Bearer {SECRETS['MSGSTATUS_API_TOKEN']}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, orjson.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def mismatches(by_key: dict[str, list[dict]], docs: dict[str, dict | None]) -> list[str]:
    """Each document must equal its message's last event; its history must hold every
    applied sequence once, in observed order."""
    problems = []
    for key, events in by_key.items():
        data = max(events, key=lambda e: e["data"]["sequence"])["data"]
        got = docs.get(key)
        if got is None:
            problems.append(f"{key}: no document")
            continue
        status = data["previous_status"] if data["status"] in ENGAGEMENT else data["status"]
        want = {
            "message_key": key,
            "provider": data["provider"],
            "provider_message_id": data["provider_message_id"],
            "channel": data["channel"],
            "account": data["account"],
            "status": status,
            "sequence": data["sequence"],
            "error": data["error"],
            "updated_at": data["emitted_at"],
        }
        have = {name: got.get(name) for name in want}
        if have != want:
            problems.append(f"{key}: document {have} != last event {want}")
        applied = [e["sequence"] for e in got["history"] if e["outcome"] == "applied"]
        if sorted(applied) != list(range(1, data["sequence"] + 1)):
            problems.append(f"{key}: applied history {applied}")
        observed = [e["observed_at"] for e in got["history"]]
        if observed != sorted(observed):
            problems.append(f"{key}: history not in observed order")
    return problems


async def read_all(model: ReadModel, keys: list[str]) -> dict[str, dict | None]:
    return {key: await model.get(key) for key in keys}


async def wait_for_read_model(
    model: ReadModel, bootstrap: str, topic: str, timeout: float
) -> tuple[list[str], dict[str, list[dict]]]:
    """Until the read model equals what `message.status` holds at that moment."""
    deadline = time.monotonic() + timeout
    while True:
        by_key = await read_to_end(bootstrap, topic)
        problems = mismatches(by_key, await read_all(model, list(by_key)))
        if not problems or time.monotonic() > deadline:
            return problems, by_key
        await asyncio.sleep(1.0)


@pytest.mark.slow
async def test_read_model_catches_up_after_redis_stalls_and_after_it_restarts_empty(
    kafka, topic_prefix, tmp_path
) -> None:
    redis = start_redis(tmp_path / "redis")
    env = base_env(kafka.bootstrap, topic_prefix, tmp_path / "data", MSGSTATUS_REDIS_URL=redis.url)
    gateway, url = start_gateway(env, tmp_path)
    worker = start_worker(env, tmp_path)
    metrics_port = worker.env["MSGSTATUS_METRICS_PORT"]
    model = ReadModel(redis.url, topic_prefix)
    status_topic = topic_prefix + "message.status"
    try:
        rng = random.Random(1313)
        messages = traffic.make_messages(450, rng, uuid.uuid4().hex[:6])
        requests = traffic.mess_up(traffic.build_requests(messages, url, SECRETS, rng), rng)
        expected = {m.key: m.expected for m in messages}
        first, second, third = (requests[i::3] for i in range(3))

        def final(by_key: dict) -> bool:
            return all(last_status(by_key.get(k, [])) == v for k, v in expected.items())

        # 1. Redis stalls (SIGSTOP: connections hang, then time out) while traffic flows
        assert await traffic.post_all(url, first) == {200: len(first)}
        await collect(kafka.bootstrap, status_topic, lambda b: len(b) > 100, timeout=60)
        assert redis.pid is not None
        os.kill(redis.pid, signal.SIGSTOP)
        try:
            assert await traffic.post_all(url, second) == {200: len(second)}
            await asyncio.sleep(6)
            down = {"status": "ready", "dependencies": {"kafka": "up", "redis": "down"}}
            down["down"] = ["redis"]
            assert await readyz_until(url, (200, down)) == (200, down)  # webhooks still taken
            assert api_get(url, messages[0].key)[0] == 503
        finally:
            os.kill(redis.pid, signal.SIGCONT)
        problems, by_key = await wait_for_read_model(model, kafka.bootstrap, status_topic, 90)
        assert not problems, problems[:5]
        assert len(by_key) > 300
        assert metric(metrics_port, "msgstatus_read_model_resets_total") == 0
        assert "pausing until Redis answers" in worker.log_path.read_text()

        # 2. Redis is killed mid-stream and comes back empty (no persistence): rebuilt
        posting = asyncio.create_task(traffic.post_all(url, third))
        await asyncio.sleep(0.5)
        redis.kill()
        assert await posting == {200: len(third)}
        by_key = await collect(kafka.bootstrap, status_topic, final, timeout=120)
        assert final(by_key), worker.log_tail()
        await asyncio.sleep(3)
        assert await readyz_until(url, (200, down)) == (200, down)
        redis.start()
        redis.wait_ready(30)
        problems, by_key = await wait_for_read_model(model, kafka.bootstrap, status_topic, 90)
        assert not problems, f"{problems[:5]}\n{worker.log_tail()}"
        assert final(by_key)
        up = {"status": "ready", "dependencies": {"kafka": "up", "redis": "up"}, "down": []}
        assert await readyz_until(url, (200, up)) == (200, up)
        stream_problems = [p for k, events in by_key.items() for p in check_message(k, events)]
        assert not stream_problems, stream_problems[:5]
        assert metric(metrics_port, "msgstatus_read_model_dropped_total") == 0
        assert metric(metrics_port, "msgstatus_read_model_resets_total") >= 1
        # the API answers the section 7 format from the rebuilt model
        code, answer = api_get(url, messages[1].key)
        assert code == 200
        assert set(answer) == {
            "message_key", "provider", "provider_message_id", "channel", "account",
            "status", "sequence", "error", "updated_at", "history",
        }  # fmt: skip
        for entry in answer["history"]:
            assert set(entry) - {"sequence"} == {
                "status", "provider_status", "occurred_at", "observed_at", "outcome",
            }  # fmt: skip
            assert ("sequence" in entry) == (entry["outcome"] == "applied")
        print(
            f"\nread model: {len(by_key)} messages, "
            f"{sum(len(d['history']) for d in (await read_all(model, list(by_key))).values())} "
            f"history entries, all equal to message.status after a stall and an empty restart"
        )
    finally:
        with_redis_running = redis.pid is not None
        if with_redis_running:
            os.kill(redis.pid, signal.SIGCONT)
        await model.close()
        gateway.stop()
        worker.stop()
        redis.stop()


# --- the projector in-process: a Redis that restarted empty while nothing was written ---


def status_event(mid: str, sequence: int, status: str) -> bytes:
    from processors.stream import cloudevents

    now = time.time()
    return orjson.dumps(
        cloudevents.build(
            meta={"provider": "crm", "provider_message_id": mid, "channel": "sms", "account": None},
            status=status,
            previous_status=None if sequence == 1 else "sent",
            implied=[],
            sequence=sequence,
            provider_status=status,
            error=None,
            occurred_at=now,
            observed_at=now,
            emitted_at=now,
        )
    )


async def test_an_idle_projector_rebuilds_a_redis_that_came_back_empty(
    kafka, topic_prefix, tmp_path
) -> None:
    from aiokafka import AIOKafkaProducer

    from processors.config import single_broker
    from processors.kafka.topics import ensure_topics
    from processors.store.projector import Projector

    redis = start_redis(tmp_path / "redis")
    settings = single_broker(
        kafka_bootstrap=kafka.bootstrap, topic_prefix=topic_prefix, redis_url=redis.url
    )
    topic = settings.topic("message.status")
    await ensure_topics(settings, [topic, settings.topic("status.transitions")])
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap)
    await producer.start()
    model = ReadModel(redis.url, topic_prefix)
    projector = Projector(settings, model, check_every=1.0, backoff_max=1.0)
    task = asyncio.create_task(projector.run())
    keys = [f"crm:m{i}" for i in range(60)]

    async def documents() -> int:
        for _ in range(5):  # the first use of a connection from before the restart fails
            try:
                return len([key for key in keys if await model.get(key) is not None])
            except ReadModelUnavailable:
                await asyncio.sleep(0.2)
        raise AssertionError("Redis does not answer")

    async def wait_for(count: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while (found := await documents()) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.3)
        return found

    try:
        for i, key in enumerate(keys):
            await producer.send_and_wait(topic, status_event(f"m{i}", 1, "sent"), key=key.encode())
        assert await wait_for(len(keys), 30) == len(keys)
        # restarted between two writes: nothing new comes, no write fails, yet it is rebuilt
        redis.kill()
        redis.start()
        redis.wait_ready(30)
        assert await documents() == 0
        assert await wait_for(len(keys), 30) == len(keys)
        assert (await model.get(keys[7]))["status"] == "sent"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await producer.stop()
        await model.close()
        redis.stop()


async def test_documents_written_by_a_tool_outside_the_projector(redis_server, topic_prefix):
    """`msgstatus rebuild` writes corrected documents directly; the projector's later
    write of the same event changes nothing and the entry is shown once."""
    model = ReadModel(redis_server.url, topic_prefix)
    try:
        entry = {"status": "delivered", "outcome": "applied", "sequence": 3, "observed_ts": 5.5}
        await model.write([doc("crm:w", 3, "delivered"), doc("crm:w", 2, "sent")], [
            ("crm:w", entry)
        ])  # fmt: skip
        later = Batch(offsets={}, expected={})
        later.message("crm:w").doc = doc("crm:w", 3, "delivered")
        later.message("crm:w").history[orjson.dumps({**entry, "observed_ts": 5.0})] = 5.0
        await model.apply(later, retention=0.0, now=time.time())
        got = await model.get("crm:w")
        assert got["status"] == "delivered" and got["sequence"] == 3
        assert got["history"] == [{"status": "delivered", "outcome": "applied", "sequence": 3}]
    finally:
        await model.close()
