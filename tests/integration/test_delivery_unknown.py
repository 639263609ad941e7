"""`delivery_unknown` on the real broker: once per stuck message, never for delivered
ones, safe across SIGKILL, rebalances and replays of old logs."""

from __future__ import annotations

import asyncio
import time
import uuid

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from support.processes import SECRETS, base_env, start_gateway, start_worker
from support.stream import check_message, collect

from bench.traffic import Request, post_all
from processors.kafka import raw
from processors.providers.base import WebhookRequest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TIMEOUT = 3.0


def event(mid: str, status: str, at: float | None = None) -> Request:
    body = orjson.dumps(
        {
            "provider": "crm",
            "provider_message_id": mid,
            "channel": "web",
            "status": status,
            "occurred_at": at if at is not None else time.time(),
        }
    )
    headers = {
        "content-type": "application/json",
        "authorization": f"Bearer {SECRETS['MSGSTATUS_EVENTS_TOKEN']}",
    }
    return Request("/v1/events", headers, body, [f"crm:{mid}"])


def unknown_ids(events: list[dict]) -> set[str]:
    return {e["id"] for e in events if e["data"]["status"] == "delivery_unknown"}


def env_for(kafka, prefix, tmp_path, **extra):
    settings = {
        "MSGSTATUS_DELIVERY_UNKNOWN_AFTER": str(TIMEOUT),
        "MSGSTATUS_REDIS_URL": "redis://127.0.0.1:1/0",
    }
    return base_env(kafka.bootstrap, prefix, tmp_path / "data", **{**settings, **extra})


def judge(by_key: dict, stuck: list[str], in_time: list[str]) -> None:
    for mid in stuck:
        events = by_key.get(f"crm:{mid}", [])
        assert len(unknown_ids(events)) == 1, (mid, [e["data"]["status"] for e in events])
    for mid in in_time:
        events = by_key.get(f"crm:{mid}", [])
        assert not unknown_ids(events), (mid, [e["data"]["status"] for e in events])
    problems = [
        p for key, events in by_key.items() for p in check_message(key, events, allow_repeats=True)
    ]
    assert not problems, problems[:10]


async def test_stuck_get_one_unknown_and_late_delivered_still_applies(
    kafka, topic_prefix, tmp_path
):
    env = env_for(kafka, topic_prefix, tmp_path)
    gateway, url = start_gateway(env, tmp_path)
    worker = start_worker(env, tmp_path, "--no-read-model")
    run = uuid.uuid4().hex[:6]
    stuck = [f"s{run}{i}" for i in range(30)]
    in_time = [f"d{run}{i}" for i in range(30)]
    late = [f"l{run}{i}" for i in range(10)]
    try:
        sends = [event(m, "sent") for m in stuck + in_time + late]
        assert await post_all(url, sends) == {200: len(sends)}
        assert await post_all(url, [event(m, "delivered") for m in in_time]) == {200: len(in_time)}
        status = topic_prefix + "message.status"

        def fired(by_key):
            return all(unknown_ids(by_key.get(f"crm:{m}", [])) for m in stuck + late)

        await collect(kafka.bootstrap, status, fired, timeout=60)
        assert await post_all(url, [event(m, "delivered") for m in late]) == {200: len(late)}

        def done(by_key):
            return all(
                any(e["data"]["status"] == "delivered" for e in by_key.get(f"crm:{m}", []))
                for m in late
            )

        by_key = await collect(kafka.bootstrap, status, done, timeout=60)
        await asyncio.sleep(TIMEOUT)  # room for a wrong second firing to show up
        by_key = await collect(kafka.bootstrap, status, lambda b: False, timeout=3)
        judge(by_key, stuck + late, in_time)
        for m in late:
            told = [
                e["data"] for e in sorted(by_key[f"crm:{m}"], key=lambda e: e["data"]["sequence"])
            ]
            assert [d["status"] for d in told] == ["sent", "delivery_unknown", "delivered"]
            assert told[2]["previous_status"] == "delivery_unknown"
        metrics = worker.env["MSGSTATUS_METRICS_PORT"]
        import urllib.request

        text = (
            urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5).read().decode()
        )
        assert "msgstatus_delivery_unknown_total 40.0" in text
        assert "msgstatus_pending_deadlines{" in text
    finally:
        gateway.stop()
        worker.stop()


