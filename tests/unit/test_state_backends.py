"""The state backends without a server: how the worker is wired to each, the Redis
backend's recording mapping and cache, and the worker's `/readyz` (tests/integration/
test_redis_state.py runs the Redis layer against a real Redis)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from processors import dependencies, probes
from processors.config import Settings
from processors.kafka.writer import MAX_UNIT_BYTES
from processors.store.state.redis import apply_args, decode_stored, partition_keys
from processors.store.state.redis_batch import ABSENT, Cache, Learnt, RedisBatch, Scan
from processors.stream import app as worker_app
from processors.stream.deadlines import DEADLINE
from processors.stream.fasttable import UnitTooLarge


async def test_the_rocksdb_backend_declares_faust_tables(tmp_path):
    app = worker_app.build(Settings(data_dir=str(tmp_path), topic_prefix="tunit."))
    assert app.msgstatus["state"].name == "rocksdb"
    assert sorted(app.tables) == ["conversations", "emitter", "ordering"]
    assert str(app.conf.store).startswith("rocksdb:")


async def test_the_redis_backend_leaves_no_state_to_faust(tmp_path):
    """Stateless workers: no Faust table, so no changelog topic and no restore."""
    settings = Settings(data_dir=str(tmp_path), topic_prefix="tunit.", state_backend="redis")
    app = worker_app.build(settings)
    assert app.msgstatus["state"].name == "redis"
    assert list(app.tables) == []
    assert str(app.conf.store).startswith("memory:")
    await app.msgstatus["state"].close()


def test_partition_keys_share_one_cluster_hash_slot_per_table_partition():
    keys = partition_keys("prod.", "emitter", 3)
    assert keys == (
        "prod.msgstatus:state:{prod.emitter:3}:v",
        "prod.msgstatus:state:{prod.emitter:3}:i",
        "prod.msgstatus:state:{prod.emitter:3}:f",
    )
    assert partition_keys("prod.", "emitter", 2)[0] != keys[0]


def test_reads_are_recorded_with_the_version_seen_and_unknown_keys_guessed_absent():
    cache = Cache(1 << 20)
    cache.put(0, "known", b"v", 7)
    cache.put(1, "other", b"w", 9)  # another partition's: not ours
    batch = RedisBatch(cache, 0, Learnt())
    assert batch.get("known") == b"v"
    assert batch.get("other") is None
    assert batch.get("new") is None
    assert batch.reads == {"known": 7, "other": ABSENT, "new": ABSENT}
    assert batch.guessed == {"other", "new"} and batch.guessing
    batch["known"] = b"v2"
    assert batch.get("known") == b"v2" and batch.reads["known"] == 7  # first read counts
    assert batch.pop("known") == b"v2" and batch.get("known") is None


def test_what_a_transaction_learnt_wins_over_the_cache():
    cache = Cache(1 << 20)
    cache.put(0, "k", b"old", 1)
    learnt = Learnt()
    learnt.values["k"] = (b"new", 5)
    batch = RedisBatch(cache, 0, learnt)
    assert batch.get("k") == b"new" and batch.reads == {"k": 5} and not batch.guessing


def test_a_scan_merges_this_runs_own_index_writes():
    """What the mapping answers from a learnt range plus its own pending writes is what a
    dict would answer (a scan after removals asks for more than `limit`)."""
    stop = f"{DEADLINE}{100:012d}"
    stored = [f"{DEADLINE}{i:012d}:k{i}" for i in range(10)]
    learnt = Learnt()
    batch = RedisBatch(Cache(1 << 20), 0, learnt)
    assert batch.scan(DEADLINE, stop, 3) == []  # unknown: guessed empty
    assert batch.guessing and batch.scans[0].limit == 3 and not batch.scans[0].known
    learnt.scans[(DEADLINE, stop)] = Scan(DEADLINE, stop, 5, stored[:5])
    batch = RedisBatch(Cache(1 << 20), 0, learnt)
    batch.pop(stored[0], None)
    batch[f"{DEADLINE}{3:012d}:a"] = b""
    # two own writes in range: 3 + 2 needed, 5 learnt: served without asking
    assert [k for k, _ in batch.scan(DEADLINE, stop, 3)] == [
        stored[1],
        stored[2],
        f"{DEADLINE}{3:012d}:a",
    ]
    assert not batch.guessing
    batch.pop(stored[1], None)
    batch.scan(DEADLINE, stop, 3)  # now 3 + 3 > 5: must ask again
    assert batch.guessing
    complete = Learnt()
    complete.scans[(DEADLINE, stop)] = Scan(DEADLINE, stop, 50, stored)  # the whole range
    batch = RedisBatch(Cache(1 << 20), 0, complete)
    for key in stored[:8]:
        batch.pop(key, None)
    assert [k for k, _ in batch.scan(DEADLINE, stop, 5)] == stored[8:]
    assert not batch.guessing


def test_index_keys_are_written_and_scanned_never_read():
    batch = RedisBatch(Cache(1 << 20), 0, Learnt())
    key = f"{DEADLINE}{1:012d}:m"
    with pytest.raises(TypeError):
        batch.get(key)
    with pytest.raises(ValueError):
        batch[key] = b"not empty"
    with pytest.raises(ValueError):
        batch.scan("plain", "plaiz", 1)
    assert batch.pop(key, None) is None and not batch.reads  # a blind removal
    with pytest.raises(TypeError):
        batch["k"] = "text"  # type: ignore[assignment]


def test_a_unit_too_large_for_one_record_batch_is_refused_like_rocksdb():
    batch = RedisBatch(Cache(1 << 20), 0, Learnt())
    batch["big"] = b"x" * (MAX_UNIT_BYTES + 1)
    with pytest.raises(UnitTooLarge):
        batch.check()


def test_apply_arguments_name_every_read_scan_and_write():
    batch = RedisBatch(Cache(1 << 20), 0, Learnt())
    batch.get("a")
    batch["b"] = b"2"
    del batch["c"]
    batch[f"{DEADLINE}{1:012d}:b"] = b""
    batch.pop(f"{DEADLINE}{2:012d}:c", None)
    batch.scan(DEADLINE, f"{DEADLINE}{5:012d}", 10)
    args = apply_args("7", batch)
    assert args[:4] == ["7", 1, "a", 0]
    assert args[4:9] == [1, DEADLINE, f"{DEADLINE}{5:012d}", 12, 0]
    assert args[9:] == [
        1,
        "b",
        b"2",
        1,
        "c",
        1,
        f"{DEADLINE}{1:012d}:b",
        1,
        f"{DEADLINE}{2:012d}:c",
    ]
    assert decode_stored(b"12:a:b") == (b"a:b", 12) and decode_stored(b"") == (None, ABSENT)


def test_the_cache_is_bounded_in_bytes_and_drops_a_partition_whole():
    cache = Cache(budget=3 * (64 + 1 + 100))
    for i in range(5):
        cache.put(i % 2, f"{i}", b"x" * 100, i + 1)
    assert len(cache) == 3 and cache.bytes <= cache.budget
    assert cache.get(0, "0") is None  # the least recently used went first
    cache.get(0, "2")
    cache.put(1, "5", b"y" * 100, 9)
    assert cache.get(0, "2") is not None and cache.get(1, "3") is None
    cache.drop(0)
    assert cache.get(0, "2") is None and cache.get(1, "5") == (b"y" * 100, 9)


def _get(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_readyz_follows_the_dependencies_the_worker_needs(monkeypatch):
    monkeypatch.setattr(dependencies, "LAST", {})
    redis = Settings(state_backend="redis")
    assert probes.required(redis) == ("kafka", "redis")
    assert probes.required(Settings()) == ("kafka",)
    server = probes.serve(0, "127.0.0.1", probes.required(redis))
    port = server.server_address[1]
    try:
        assert _get(port, "/healthz") == (200, {"status": "ok"})
        assert _get(port, "/readyz")[0] == 200  # nothing checked yet
        dependencies.mark(dependencies.REDIS, False)
        status, body = _get(port, "/readyz")
        assert status == 503 and body["dependencies"] == {"kafka": True, "redis": False}
        dependencies.mark(dependencies.REDIS, True)
        assert _get(port, "/readyz")[0] == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            assert b'msgstatus_dependency_up{dependency="redis"} 1.0' in answer.read()
    finally:
        server.shutdown()
        server.server_close()
