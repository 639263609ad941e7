"""The broker stopped for 30 s and restarted under steady traffic (issue 13, DESIGN.md 11.1).

A dedicated broker (never the shared one) is stopped and started again on the same port
and data dir while a generator posts `/v1/events` like a provider: a steady rate of new
messages, each `sent` then `delivered`, every request retried on 503 or a connection
error with a capped backoff. The gateway must answer 503 with Retry-After while it
cannot write and recover by itself; the worker and the poller must come back by
themselves (reconnecting, or restarted by their supervisor); every acknowledged event
must be reflected in `message.status`, without a regression; the read model catches up.
"""

from __future__ import annotations

import asyncio
import random
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import orjson
import pytest
from support.fake_providers import FakeProviders
from support.infra import start_kafka
from support.processes import SECRETS, base_env, start_gateway, start_worker
from support.stream import check_message, read_to_end

from bench.processes import Process
from processors.store.readmodel import ReadModel

pytestmark = [pytest.mark.integration, pytest.mark.slow]
# POST /v1/events: its own write token where the gateway has one, else the API token
EVENTS_TOKEN = SECRETS.get("MSGSTATUS_EVENTS_TOKEN") or SECRETS["MSGSTATUS_API_TOKEN"]

RATE = 8.0  # new messages per second
BEFORE, OUTAGE, AFTER = 20.0, 30.0, 30.0  # seconds of traffic around and during the outage
GIVE_UP = 300.0  # a provider retries for hours; nothing here should need this long


@dataclass
class Generator:
    url: str
    run: str
    answers: Counter = field(default_factory=Counter)
    events: int = 0
    acked: set[tuple[str, str]] = field(default_factory=set)
    gave_up: set[tuple[str, str]] = field(default_factory=set)
    retry_after_missing: int = 0
    last_503: float = 0.0
    first_200_after: dict[str, float] = field(default_factory=dict)
    rng: random.Random = field(default_factory=lambda: random.Random(13))

    async def run_for(self, seconds: float) -> None:
        connector = aiohttp.TCPConnector(limit=200)
        timeout = aiohttp.ClientTimeout(total=20)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            tasks = []
            started = time.monotonic()
            n = 0
            while time.monotonic() - started < seconds:
                tasks.append(asyncio.create_task(self.message(session, f"{self.run}-{n:05d}")))
                n += 1
                await asyncio.sleep(1.0 / RATE)
            await asyncio.gather(*tasks)

    async def message(self, session: aiohttp.ClientSession, mid: str) -> None:
        if await self.post(session, mid, "sent"):
            await asyncio.sleep(self.rng.uniform(0.5, 3.0))
            await self.post(session, mid, "delivered")

    async def post(self, session: aiohttp.ClientSession, mid: str, status: str) -> bool:
        """Like a provider: retry 503s and connection errors, 0.5 s doubling to 8 s."""
        self.events += 1
        body = orjson.dumps(
            {
                "provider": "crm",
                "provider_message_id": mid,
                "channel": "sms",
                "status": status,
                "occurred_at": time.time(),
            }
        )
        headers = {
            "content-type": "application/json",
            "authorization": f"Bearer {EVENTS_TOKEN}",
        }
        delay = 0.5
        give_up = time.monotonic() + GIVE_UP
        while time.monotonic() < give_up:
            try:
                async with session.post(f"{self.url}/v1/events", data=body, headers=headers) as r:
                    await r.read()
                    code, retry_after = r.status, r.headers.get("Retry-After")
            except (aiohttp.ClientError, TimeoutError):
                code, retry_after = 0, None
            self.answers[code] += 1
            if code == 200:
                self.acked.add((mid, status))
                return True
            if code == 503:
                self.last_503 = time.monotonic()
                if not retry_after:
                    self.retry_after_missing += 1
            elif code:
                raise AssertionError(f"{mid} {status}: answered {code}")
            await asyncio.sleep(delay)
            delay = min(8.0, delay * 2)
        self.gave_up.add((mid, status))
        return False


def reflected(events: list[dict]) -> set[str]:
    """Statuses `message.status` accounts for: told, or implied by a jump."""
    out: set[str] = set()
    for event in events:
        out.add(event["data"]["status"])
        out.update(event["data"]["implied"])
    return out


def readyz(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=15) as answer:
            return answer.status, orjson.loads(answer.read())
    except urllib.error.HTTPError as exc:
        assert exc.headers.get("Retry-After")
        return exc.code, orjson.loads(exc.read())


def restarts(part: Process) -> int:
    return part.log_path.read_text(errors="replace").count("restarting it in")


