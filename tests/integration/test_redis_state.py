"""The Redis state backend's mapping, scan and compare-and-apply layer on a real Redis.

No Kafka here: the agents' pure decisions (ordering, emission with deadlines and markers,
retention, conversations) run once over a `ScanDict` (the reference: what RocksDB gives)
and once through `RedisTable.transact`; outputs and final states must be identical.
Then the parts only Redis has: guesses corrected by the script's answers, a cache
smaller than a record, writers racing the compare-and-apply, fencing by consumer-group
generation, decisions that raise, Redis going away and coming back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from support.infra import start_redis, unique_prefix

from processors import dependencies
from processors.config import Settings
from processors.model import CanonicalEvent
from processors.store.state import Undecidable, Wiring
from processors.store.state.redis import RedisBackend, RedisTable
from processors.stream import markers
from processors.stream.deadlines import DEADLINE, EXPIRY, MARKER_EXPIRY
from processors.stream.emission import Emitter, Policy
from processors.stream.fasttable import ScanDict
from processors.stream.fence import Fenced, Lease, Ownership
from processors.stream.ordering import Rules, on_marker, order_record
from processors.stream.watermarks import expand_record
from processors.stream.watermarks import on_marker as conversation_marker

pytestmark = pytest.mark.integration

NOW = 1_800_000_000.0
DAY = 86400.0
TP = "in0"


class Worker:
    """One worker's view: a backend, an ownership of partition 0, its tables."""

    def __init__(self, url: str, prefix: str, generation: int = 1, **settings: Any) -> None:
        self.backend = RedisBackend(Settings(redis_url=url, topic_prefix=prefix, **settings))
        self.ownership = Ownership()
        self.ownership.assign({TP})
        self.lease = Lease(10.0)
        self.wiring = Wiring(None, 1, None, self.ownership, self.lease)  # type: ignore[arg-type]
        self.generation = generation
        self.tables: dict[str, RedisTable] = {}

    def table(self, name: str) -> RedisTable:
        if name not in self.tables:
            table = self.backend.table(name, self.wiring)
            table.assigned({0}, self.generation)
            self.tables[name] = table
        return self.tables[name]

    @property
    def token(self) -> Any:
        return self.ownership.token(TP)

    async def run(self, name: str, decide: Any) -> Any:
        return await self.table(name).transact(self.token, 0, decide)


@pytest.fixture
async def redis_url(redis_server):
    prefix = unique_prefix()
    yield redis_server.url, prefix
    client = aioredis.from_url(redis_server.url)
    keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
    if keys:
        await client.unlink(*keys)
    await client.aclose()


@pytest.fixture
async def worker(redis_url):
    w = Worker(*redis_url)
    yield w
    await w.backend.close()


async def stored(worker: Worker, name: str) -> tuple[dict[str, bytes], list[str]]:
    """A table partition as Redis holds it: values without versions, index members."""
    values, index, _ = worker.table(name).keys(0)
    raw = await worker.backend.redis.hgetall(values)
    members = await worker.backend.redis.zrange(index, 0, -1)
    return (
        {k.decode(): v.split(b":", 1)[1] for k, v in raw.items()},
        [m.decode() for m in members],
    )


def split(reference: ScanDict) -> tuple[dict[str, bytes], list[str]]:
    index = sorted(k for k in reference if k.startswith((DEADLINE, EXPIRY, MARKER_EXPIRY)))
    assert all(reference[k] == b"" for k in index)
    return {k: v for k, v in reference.items() if k not in index}, index


def ev(status: str, mid: str, t: float, provider: str = "crm", **extra: Any) -> dict[str, Any]:
    return CanonicalEvent(
        provider=provider,
        provider_message_id=mid,
        status=status,
        provider_status=extra.pop("pstatus", status),
        channel=extra.pop("channel", "sms"),
        observed_at=t,
        occurred_at=extra.pop("occurred", t),
    ).to_dict()


def same(a: Any, b: Any) -> bool:
    if dataclasses.is_dataclass(a):
        return orjson.dumps(dataclasses.asdict(a), default=sorted) == orjson.dumps(
            dataclasses.asdict(b), default=sorted
        )
    return orjson.dumps(a) == orjson.dumps(b)


STATUSES = ["accepted", "queued", "sent", "sent", "delivered", "read", "failed", "clicked"]


