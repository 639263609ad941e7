"""deploy/local/infra.py against the real thing: a KRaft broker, redis-server, the CLI."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from support.infra import INFRA_SCRIPT, KafkaBroker, local_infra, start_kafka

pytestmark = pytest.mark.integration


async def produce(bootstrap: str, topic: str, key: bytes, value: bytes) -> tuple[int, int]:
    """Send one record the way the service does (acks=all, idempotent); (partition, offset)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()
    return meta.partition, meta.offset


async def consume_one(bootstrap: str, topic: str, timeout: float = 30) -> tuple[bytes, bytes]:
    """Read the first record of ``topic`` from the beginning, without a consumer group."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), timeout)
    finally:
        await consumer.stop()
    assert record.key is not None and record.value is not None
    return record.key, record.value


async def test_kafka_roundtrip(kafka: KafkaBroker, topic_prefix: str) -> None:
    topic = f"{topic_prefix}roundtrip"
    partition, offset = await produce(kafka.bootstrap, topic, b"k1", b"hello")
    assert offset == 0
    assert 0 <= partition < 4  # num.partitions=4 for auto-created topics
    assert await consume_one(kafka.bootstrap, topic) == (b"k1", b"hello")


async def test_kafka_consumer_group_commits(kafka: KafkaBroker, topic_prefix: str) -> None:
    """The group coordinator (__consumer_offsets, replication 1) works right away."""
    topic, group = f"{topic_prefix}grouped", f"{topic_prefix}group"
    partition, offset = await produce(kafka.bootstrap, topic, b"k", b"v")
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka.bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 30)
        assert record.value == b"v"
        await consumer.commit()
        tp = TopicPartition(topic, partition)
        assert await consumer.committed(tp) == offset + 1
    finally:
        await consumer.stop()


async def test_redis_ping_set_get(redis_server: local_infra.RedisServer, topic_prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        assert await client.ping() is True
        await client.set(f"{topic_prefix}key", b"value", ex=60)
        assert await client.get(f"{topic_prefix}key") == b"value"
    finally:
        await client.aclose()


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_kafka_restart_keeps_records(tmp_path: Path, how: str) -> None:
    """Records survive a clean stop and a SIGKILL, restarting on the same data dir."""
    broker = start_kafka(tmp_path / "kafka")
    try:
        await produce(broker.bootstrap, "durable", b"k", b"survives")
        getattr(broker, how)()
        assert broker.pid is None
        assert not broker.answers()
        broker.start()
        broker.wait_ready(60)
        assert await consume_one(broker.bootstrap, "durable") == (b"k", b"survives")
    finally:
        broker.stop()
    broker.stop()  # idempotent
    assert broker.pid is None


def test_kafka_start_failure_reports_log_tail(tmp_path: Path) -> None:
    """A JVM that dies at once surfaces as RuntimeError carrying its output."""
    port, controller_port = local_infra.free_ports(2)
    broker = KafkaBroker(port, controller_port, tmp_path / "kafka", heap="1k", die_with_parent=True)
    broker.start()
    try:
        with pytest.raises(RuntimeError, match=r"(?s)exited with code.*heap"):
            broker.wait_ready(30)
    finally:
        broker.stop()


def run_cli(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(INFRA_SCRIPT), command],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_cli_up_status_down(tmp_path: Path) -> None:
    """``up`` leaves detached, answering services; ``up`` again is a no-op; ``down`` ends them."""
    kafka_port, controller_port, redis_port = local_infra.free_ports(3)
    env = dict(
        os.environ,
        MSGSTATUS_INFRA_DIR=str(tmp_path / "infra"),
        MSGSTATUS_KAFKA_PORT=str(kafka_port),
        MSGSTATUS_KAFKA_CONTROLLER_PORT=str(controller_port),
        MSGSTATUS_REDIS_PORT=str(redis_port),
    )
    cfg = local_infra.InfraConfig.from_env(env)
    try:
        assert run_cli("status", env).returncode == 3

        up = run_cli("up", env)
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"127.0.0.1:{kafka_port}" in up.stdout
        assert local_infra.kafka_answers("127.0.0.1", kafka_port)
        assert local_infra.redis_answers("127.0.0.1", redis_port)

        again = run_cli("up", env)
        assert again.returncode == 0, again.stdout + again.stderr
        assert again.stdout.count("already running") == 2

        status = run_cli("status", env)
        assert status.returncode == 0
        assert "answering" in status.stdout

        pids = [cfg.kafka().pid, cfg.redis().pid]
        down = run_cli("down", env)
        assert down.returncode == 0, down.stdout + down.stderr
        assert all(pid is not None and not local_infra.pid_alive(pid) for pid in pids)
        assert run_cli("status", env).returncode == 3
    finally:
        cfg.kafka().stop()
        cfg.redis().stop()


def test_servers_die_with_a_killed_test_process(tmp_path: Path) -> None:
    """A SIGKILLed pytest (no finalizers, no atexit) still leaves no server behind."""
    code = (
        f"import sys, time; sys.path.insert(0, {str(INFRA_SCRIPT.parent)!r}); import infra; "
        f"r = infra.RedisServer(infra.free_port(), {str(tmp_path)!r}, die_with_parent=True); "
        "r.start(); r.wait_ready(30); print(r.pid, flush=True); time.sleep(120)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert local_infra.pid_alive(child)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while local_infra.pid_alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not local_infra.pid_alive(child)
