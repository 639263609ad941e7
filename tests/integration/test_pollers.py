"""Pollers against fake RyzeAPI / Octopods servers.

The first tests run the Poller in-process with a memory sink (answers, backoff, 401,
no flooding); the last one is the whole system: real broker, gateway (for `/v1/events`
registrations), worker and `msgstatus poller` processes, and the fake provider server
scripting each message's progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import urllib.request
import uuid

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from support.fake_providers import FakeProviders, max_in_window
from support.processes import SECRETS, base_env, free_port, start_gateway, start_worker
from support.stream import check_message, collect, last_status

from bench.processes import Process
from processors import providers
from processors.config import PollerConfig, Settings
from processors.ingest.pollers.runner import Poller, targets
from processors.ingest.producer import MemorySink
from processors.kafka import raw

pytestmark = pytest.mark.integration

RYZE_TOKEN = "ryze-api-token"
OCTOPODS_TOKEN = "octopods-api-token"


def status_record(provider: str, message_id: str, status: str, **data: object) -> bytes:
    body = {
        "provider": provider,
        "provider_message_id": message_id,
        "channel": "whatsapp",
        "account": "inst-a",
        "status": status,
        # "old": told a minute ago, so the first poll is due at once
        "observed_at": time.time() - 60 if data.pop("old", False) else None,
        **data,
    }
    return orjson.dumps({"type": "message.status", "data": body})


def poller_for(fake: FakeProviders, **env: str) -> tuple[Poller, MemorySink]:
    settings = Settings.from_env(
        {
            "MSGSTATUS_RYZE_API_URL": fake.url,
            "MSGSTATUS_RYZE_API_TOKEN": RYZE_TOKEN,
            "MSGSTATUS_OCTOPODS_API_URL": fake.url,
            "MSGSTATUS_OCTOPODS_API_TOKEN": OCTOPODS_TOKEN,
            "MSGSTATUS_POLL_INTERVAL": "0.3",
            "MSGSTATUS_POLL_BACKOFF_BASE": "0.4",
            "MSGSTATUS_POLL_BACKOFF_MAX": "1.6",
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


def bodies(sink: MemorySink) -> list[dict]:
    return [orjson.loads(r.value) for r in sink.records]


# --- in-process: the poller against the fake, a memory sink for Kafka ------------------------


async def test_answers_are_published_once_per_change_like_a_webhook() -> None:
    with FakeProviders() as fake:
        fake.script_ryze("inst-a", "R1", [(0, "sent"), (0.8, "delivered"), (1.6, "read")])
        fake.script_octopods("O1", "sms", [(0, "UNKNOWN"), (1.0, "DELIVERED")])
        poller, sink = poller_for(fake)
        poller.learn(status_record("ryze", "R1", "sent", old=True), 0, time.time())
        poller.learn(
            status_record("octopods", "O1", "sent", channel="sms", account=None, old=True),
            1,
            time.time(),
        )
        await run_for(poller, 6.0)
        ryze_polls = fake.requests("ryze", "R1")
        octopods_polls = fake.requests("octopods", "O1")
    # polled again and again, yet only what was new was written: delivered, read
    assert len(ryze_polls) >= 5
    assert [b["status"] for b in bodies(sink) if "status" in b] == ["delivered", "read"]
    oct_bodies = [b for b in bodies(sink) if "message_status" in b]
    assert [b["message_status"]["message_status"] for b in oct_bodies] == ["DELIVERED"]
    assert len(octopods_polls) >= 2  # UNKNOWN (not written), then DELIVERED
    for record in sink.records:
        request = raw.decode(record.value, record.headers)
        assert request.polled and request.method == "GET"
        assert record.topic in ("mem.raw.ryze", "mem.raw.octopods")
        parsed = providers.get(request.provider).parse(request)
        assert parsed.events and not parsed.dead
        if request.provider == "ryze":
            assert "/api/chat/status/inst-a?messageId=R1" in request.url
            assert parsed.events[0].account == "inst-a"  # from the poll URL
        else:
            assert request.url.endswith("/api/v1/sms/messages/O1")
            assert parsed.events[0].channel == "sms"


async def test_404_and_400_drop_the_message_and_the_rest_goes_on() -> None:
    with FakeProviders() as fake:
        fake.script_ryze("inst-b", "OTHER", [(0, "read")])  # belongs to another instance
        fake.script_ryze("inst-a", "BAD", [(0, "read")])
        fake.answer_with["BAD"] = 400
        fake.script_ryze("inst-a", "GOOD", [(0, "delivered")])
        poller, sink = poller_for(fake)
        for mid in ("MISSING", "OTHER", "BAD", "GOOD"):
            poller.learn(status_record("ryze", mid, "sent", old=True), 0, time.time())
        await run_for(poller, 3.0)
        for mid in ("MISSING", "OTHER", "BAD"):
            assert len(fake.requests("ryze", mid)) == 1, mid
        assert len(fake.requests("ryze", "GOOD")) >= 3
    assert poller.tracker.done["ryze:MISSING"] == "not_found"
    assert poller.tracker.done["ryze:OTHER"] == "not_found"
    assert poller.tracker.done["ryze:BAD"] == "bad_request"
    assert list(poller.tracker.pending) == ["ryze:GOOD"]
    assert len(sink.records) == 1


async def test_5xx_backs_off_exponentially_then_recovers() -> None:
    with FakeProviders() as fake:
        fake.script_ryze("inst-a", "R1", [(0, "delivered")])
        fake.fail_next = 3
        poller, sink = poller_for(fake)
        poller.learn(status_record("ryze", "R1", "sent", old=True), 0, time.time())
        await run_for(poller, 8.0, until=lambda: bool(sink.records))
        seen = fake.requests("ryze")
    assert [s.status for s in seen[:4]] == [503, 503, 503, 200]
    gaps = [b.at - a.at for a, b in itertools.pairwise(seen[:4])]
    # 0.4 s, 0.8 s, 1.6 s (clamped at MSGSTATUS_POLL_BACKOFF_MAX)
    assert gaps[0] >= 0.35 and gaps[1] >= 0.75 and gaps[2] >= 1.5, gaps
    assert gaps[2] < 2.5
    assert len(sink.records) == 1


async def test_429_pauses_the_provider_instead_of_hammering_it() -> None:
    with FakeProviders(ryze_rate_limit=5) as fake:
        for i in range(20):
            fake.script_ryze("inst-a", f"R{i}", [(0, "sent")])
        # misconfigured: we believe in 1000/min, the provider allows 5/min
        poller, _ = poller_for(fake, MSGSTATUS_RYZE_RATE_LIMIT="1000")
        for i in range(20):
            poller.learn(status_record("ryze", f"R{i}", "sent", old=True), 0, time.time())
        await run_for(poller, 6.0)
        refused = [s for s in fake.requests("ryze") if s.status == 429]
    # the bucket alone would have allowed ~130 requests in 6 s; backoff (0.4, 0.8, 1.6,
    # 1.6 s... one probe at a time) keeps it to a handful
    assert 1 <= len(refused) <= 10, len(refused)
    assert poller.tracker.count("ryze") == 20  # nothing was dropped for a 429


async def test_401_stops_polling_that_provider_only() -> None:
    with FakeProviders(octopods_token="rotated") as fake:
        fake.script_ryze("inst-a", "R1", [(0, "delivered")])
        for i in range(3):
            fake.script_octopods(f"O{i}", "whatsapp", [(0, "DELIVERED")])
        poller, _ = poller_for(fake, MSGSTATUS_POLL_CONCURRENCY="1")
        poller.learn(status_record("ryze", "R1", "sent", old=True), 0, time.time())
        for i in range(3):
            poller.learn(
                status_record("octopods", f"O{i}", "sent", account=None, old=True), 0, time.time()
            )
        await run_for(poller, 3.0)
        octopods_seen = fake.requests("octopods")
        ryze_seen = fake.requests("ryze")
    assert [s.status for s in octopods_seen] == [401]
    assert poller.states["octopods"].stopped and not poller.states["ryze"].stopped
    assert len(ryze_seen) >= 4
    assert poller.tracker.count("octopods") == 3  # kept, for when the token is fixed


# --- the whole system -------------------------------------------------------------------


RYZE_PLANS: list[tuple[int, list[tuple[float, str]], str]] = [
    # (how many, script, expected final status on message.status)
    (10, [(0, "sent"), (3, "delivered"), (6, "read")], "read"),
    (8, [(0, "sent"), (2, "read")], "read"),
    (4, [(0, "sent"), (3, "error")], "failed"),
    (1, [(0, "pending"), (1, "sent"), (3, "played")], "played"),
    (4, [(0, "sent"), (2, "delivered")], "delivered"),  # never read: polled to the end
]
OCTOPODS_PLANS: list[tuple[str, str, list[tuple[float, str]], str]] = [
    ("O0", "whatsapp", [(0, "SENT"), (2, "DELIVERED"), (5, "READ")], "read"),
    ("O1", "whatsapp", [(0, "SENT"), (2, "DELIVERED"), (5, "READ")], "read"),
    ("O2", "whatsapp", [(0, "SENT"), (3, "READ")], "read"),
    ("O3", "sms", [(0, "SENT"), (3, "DELIVERED")], "delivered"),
    ("O4", "sms", [(0, "SENT"), (2, "DELIVERED")], "delivered"),
    ("O5", "sms", [(0, "UNKNOWN"), (20, "DELIVERED")], "delivered"),
    ("O6", "whatsapp", [(0, "FAILED")], "failed"),
    ("O7", "whatsapp", [(0, "DELIVERED"), (3, "DELETED")], "delivered"),
    ("O8", "whatsapp", [(0, "SENT"), (2, "DELIVERED")], "delivered"),  # stays pending
]


def metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        return answer.read().decode()


async def register(url: str, items: list[dict]) -> None:
    headers = {"Authorization": f"Bearer {SECRETS['MSGSTATUS_EVENTS_TOKEN']}"}
    async with aiohttp.ClientSession() as session:
        for _ in range(30):
            async with session.post(f"{url}/v1/events", json=items, headers=headers) as answer:
                if answer.status == 200:
                    return
            await asyncio.sleep(1)
    raise AssertionError("the gateway did not accept the registrations")


async def raw_records(bootstrap: str, topic: str) -> list[tuple[list, bytes]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    out: list[tuple[list, bytes]] = []
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=2000)
            if not batch:
                return out
            for records in batch.values():
                out += [(list(r.headers), r.value) for r in records]
    finally:
        await consumer.stop()


@pytest.mark.slow
async def test_poller_drives_registered_messages_to_their_final_status(
    kafka, redis_server, topic_prefix, tmp_path
):
    if "octopods" not in providers.REGISTRY:
        pytest.skip("processors/providers/octopods.py is not registered in the provider registry")
    run = uuid.uuid4().hex[:6]
    fake = FakeProviders(ryze_rate_limit=60).start()
    env = base_env(
        kafka.bootstrap, topic_prefix, tmp_path / "data", MSGSTATUS_REDIS_URL=redis_server.url
    )
    metrics_port = free_port()
    poller_env = {
        **env,
        "MSGSTATUS_RYZE_API_URL": fake.url,
        "MSGSTATUS_RYZE_API_TOKEN": RYZE_TOKEN,
        "MSGSTATUS_RYZE_RATE_LIMIT": "60",
        "MSGSTATUS_OCTOPODS_API_URL": fake.url,
        "MSGSTATUS_OCTOPODS_API_TOKEN": OCTOPODS_TOKEN,
        "MSGSTATUS_POLL_INTERVAL": "2",
        "MSGSTATUS_POLLER_METRICS_PORT": str(metrics_port),
    }
    gateway, url = start_gateway(env, tmp_path)
    worker = start_worker(env, tmp_path)
    poller = Process.msgstatus("poller", (), poller_env, tmp_path).start()
    try:
        expected: dict[str, str] = {}
        items: list[dict] = []

        def item(provider: str, mid: str, channel: str, account: str | None) -> dict:
            entry = {"provider": provider, "provider_message_id": mid, "channel": channel,
                     "status": "sent", "occurred_at": time.time()}  # fmt: skip
            if account:
                entry["account"] = account
            return entry

        n = 0
        for count, steps, final in RYZE_PLANS:
            for _ in range(count):
                mid = f"3EB0{run}{n:04d}"
                instance = "inst-a" if n % 2 else "inst-b"
                fake.script_ryze(instance, mid, steps)
                items.append(item("ryze", mid, "whatsapp", instance))
                expected[f"ryze:{mid}"] = final
                n += 1
        stuck = [k.split(":", 1)[1] for k, v in expected.items() if v == "delivered"]
        missing, elsewhere, no_account = (f"3EB0{run}x{i}" for i in range(3))
        fake.script_ryze("inst-b", elsewhere, [(0, "read")])
        items.append(item("ryze", missing, "whatsapp", "inst-a"))  # 404: unknown message
        items.append(item("ryze", elsewhere, "whatsapp", "inst-a"))  # 404: other instance
        items.append(item("ryze", no_account, "whatsapp", None))  # cannot be polled
        for key in (missing, elsewhere, no_account):
            expected[f"ryze:{key}"] = "sent"
        for mid, channel, steps, final in OCTOPODS_PLANS:
            reason = "131026 Message undeliverable" if mid == "O6" else None
            fake.script_octopods(f"{run}{mid}", channel, steps, failure_reason=reason)
            items.append(item("octopods", f"{run}{mid}", channel, None))
            expected[f"octopods:{run}{mid}"] = final
        items.append(item("octopods", f"{run}O404", "sms", None))
        expected[f"octopods:{run}O404"] = "sent"
        assert sum(1 for k in expected if k.startswith("ryze:")) == 30
        assert sum(1 for k in expected if k.startswith("octopods:")) == 10

        started = time.monotonic()
        await register(url, items)

        def done(by_key):
            return all(last_status(by_key.get(k, [])) == v for k, v in expected.items())

        topic = topic_prefix + "message.status"
        by_key = await collect(kafka.bootstrap, topic, done, timeout=180)
        took = time.monotonic() - started
        wrong = {
            k: (last_status(by_key.get(k, [])), v)
            for k, v in expected.items()
            if last_status(by_key.get(k, [])) != v
        }
        assert not wrong, f"{wrong}\n{poller.log_tail()}\n{worker.log_tail()}"
        problems = [p for key, events in by_key.items() for p in check_message(key, events)]
        assert not problems, problems[:10]
        deleted = by_key[f"octopods:{run}O7"]
        assert any(e["data"]["status"] == "deleted" for e in deleted)
        failed = by_key[f"octopods:{run}O6"][-1]["data"]
        assert failed["error"]["category"] == "unreachable"
        accounts = {e["data"]["account"] for e in by_key[f"ryze:{stuck[0]}"]}
        assert len(accounts) == 1 and accounts <= {"inst-a", "inst-b"}

        # 404s are dropped after one request; a message without instance is never polled
        assert [s.status for s in fake.requests("ryze", missing)] == [404]
        assert [s.status for s in fake.requests("ryze", elsewhere)] == [404]
        assert fake.requests("ryze", no_account) == []
        assert [s.status for s in fake.requests("octopods", f"{run}O404")] == [404]
        assert len(fake.requests("octopods", f"{run}O5")) >= 2  # UNKNOWN, then DELIVERED

        # keep the never-read messages polled for over a minute, then judge the rate
        first = min(s.at for s in fake.requests("ryze"))
        while time.monotonic() - first < 75:
            await asyncio.sleep(1)
        ryze_seen = fake.requests("ryze")
        busiest = max_in_window([s.at for s in ryze_seen], 60.0)
        assert busiest <= 60, f"{busiest} RyzeAPI requests in one minute"
        assert not [s for s in ryze_seen if s.status == 429]
        span = ryze_seen[-1].at - ryze_seen[0].at
        rate = (len(ryze_seen) - 1) / span * 60
        print(
            f"\nRyzeAPI: {len(ryze_seen)} polls in {span:.0f}s = {rate:.1f}/min, busiest "
            f"minute {busiest} (limit 60); all final after {took:.0f}s; octopods "
            f"{len(fake.requests('octopods'))} polls"
        )
        assert busiest >= 45, "the stuck messages should keep the poller at its limit"

        # no flooding: a message stuck in delivered was written to raw.ryze once
        records = await raw_records(kafka.bootstrap, topic_prefix + "raw.ryze")
        stuck_bodies = [v for _, v in records if stuck[0].encode() in v]
        assert len(stuck_bodies) == 1, stuck_bodies
        # at most one record per status change: 10x2 + 8 + 4 + 2 + 4
        assert len(records) <= 38 < len([s for s in ryze_seen if s.status == 200])
        assert all(("msgstatus-polled", b"1") in h for h, _ in records)

        # 401: the token is rotated at Octopods; polling it stops, RyzeAPI goes on
        fake.octopods_token = "rotated"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            refused = [s for s in fake.requests("octopods") if s.status == 401]
            if refused:
                break
            await asyncio.sleep(0.5)
        assert refused, poller.log_tail()
        await asyncio.sleep(8)
        after = [s for s in fake.requests("octopods") if s.at > refused[0].at]
        assert after == [], after
        assert [s for s in fake.requests("ryze") if s.at > refused[0].at + 2]
        text = metrics(metrics_port)
        assert 'msgstatus_poller_provider_stopped{provider="octopods"} 1.0' in text
        assert 'msgstatus_poller_provider_stopped{provider="ryze"} 0.0' in text
        assert 'msgstatus_poller_polls_total{outcome="unauthorized",provider="octopods"}' in text
        assert "msgstatus_poller_rate_limit_waits_total" in text
        assert 'msgstatus_poller_pending_messages{provider="ryze"} 4.0' in text
        assert "POLLING OCTOPODS STOPPED" in poller.log_path.read_text()
    finally:
        poller.stop()
        gateway.stop()
        worker.stop()
        fake.stop()
    assert poller.proc is not None and poller.proc.returncode == 0, poller.log_tail()
    assert not poller.alive() and not worker.alive() and not gateway.alive()
