"""Ask before delivery_unknown: the worker's poll requests answered by `msgstatus poller`.

In-process first (the Poller against the fake RyzeAPI, a memory sink for Kafka); then
the whole system on a real broker: gateway, worker and poller processes, where a stuck
RyzeAPI message whose provider answers `delivered` when asked never gets
`delivery_unknown`, one that is still `sent` gets exactly one after the ask timeout,
and without a poller configured nothing changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from support.fake_providers import FakeProviders
from support.processes import SECRETS, base_env, start_gateway, start_worker
from support.stream import check_message, collect, read_to_end

from bench.processes import Process
from bench.traffic import Request, post_all
from processors.config import Settings
from processors.ingest.pollers.runner import Poller, PollerConfig, targets
from processors.ingest.producer import MemorySink
from processors.model import parse_time

pytestmark = pytest.mark.integration
# POST /v1/events: its own write token where the gateway has one, else the API token
EVENTS_TOKEN = SECRETS.get("MSGSTATUS_EVENTS_TOKEN") or SECRETS["MSGSTATUS_API_TOKEN"]

RYZE_TOKEN = "ryze-api-token"
TP = TopicPartition("mem.status.pollrequests", 0)


def poll_request(mid: str, asked_at: float | None = None) -> bytes:
    return orjson.dumps(
        {
            "message_key": f"ryze:{mid}",
            "provider": "ryze",
            "provider_message_id": mid,
            "account": "inst-a",
            "channel": "whatsapp",
            "deadline": time.time() - 1,
            "asked_at": time.time() if asked_at is None else asked_at,
        }
    )


def poller_for(fake: FakeProviders, **env: str) -> tuple[Poller, MemorySink]:
    settings = Settings.from_env(
        {
            "MSGSTATUS_RYZE_API_URL": fake.url,
            "MSGSTATUS_RYZE_API_TOKEN": RYZE_TOKEN,
            "MSGSTATUS_POLL_INTERVAL": "600",  # no routine poll during these tests
            "MSGSTATUS_POLL_BACKOFF_BASE": "0.4",
            "MSGSTATUS_POLL_BACKOFF_MAX": "1.6",
            "MSGSTATUS_DELIVERY_UNKNOWN_ASK_TIMEOUT": "20",
            "MSGSTATUS_TOPIC_PREFIX": "mem.",
            **env,
        }
    )
    sink = MemorySink()
    return Poller(settings, PollerConfig.from_settings(settings), targets(settings), sink), sink


async def run_for(poller: Poller, seconds: float, until=None) -> None:  # type: ignore[no-untyped-def]
    task = asyncio.create_task(poller.run(consume=False))
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and not (until and until()):
            await asyncio.sleep(0.05)
            if task.done():
                task.result()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_each_request_is_polled_once_at_once_and_only_news_is_written() -> None:
    with FakeProviders() as fake:
        fake.script_ryze("inst-a", "NEWS", [(0, "delivered")])
        fake.script_ryze("inst-a", "SAME", [(0, "sent")])
        fake.script_ryze("inst-a", "GONE", [(0, "sent")])
        poller, sink = poller_for(fake)
        # the message is also tracked for routine polls (not due for ten minutes)
        poller.learn(
            orjson.dumps({"data": {"provider": "ryze", "provider_message_id": "SAME",
                                   "channel": "whatsapp", "account": "inst-a",
                                   "status": "sent", "observed_at": time.time()}}),
            0,
            time.time(),
        )  # fmt: skip
        for offset, mid in enumerate(("NEWS", "SAME", "GONE-404", "STALE")):
            asked = time.time() - 25 if mid == "STALE" else None  # its deadline has fired
            poller.ask(poll_request(mid, asked), TP, offset, time.time())
        poller.request_offsets.read(TP, 4)
        started = time.monotonic()
        await run_for(poller, 3.0, until=lambda: poller.request_offsets.due() == {TP: 4})
        took = time.monotonic() - started
        seen = {mid: fake.requests("ryze", mid) for mid in ("NEWS", "SAME", "GONE-404", "STALE")}
    assert took < 2.0, took  # promptly, not after a poll interval
    assert [len(v) for v in seen.values()] == [1, 1, 1, 0]
    assert [s.status for s in seen["GONE-404"]] == [404]
    assert poller.request_offsets.due() == {TP: 4}  # every request answered: committable
    written = [orjson.loads(r.value) for r in sink.records]
    assert [(w["message_id"], w["status"]) for w in written] == [("NEWS", "delivered")]
    assert poller.tracker.pending["ryze:SAME"].polls == 0  # its schedule is untouched


async def test_a_failed_ask_is_retried_after_the_backoff_within_the_rate_limit() -> None:
    with FakeProviders() as fake:
        fake.script_ryze("inst-a", "R1", [(0, "delivered")])
        fake.fail_next = 2
        poller, sink = poller_for(fake)
        poller.ask(poll_request("R1"), TP, 0, time.time())
        poller.request_offsets.read(TP, 1)
        await run_for(poller, 6.0, until=lambda: bool(sink.records))
        assert [s.status for s in fake.requests("ryze", "R1")] == [503, 503, 200]
    assert poller.request_offsets.due() == {TP: 1}

    with FakeProviders() as fake:  # 6 per minute: a burst of requests waits its turn
        for i in range(12):
            fake.script_ryze("inst-a", f"B{i}", [(0, "sent")])
        poller, _ = poller_for(fake, MSGSTATUS_RYZE_RATE_LIMIT="6")
        for i in range(12):
            poller.ask(poll_request(f"B{i}"), TP, i, time.time())
        await run_for(poller, 4.0)
        assert 1 <= len(fake.requests("ryze")) <= 2  # capacity 1, then one per ~13 s
        assert len(poller.states["ryze"].asks) >= 10


# --- the whole system ------------------------------------------------------------------

AFTER, ASK_TIMEOUT = 4.0, 8.0


def registration(provider: str, mid: str, account: str | None) -> Request:
    item = {"provider": provider, "provider_message_id": mid, "channel": "whatsapp",
            "status": "sent", "occurred_at": time.time()}  # fmt: skip
    if account:
        item["account"] = account
    headers = {
        "content-type": "application/json",
        "authorization": f"Bearer {EVENTS_TOKEN}",
    }
    return Request("/v1/events", headers, orjson.dumps(item), [f"{provider}:{mid}"])


def unknowns(events: list[dict]) -> list[dict]:
    return [e for e in events if e["data"]["status"] == "delivery_unknown"]


async def count_records(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        cluster = await consumer._client.fetch_all_metadata()
        tps = [TopicPartition(topic, p) for p in cluster.partitions_for_topic(topic) or ()]
        ends = await consumer.end_offsets(tps) if tps else {}
        return sum(ends.values())
    finally:
        await consumer.stop()


def system_env(kafka, prefix: str, tmp_path, fake: FakeProviders | None) -> dict[str, str]:
    extra = {
        "MSGSTATUS_DELIVERY_UNKNOWN_AFTER": str(AFTER),
        "MSGSTATUS_DELIVERY_UNKNOWN_GRACE": "0.5",
        "MSGSTATUS_DELIVERY_UNKNOWN_ASK_TIMEOUT": str(ASK_TIMEOUT),
        "MSGSTATUS_REDIS_URL": "redis://127.0.0.1:1/0",
    }
    if fake is not None:  # the worker asks RyzeAPI messages: its poller is configured
        extra.update(
            {
                "MSGSTATUS_RYZE_API_URL": fake.url,
                "MSGSTATUS_RYZE_API_TOKEN": RYZE_TOKEN,
                "MSGSTATUS_POLL_INTERVAL": "600",
                "MSGSTATUS_POLLER_METRICS_PORT": "0",
            }
        )
    return base_env(kafka.bootstrap, prefix, tmp_path / "data", **extra)


@pytest.mark.slow
async def test_asking_the_poller_before_delivery_unknown(kafka, topic_prefix, tmp_path) -> None:
    run = uuid.uuid4().hex[:6]
    fake = FakeProviders().start()
    env = system_env(kafka, topic_prefix, tmp_path, fake)
    gateway, url = start_gateway(env, tmp_path)
    worker = start_worker(env, tmp_path, "--no-read-model")
    poller = Process.msgstatus("poller", [], env, tmp_path).start()
    answered = [f"3EB0{run}a{i}" for i in range(6)]  # stuck in `sent`, `delivered` if asked
    still_sent = [f"3EB0{run}s{i}" for i in range(4)]  # the provider still says `sent`
    controls = [f"crm{run}{i}" for i in range(3)]  # not pollable: fired at the deadline
    try:
        for mid in answered:  # delivered before the deadline, but nobody says so unasked
            fake.script_ryze("inst-a", mid, [(0, "sent"), (AFTER / 2, "delivered")])
        for mid in still_sent:
            fake.script_ryze("inst-a", mid, [(0, "sent")])
        sends = [registration("ryze", m, "inst-a") for m in answered + still_sent]
        sends += [registration("crm", m, None) for m in controls]
        sent_at = time.time()
        assert await post_all(url, sends) == {200: len(sends)}
        status = topic_prefix + "message.status"

        def settled(by_key: dict) -> bool:
            keys = [f"ryze:{m}" for m in still_sent] + [f"crm:{m}" for m in controls]
            return all(unknowns(by_key.get(k, [])) for k in keys) and all(
                any(e["data"]["status"] == "delivered" for e in by_key.get(f"ryze:{m}", []))
                for m in answered
            )

        await collect(kafka.bootstrap, status, settled, timeout=90)
        await asyncio.sleep(ASK_TIMEOUT + 2)  # room for a wrong firing to show up
        by_key = await read_to_end(kafka.bootstrap, status)
        for mid in answered:
            events = by_key[f"ryze:{mid}"]
            assert [e["data"]["status"] for e in events] == ["sent", "delivered"], mid
            assert len(fake.requests("ryze", mid)) == 1  # asked once, nothing else
        for mid in still_sent:
            fired = unknowns(by_key[f"ryze:{mid}"])
            assert len({e["id"] for e in fired}) == 1, mid
            assert [s.status for s in fake.requests("ryze", mid)] == [200]
            # it waited for the answer: about AFTER + ASK_TIMEOUT after `sent`
            waited = parse_time(fired[0]["data"]["emitted_at"]) - sent_at
            assert waited >= AFTER + ASK_TIMEOUT - 1, waited
        for mid in controls:
            assert len({e["id"] for e in unknowns(by_key[f"crm:{mid}"])}) == 1, mid
        problems = [p for k, evs in by_key.items() for p in check_message(k, evs, True)]
        assert not problems, problems[:5]
        assert await count_records(kafka.bootstrap, topic_prefix + "status.pollrequests") == 10
        print(
            f"\nasked {len(answered) + len(still_sent)} RyzeAPI messages once each: "
            f"{len(answered)} delivered, {len(still_sent)} delivery_unknown after the ask timeout"
        )
    finally:
        poller.stop()
        gateway.stop()
        worker.stop()
        fake.stop()
    assert poller.proc is not None and poller.proc.returncode == 0, poller.log_tail()


@pytest.mark.slow
async def test_without_a_poller_configured_nothing_changes(kafka, topic_prefix, tmp_path) -> None:
    run = uuid.uuid4().hex[:6]
    env = system_env(kafka, topic_prefix, tmp_path, None)
    gateway, url = start_gateway(env, tmp_path)
    worker = start_worker(env, tmp_path, "--no-read-model")
    stuck = [f"3EB0{run}{i}" for i in range(5)]
    try:
        sent_at = time.time()
        sends = [registration("ryze", m, "inst-a") for m in stuck]
        assert await post_all(url, sends) == {200: len(sends)}
        status = topic_prefix + "message.status"

        def fired(by_key: dict) -> bool:
            return all(unknowns(by_key.get(f"ryze:{m}", [])) for m in stuck)

        by_key = await collect(kafka.bootstrap, status, fired, timeout=60)
        assert fired(by_key), worker.log_tail()
        for mid in stuck:
            event = unknowns(by_key[f"ryze:{mid}"])[0]["data"]
            took = parse_time(event["emitted_at"]) - sent_at
            assert took < AFTER + ASK_TIMEOUT - 2, took  # at the deadline: nobody was asked
        assert await count_records(kafka.bootstrap, topic_prefix + "status.pollrequests") == 0
    finally:
        gateway.stop()
        worker.stop()
