"""Kafka with SASL: a local broker with a SASL_PLAINTEXT listener (PLAIN, SCRAM-SHA-256/512)
and the whole pipeline, gateway -> worker -> message.status, through it.

The processes only get the SASL listener's address, so every client they create (the
gateway's producer, topic creation, the worker's Faust app and its normalize and restore
consumers) has to authenticate; a wrong password is refused.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from support.infra import KafkaBroker, local_infra
from support.processes import SECRETS, base_env, free_port, start_gateway, start_worker
from support.stream import check_message, last_status

from processors.config import Settings
from processors.kafka import client as kafka_client
from processors.kafka.topics import ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.slow]

USER, PASSWORD = "msgstatus", "saslpw1234"


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    port, controller, sasl = local_infra.free_ports(3)
    broker = KafkaBroker(
        port,
        controller,
        tmp_path_factory.mktemp("sasl-kafka"),
        die_with_parent=True,
        sasl_port=sasl,
        sasl_users={USER: PASSWORD},
    )
    broker.start()
    try:
        broker.wait_ready(120)
        yield broker
    finally:
        broker.stop()


def sasl_env(broker: KafkaBroker, mechanism: str, password: str = PASSWORD) -> dict[str, str]:
    return {
        "MSGSTATUS_KAFKA_BOOTSTRAP": broker.sasl_bootstrap,
        "MSGSTATUS_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "MSGSTATUS_KAFKA_SASL_MECHANISM": mechanism,
        "MSGSTATUS_KAFKA_SASL_USERNAME": USER,
        "MSGSTATUS_KAFKA_SASL_PASSWORD": password,
        "MSGSTATUS_REPLICATION_FACTOR": "1",
        "MSGSTATUS_MIN_INSYNC_REPLICAS": "1",
    }


async def roundtrip(settings: Settings, topic: str) -> bytes:
    await ensure_topics(settings, [topic], timeout=20)
    producer = AIOKafkaProducer(**kafka_client.client_kwargs(settings), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"through sasl")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, **kafka_client.client_kwargs(settings), auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 20)
    finally:
        await consumer.stop()
    return record.value


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_every_mechanism_authenticates(sasl_broker, topic_prefix, mechanism) -> None:
    settings = Settings.from_env(sasl_env(sasl_broker, mechanism))
    assert await roundtrip(settings, f"{topic_prefix}sasl.{mechanism}") == b"through sasl"


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
async def test_a_wrong_password_is_refused(sasl_broker, topic_prefix, mechanism) -> None:
    settings = Settings.from_env(sasl_env(sasl_broker, mechanism, password="wrongpw"))
    producer = AIOKafkaProducer(**kafka_client.client_kwargs(settings), request_timeout_ms=5000)
    with pytest.raises(KafkaError):
        await producer.start()
    await producer.stop()


async def test_scram_user_added_to_a_running_broker(sasl_broker, topic_prefix) -> None:
    sasl_broker.add_scram_user("latecomer", "latepw5678", "SCRAM-SHA-512")
    env = {
        **sasl_env(sasl_broker, "SCRAM-SHA-512"),
        "MSGSTATUS_KAFKA_SASL_USERNAME": "latecomer",
        "MSGSTATUS_KAFKA_SASL_PASSWORD": "latepw5678",
    }
    value = await roundtrip(Settings.from_env(env), f"{topic_prefix}sasl.late")
    assert value == b"through sasl"


async def post_events(url: str, items: list[dict[str, Any]]) -> None:
    headers = {"Authorization": f"Bearer {SECRETS['MSGSTATUS_EVENTS_TOKEN']}"}
    async with aiohttp.ClientSession() as session:
        for item in items:
            async with session.post(f"{url}/v1/events", json=[item], headers=headers) as answer:
                assert answer.status == 200, await answer.text()


async def statuses(settings: Settings, want: dict[str, str], timeout: float) -> dict[str, list]:
    """message.status read through SASL until every key's last status is as wanted."""
    consumer = AIOKafkaConsumer(
        settings.topic("message.status"),
        **kafka_client.client_kwargs(settings),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    by_key: dict[str, list] = {}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    event = orjson.loads(record.value)
                    by_key.setdefault(event["data"]["message_key"], []).append(event)
            if all(last_status(by_key.get(k, [])) == v for k, v in want.items()):
                break
    finally:
        await consumer.stop()
    return by_key


def restored_records(port: str, timeout: float = 90) -> float:
    """The worker's msgstatus_restored_changelog_records_total, once its metrics answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as a:
                text = a.read().decode()
        except OSError:
            time.sleep(0.5)
            continue
        lines = [
            line
            for line in text.splitlines()
            if line.startswith("msgstatus_restored_changelog_records_total{")
        ]
        if lines:
            return sum(float(line.rsplit(" ", 1)[1]) for line in lines)
        time.sleep(0.5)
    return 0.0


async def test_pipeline_runs_through_sasl(sasl_broker, topic_prefix, tmp_path: Path) -> None:
    env = base_env(
        sasl_broker.sasl_bootstrap,
        topic_prefix,
        tmp_path / "data",
        **sasl_env(sasl_broker, "SCRAM-SHA-512"),
        MSGSTATUS_METRICS_PORT=str(free_port()),
    )
    settings = Settings.from_env(env)
    now = time.time()
    keys = [f"sasl-{n}" for n in range(5)]

    def item(mid: str, status: str, offset: float) -> dict[str, Any]:
        return {"provider": "crm", "provider_message_id": mid, "channel": "sms",
                "status": status, "occurred_at": now + offset}  # fmt: skip

    gateway, url = start_gateway(env, tmp_path)
    worker = start_worker(env, tmp_path)
    try:
        await post_events(url, [item(k, "sent", 0) for k in keys])
        await post_events(url, [item(k, "delivered", 1) for k in keys])
        want = {f"crm:{k}": "delivered" for k in keys}
        by_key = await statuses(settings, want, timeout=120)
        got = {k: last_status(by_key.get(k, [])) for k in want}
        assert got == want, f"{got}\nworker:\n{worker.log_tail()}\ngateway:\n{gateway.log_tail()}"
        for key in want:
            assert check_message(key, by_key[key]) == []
    finally:
        worker.stop()

    # A second worker on an empty disk restores the tables from the changelogs through
    # SASL (the bulk copy's own consumer) and carries on with the right sequence numbers.
    port = str(free_port())
    worker = start_worker(
        {**env, "MSGSTATUS_METRICS_PORT": port}, tmp_path, data_dir=tmp_path / "fresh"
    )
    try:
        assert restored_records(port) > 0, worker.log_tail()
        await post_events(url, [item(k, "read", 2) for k in keys])
        want = {f"crm:{k}": "read" for k in keys}
        by_key = await statuses(settings, want, timeout=120)
        for key in want:
            assert last_status(by_key.get(key, [])) == "read", worker.log_tail()
            assert check_message(key, by_key[key]) == []
            # the restored state knew the message: read follows delivered, next sequence
            assert by_key[key][-1]["data"]["previous_status"] == "delivered"
    finally:
        worker.stop()
        gateway.stop()