@pytest.mark.parametrize("how", ["stop", pytest.param("kill", marks=pytest.mark.soak)])
async def test_broker_down_for_30s_under_load_loses_nothing(
    how: str, redis_server, topic_prefix, tmp_path
) -> None:
    """`stop`: SIGTERM, a clean shutdown; `kill`: SIGKILL, a crash."""
    broker = start_kafka(tmp_path / "kafka")  # ours alone: stopped and started below
    fake = FakeProviders().start()
    env = base_env(
        broker.bootstrap,
        topic_prefix,
        tmp_path / "data",
        MSGSTATUS_REDIS_URL=redis_server.url,
        MSGSTATUS_RYZE_API_URL=fake.url,
        MSGSTATUS_RYZE_API_TOKEN="ryze-api-token",
        MSGSTATUS_POLL_INTERVAL="2",
        MSGSTATUS_POLLER_METRICS_PORT="0",
    )
    gateway, url = start_gateway(env, tmp_path)
    worker = start_worker(env, tmp_path)
    poller = Process.msgstatus("poller", [], env, tmp_path).start()
    model = ReadModel(redis_server.url, topic_prefix)
    run = uuid.uuid4().hex[:6]
    generator = Generator(url, run)
    polled = [f"3EB0{run}p{i}" for i in range(4)]  # delivered only once the broker is back
    status_topic = topic_prefix + "message.status"
    try:
        for mid in polled:
            fake.script_ryze("inst-a", mid, [(0, "sent"), (BEFORE + OUTAGE + 10, "delivered")])
        for mid in polled:
            assert await generator_register(url, mid)
        traffic = asyncio.create_task(generator.run_for(BEFORE + OUTAGE + AFTER))
        await asyncio.sleep(BEFORE)
        stopped = time.monotonic()
        await asyncio.to_thread(broker.stop if how == "stop" else broker.kill)
        await asyncio.sleep(OUTAGE / 2 - (time.monotonic() - stopped))
        ready = await asyncio.to_thread(readyz, url)
        assert ready[0] == 503 and "kafka" in ready[1]["down"], ready
        await asyncio.sleep(OUTAGE - (time.monotonic() - stopped))
        broker.start()
        await asyncio.to_thread(broker.wait_ready, 120)
        back = time.monotonic()
        await traffic
        outage_503 = generator.answers[503]
        recovered_after = max(0.0, generator.last_503 - back)

        def settled(by_key: dict) -> bool:
            told = all(
                status in reflected(by_key.get(f"crm:{mid}", [])) for mid, status in generator.acked
            )
            return told and all(
                "delivered" in reflected(by_key.get(f"ryze:{mid}", [])) for mid in polled
            )

        deadline = time.monotonic() + 180
        by_key = await read_to_end(broker.bootstrap, status_topic)
        while not settled(by_key) and time.monotonic() < deadline:
            await asyncio.sleep(3)
            by_key = await read_to_end(broker.bootstrap, status_topic)

        lost = sorted(
            (mid, status)
            for mid, status in generator.acked
            if status not in reflected(by_key.get(f"crm:{mid}", []))
        )
        messages = len({mid for mid, _ in generator.acked})
        print(
            f"\nbroker {how} for {OUTAGE:.0f} s, back after {back - stopped:.0f} s: "
            f"sent {generator.events}, acknowledged {len(generator.acked)}, "
            f"reflected {len(generator.acked) - len(lost)}, lost = {len(lost)}; "
            f"{messages} messages; answers {dict(generator.answers)}; "
            f"last 503 {recovered_after:.1f} s after the broker was back; "
            f"supervisor restarts: worker {restarts(worker)}, poller {restarts(poller)}"
        )
        assert not lost, lost[:10]
        assert not generator.gave_up, sorted(generator.gave_up)[:10]
        assert outage_503 > 0 and generator.retry_after_missing == 0
        assert recovered_after < 20, "the gateway did not recover by itself"
        assert generator.events == len(generator.acked)
        problems = [p for k, evs in by_key.items() for p in check_message(k, evs, True)]
        assert not problems, problems[:10]
        for mid in polled:  # the poller came back and wrote what it learned
            assert "delivered" in reflected(by_key[f"ryze:{mid}"]), (mid, poller.log_tail())
        for part in (gateway, worker, poller):
            assert part.alive(), f"{part.name} exited:\n{part.log_tail()}"
        # the read model catches up too
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            behind = [k for k in by_key if await _doc_sequence(model, k) != _last(by_key[k])]
            if not behind:
                break
            await asyncio.sleep(2)
        assert not behind, behind[:5]
    finally:
        await model.close()
        for part in (poller, gateway, worker):
            part.stop()
        fake.stop()
        broker.stop()


async def generator_register(url: str, mid: str) -> bool:
    body = orjson.dumps(
        {
            "provider": "ryze",
            "provider_message_id": mid,
            "channel": "whatsapp",
            "account": "inst-a",
            "status": "sent",
            "occurred_at": time.time(),
        }
    )
    headers = {
        "content-type": "application/json",
        "authorization": f"Bearer {EVENTS_TOKEN}",
    }
    async with aiohttp.ClientSession() as session:
        for _ in range(30):
            async with session.post(f"{url}/v1/events", data=body, headers=headers) as answer:
                if answer.status == 200:
                    return True
            await asyncio.sleep(1)
    return False


async def _doc_sequence(model: ReadModel, key: str) -> int | None:
    try:
        doc = await model.get(key)
    except Exception:
        return None
    return None if doc is None else doc.get("sequence")


def _last(events: list[dict]) -> int:
    return max(e["data"]["sequence"] for e in events)