async def test_the_pure_pipeline_decides_the_same_over_redis_as_over_a_dict(worker):
    """Random records (duplicates, redeliveries after a 'crash', markers moving time past
    deadlines and retention) through ordering and emitter: identical outputs, identical
    final states (values and index entries)."""
    rng = random.Random(11)
    rules = Rules(retention=2 * DAY, marker_retention=5 * DAY)
    policy = Policy(
        after=300.0,
        grace=0.0,
        ask=frozenset({"ryze"}),
        ask_timeout=120.0,
        retention=2 * DAY,
        marker_retention=5 * DAY,
    )
    ordering_ref, emitter_ref = ScanDict(), ScanDict()
    clock = NOW
    done: list[tuple[int, list[dict[str, Any]]]] = []
    for src in range(400):
        clock += rng.choice([1.0, 20.0, 400.0, 3000.0])
        kind = rng.random()
        if kind < 0.08 and done:  # a record redelivered after a crash: say the same again
            src_again, events = rng.choice(done[-3:])
            src_used = src_again
        elif kind < 0.2:  # a watermark marker
            mark = {"raw": {"raw.a:0": clock}, "topics": {"raw.a": 1}, "nconv": 1}
            got = await worker.run("ordering", lambda b, m=mark: on_marker(b, m, rules))
            assert got == on_marker(ordering_ref, mark, rules)
            conv = markers.conversation_marker(0, clock)["wm"]
            bound = await worker.run("ordering", lambda b, m=conv: on_marker(b, m, rules))
            assert bound == on_marker(ordering_ref, conv, rules)
            if bound is not None:
                got = await worker.run(
                    "emitter",
                    lambda b, s=src, t=bound: Emitter(b, policy).on_marker(t, s, t),
                )
                want = Emitter(emitter_ref, policy).on_marker(bound, src, bound)
                assert same(got, want)
            continue
        else:
            events = []
            for _ in range(rng.randint(1, 12)):
                provider = rng.choice(["crm", "crm", "ryze"])
                channel = "whatsapp" if provider == "ryze" else "sms"
                mid = f"m{rng.randint(0, 60)}"
                events.append(ev(rng.choice(STATUSES), mid, clock, provider, channel=channel))
            src_used = src
            done.append((src, events))
        got = await worker.run(
            "ordering", lambda b, e=events, s=src_used: order_record(b, e, s, rules)
        )
        want = order_record(ordering_ref, events, src_used, rules)
        assert same(got, want), src
        out = await worker.run(
            "emitter",
            lambda b, i=got, s=src_used, t=clock: Emitter(b, policy).on_transitions(i, s, t),
        )
        assert same(out, Emitter(emitter_ref, policy).on_transitions(want, src_used, clock))
    assert await stored(worker, "ordering") == split(ordering_ref)
    assert await stored(worker, "emitter") == split(emitter_ref)
    states, index = await stored(worker, "emitter")
    assert any(k.startswith(MARKER_EXPIRY) for k in index)  # retention ran: compact markers
    assert any(orjson.loads(v).get("out", {}).get("du") for k, v in states.items() if "~" not in k)


async def test_conversations_expand_the_same_over_redis(worker):
    ref = ScanDict()
    rng = random.Random(5)
    for src in range(150):
        conv = f"page:{rng.randint(0, 5)}"
        regs = [
            {
                "conversation": conv,
                "provider": "meta",
                "provider_message_id": f"mid{rng.randint(0, 40)}",
                "sent_at_ms": int((NOW + src) * 1000),
                "account": "page",
                "channel": "messenger",
                "withdrawn": rng.random() < 0.05,
            }
        ]
        marks = []
        if rng.random() < 0.4:
            marks.append(
                {
                    "conversation": conv,
                    "kind": rng.choice(["delivered", "read"]),
                    "watermark_ms": int((NOW + src - rng.randint(0, 20)) * 1000),
                    "observed_at": NOW + src,
                    "occurred_at": NOW + src,
                    "account": "page",
                    "channel": "messenger",
                    "polled": False,
                }
            )
        got = await worker.run(
            "conversations", lambda b, r=regs, m=marks, s=src: expand_record(b, r, m, s, DAY)
        )
        assert got == expand_record(ref, regs, marks, src, DAY)
        if src % 25 == 24:
            mark = {"raw": {"raw.a:0": NOW + src * 2000}, "topics": {"raw.a": 1}, "nconv": 1}
            got = await worker.run(
                "conversations", lambda b, m=mark: conversation_marker(b, m, DAY)
            )
            assert got == conversation_marker(ref, mark, DAY)
    assert await stored(worker, "conversations") == split(ref)