@pytest.mark.soak  # make test: test_crash_consistency.py crashes with pending deadlines
async def test_sigkill_with_pending_deadlines_loses_and_duplicates_nothing(
    kafka, topic_prefix, tmp_path
):
    env = env_for(kafka, topic_prefix, tmp_path, MSGSTATUS_DELIVERY_UNKNOWN_AFTER="8")
    gateway, url = start_gateway(env, tmp_path)
    worker = start_worker(env, tmp_path, "--no-read-model")
    run = uuid.uuid4().hex[:6]
    stuck = [f"s{run}{i}" for i in range(40)]
    in_time = [f"d{run}{i}" for i in range(20)]
    while_down = [f"w{run}{i}" for i in range(20)]  # delivered reaches Kafka while no worker runs
    status = topic_prefix + "message.status"
    try:
        await post_all(url, [event(m, "sent") for m in stuck + in_time + while_down])
        await post_all(url, [event(m, "delivered") for m in in_time])

        def delivered(keys):
            return lambda b: all(
                any(e["data"]["status"] == "delivered" for e in b.get(f"crm:{m}", [])) for m in keys
            )

        await collect(kafka.bootstrap, status, delivered(in_time), timeout=60)
        worker.kill()  # deadlines pending, none due yet
        await post_all(url, [event(m, "delivered") for m in while_down])
        worker = start_worker(env, tmp_path, "--no-read-model")
        await asyncio.sleep(2)
        worker.kill()  # and again, around the time they fall due
        worker = start_worker(env, tmp_path, "--no-read-model", data_dir=tmp_path / "fresh")

        def fired(by_key):
            return all(unknown_ids(by_key.get(f"crm:{m}", [])) for m in stuck)

        await collect(kafka.bootstrap, status, fired, timeout=90)
        await asyncio.sleep(4)
        by_key = await collect(kafka.bootstrap, status, lambda b: False, timeout=3)
        judge(by_key, stuck, in_time + while_down)
    finally:
        gateway.stop()
        worker.stop()


@pytest.mark.soak  # make test: test_scale_out.py, test_rebalances.py
async def test_two_workers_and_a_rebalance(kafka, topic_prefix, tmp_path):
    env = env_for(kafka, topic_prefix, tmp_path, MSGSTATUS_DELIVERY_UNKNOWN_AFTER="8")
    gateway, url = start_gateway(env, tmp_path)
    first = start_worker(env, tmp_path, "--no-read-model", data_dir=tmp_path / "w1")
    second = None
    run = uuid.uuid4().hex[:6]
    stuck = [f"s{run}{i}" for i in range(40)]
    in_time = [f"d{run}{i}" for i in range(20)]
    status = topic_prefix + "message.status"
    try:
        await post_all(url, [event(m, "sent") for m in stuck + in_time])
        await post_all(url, [event(m, "delivered") for m in in_time])
        await collect(kafka.bootstrap, status, lambda b: len(b) >= 60, timeout=60)
        second = start_worker(
            env, tmp_path, "--no-read-model", data_dir=tmp_path / "w2"
        )  # rebalance
        await asyncio.sleep(4)
        first.stop()  # and another: the second takes every partition, deadlines still pending

        def fired(by_key):
            return all(unknown_ids(by_key.get(f"crm:{m}", [])) for m in stuck)

        await collect(kafka.bootstrap, status, fired, timeout=90)
        await asyncio.sleep(4)
        by_key = await collect(kafka.bootstrap, status, lambda b: False, timeout=3)
        judge(by_key, stuck, in_time)
    finally:
        gateway.stop()
        first.stop()
        if second:
            second.stop()


async def test_replaying_an_old_log_fires_nothing_spurious(kafka, topic_prefix, tmp_path):
    """Pairs of sent/delivered hours apart in event time, written straight to the raw
    topic as an old log; one message really stays in `sent`."""
    env = env_for(kafka, topic_prefix, tmp_path)
    run = uuid.uuid4().hex[:6]
    day_ago = time.time() - 86_400
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    pairs = [f"p{run}{i}" for i in range(40)]
    try:
        for i, mid in enumerate(pairs):
            at = day_ago + i * 3 * 3600 / len(pairs) * 8  # spread over a day
            for status, dt in (("sent", 0.0), ("delivered", TIMEOUT / 2)):
                req = event(mid, status, at + dt)
                webhook = WebhookRequest(
                    "events", "POST", "http://127.0.0.1/v1/events", req.headers, req.body, at + dt
                )
                rec = raw.encode(topic_prefix + "raw.events", webhook, ())
                await producer.send_and_wait(rec.topic, rec.value, key=rec.key, headers=rec.headers)
        req = event(f"stuck{run}", "sent", day_ago)
        webhook = WebhookRequest(
            "events", "POST", "http://127.0.0.1/v1/events", req.headers, req.body, day_ago
        )
        rec = raw.encode(topic_prefix + "raw.events", webhook, ())
        await producer.send_and_wait(rec.topic, rec.value, key=rec.key, headers=rec.headers)
    finally:
        await producer.stop()
    worker = start_worker(env, tmp_path, "--no-read-model")
    status = topic_prefix + "message.status"
    try:

        def done(by_key):
            ok = all(
                any(e["data"]["status"] == "delivered" for e in by_key.get(f"crm:{m}", []))
                for m in pairs
            )
            return ok and unknown_ids(by_key.get(f"crm:stuck{run}", []))

        await collect(kafka.bootstrap, status, done, timeout=90)
        await asyncio.sleep(TIMEOUT + 1)
        by_key = await collect(kafka.bootstrap, status, lambda b: False, timeout=3)
        judge(by_key, [f"stuck{run}"], pairs)
    finally:
        worker.stop()