async def test_guesses_cost_one_call_for_new_keys_and_the_answer_for_known_ones(worker):
    table = worker.table("ordering")
    calls = {"n": 0}
    real = worker.backend.apply_script

    async def counting(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        return await real(*args, **kwargs)

    worker.backend.apply_script = counting  # type: ignore[method-assign]
    events = [ev("sent", f"n{i}", NOW) for i in range(200)]
    await worker.run("ordering", lambda b: order_record(b, events, 1))
    assert calls["n"] == 1  # every key was new: the guesses were right
    await worker.run("ordering", lambda b: order_record(b, [ev("delivered", "n1", NOW)], 2))
    assert calls["n"] == 2  # known from the cache
    table.forget({0})  # a cold cache (a restarted worker)
    table.assigned({0}, worker.generation)
    await worker.run("ordering", lambda b: order_record(b, [ev("read", "n2", NOW)], 3))
    assert calls["n"] == 4  # claim, guess 'absent' refused with the value, then applied


async def test_a_record_larger_than_the_cache_still_completes(redis_url):
    w = Worker(*redis_url, redis_cache_bytes=2000)
    ref = ScanDict()
    try:
        for src in range(3):
            events = [
                ev(["sent", "delivered", "read"][src], f"c{i}", NOW + src) for i in range(300)
            ]
            got = await w.run("ordering", lambda b, e=events, s=src: order_record(b, e, s))
            assert got == order_record(ref, events, src)
        assert len(w.table("ordering").cache) < 300
    finally:
        await w.backend.close()


async def test_a_concurrent_writer_never_loses_an_update(redis_url):
    """Two writers holding the same fencing token race read-modify-write decisions on the
    same keys: the compare-and-apply refuses every decision made on a value that changed
    meanwhile, so every increment counts (without it, updates are lost)."""
    a, b = Worker(*redis_url), Worker(*redis_url)
    try:
        await a.run("emitter", lambda m: m.__setitem__("counter", b"0"))
        b.table("emitter")._fences[0] = a.table("emitter")._fences[0]  # share the claim

        def bump(m: Any, key: str) -> int:
            value = int(m.get(key) or b"0") + 1
            m[key] = str(value).encode()
            m["counter"] = str(int(m["counter"]) + 1).encode()
            return value

        async def many(w: Worker, n: int) -> None:
            for i in range(n):
                await w.run("emitter", lambda m, k=f"k{i % 3}": bump(m, k))
                await asyncio.sleep(0)

        await asyncio.gather(many(a, 150), many(b, 150))
        values, _ = await stored(a, "emitter")
        assert values["counter"] == b"300"
        assert sum(int(values[f"k{i}"]) for i in range(3)) == 300
    finally:
        await a.backend.close()
        await b.backend.close()


async def test_an_outside_write_makes_the_owner_decide_again(worker, redis_url):
    """The owner's cache says `sent`; someone else moved the message to `delivered`. The
    owner's `delivered` is then a duplicate, not a second `delivered` with a new index."""
    await worker.run("ordering", lambda b: order_record(b, [ev("sent", "x", NOW)], 1))
    other = ScanDict()
    values, _ = await stored(worker, "ordering")
    other.update(values)
    order_record(other, [ev("delivered", "x", NOW + 1)], 2)
    vkey, _, fkey = worker.table("ordering").keys(0)
    version = await worker.backend.redis.hincrby(fkey, "version", 1)
    await worker.backend.redis.hset(vkey, "crm:x", b"%d:" % version + other["crm:x"])
    items = await worker.run(
        "ordering", lambda b: order_record(b, [ev("delivered", "x", NOW + 1)], 3)
    )
    assert [i["o"] for i in items] == ["duplicate"]


async def test_a_newer_generation_fences_the_old_owner(redis_url):
    """After a rebalance the new owner (generation 2) claims the partition: the old one
    (a zombie with generation 1) can neither apply nor claim it back; it waits until its
    revoke and then writes nothing. Its late claim would only win once the partition had
    been silent for the stale period (a group recreated from generation 1)."""
    old, new = Worker(*redis_url, generation=1), Worker(*redis_url, generation=2)
    try:
        await old.run("ordering", lambda b: order_record(b, [ev("sent", "z", NOW)], 1))
        await new.run("ordering", lambda b: order_record(b, [ev("delivered", "z", NOW)], 2))
        task = asyncio.ensure_future(
            old.run("ordering", lambda b: order_record(b, [ev("failed", "z", NOW)], 3))
        )
        await asyncio.sleep(0.5)
        assert not task.done()  # refused, waiting: a zombie never writes
        old.ownership.revoke({TP})
        with pytest.raises(Fenced):
            await asyncio.wait_for(task, 10)
        values, _ = await stored(new, "ordering")
        assert orjson.loads(values["crm:z"])["s"] == "delivered"
        # a recreated group (generations start again) takes over a silent partition
        again = Worker(*redis_url, generation=1)
        again.backend.stale_after = 1.0
        await asyncio.sleep(2.1)
        items = await again.run("ordering", lambda b: order_record(b, [ev("read", "z", NOW)], 4))
        assert [i["o"] for i in items] == ["applied"]
        await again.backend.close()
    finally:
        await old.backend.close()
        await new.backend.close()


async def test_a_decision_that_raises_on_real_state_writes_nothing(worker):
    await worker.run("ordering", lambda b: b.__setitem__("k", b"1"))
    worker.table("ordering").forget({0})  # cold: the first run guesses k is absent
    worker.table("ordering").assigned({0}, worker.generation)
    runs: list[Any] = []

    def picky(m: Any) -> None:
        value = m.get("k")
        runs.append(value)
        m["other"] = b"x"
        if value is None:
            raise KeyError("k")  # only because of the guess: not the record's fault
        raise ValueError("a record no rule can take")

    with pytest.raises(Undecidable) as failure:
        await worker.run("ordering", picky)
    assert isinstance(failure.value.__cause__, ValueError)
    assert runs == [None, b"1"]
    values, _ = await stored(worker, "ordering")
    assert "other" not in values


async def test_redis_going_away_pauses_the_record_and_it_completes_when_redis_is_back(tmp_path):
    """A record in hand while Redis is down waits (nothing raised, nothing skipped), the
    dependency gauge says Redis is down, and the record completes once Redis is back."""
    server = start_redis(tmp_path / "redis", durable=True)
    w = Worker(server.url, unique_prefix(), redis_timeout=0.5)
    try:
        await w.run("ordering", lambda b: order_record(b, [ev("sent", "r", NOW)], 1))
        server.kill()
        task = asyncio.ensure_future(
            w.run("ordering", lambda b: order_record(b, [ev("delivered", "r", NOW)], 2))
        )
        await asyncio.sleep(2.0)
        assert not task.done()
        assert dependencies.LAST[dependencies.REDIS] is False
        server.start()
        server.wait_ready(30)
        items = await asyncio.wait_for(task, 30)
        assert [i["o"] for i in items] == ["applied"]
        assert dependencies.LAST[dependencies.REDIS] is True
        values, _ = await stored(w, "ordering")  # the first write survived the restart
        assert orjson.loads(values["crm:r"])["a"] == ["sent", "delivered"]
    finally:
        await w.backend.close()
        server.stop()


async def test_a_revoke_ends_the_wait_for_an_unreachable_redis():
    from support.infra import local_infra

    port = local_infra.free_port()  # nothing listens there
    w = Worker(f"redis://127.0.0.1:{port}/0", unique_prefix(), redis_timeout=0.2)
    task = asyncio.ensure_future(w.run("ordering", lambda b: b.__setitem__("k", b"v")))
    await asyncio.sleep(0.8)
    assert not task.done()
    w.ownership.revoke({TP})
    with pytest.raises(Fenced):
        await asyncio.wait_for(task, 10)
    await w.backend.close()


async def test_the_acl_of_docs_configuration_is_enough(tmp_path):
    """docs/configuration.md names what an ACL user needs; with exactly that, the backend
    claims, applies and answers the health probe (and without `+time` it could not)."""
    server = start_redis(tmp_path / "redis")
    prefix = unique_prefix()
    admin = aioredis.from_url(server.url)
    rules = [f"~{prefix}msgstatus:*", "+@read", "+@write", "+@scripting", "+ping", "+info"]
    try:
        await admin.acl_setuser("ms", enabled=True, passwords=["+secret"], reset=True)
        await admin.execute_command("ACL", "SETUSER", "ms", *rules, "+time")
        w = Worker(server.url, prefix, redis_username="ms", redis_password="secret")
        items = await w.run("ordering", lambda b: order_record(b, [ev("sent", "a", NOW)], 1))
        assert [i["o"] for i in items] == ["applied"]
        assert await w.backend.ping() and await w.table("ordering").size({0}) == 1
        await w.backend.close()
        await admin.execute_command("ACL", "SETUSER", "ms", "-time")
        w = Worker(server.url, prefix, redis_username="ms", redis_password="secret")
        w.table("ordering").assigned({0}, 2)
        task = asyncio.ensure_future(
            w.run("ordering", lambda b: order_record(b, [ev("read", "a", NOW)], 2))
        )
        await asyncio.sleep(1.0)
        assert not task.done()  # refused by the ACL: it waits, it does not skip
        w.ownership.revoke({TP})
        with pytest.raises(Fenced):
            await asyncio.wait_for(task, 10)
        await w.backend.close()
    finally:
        await admin.aclose()
        server.stop()


async def test_state_gone_from_redis_is_said_loudly(worker, caplog):
    """A Redis that lost the partition (flushed, restarted without its append-only file)
    is not mistaken for a rebalance: the worker logs an error and goes on from what Redis
    has, claiming the partition again."""
    await worker.run("ordering", lambda b: order_record(b, [ev("sent", "g", NOW)], 1))
    await worker.backend.redis.delete(*worker.table("ordering").keys(0))
    with caplog.at_level("ERROR"):
        items = await worker.run(
            "ordering", lambda b: order_record(b, [ev("delivered", "g", NOW)], 2)
        )
    assert [i["o"] for i in items] == ["applied"] and items[0]["i"] == 1  # a fresh state
    assert "no longer has this partition's state" in caplog.text
