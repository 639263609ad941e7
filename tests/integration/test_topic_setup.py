"""Topic creation on a real broker: replication settings, a clear error on a cluster too
small for them, and the message size limit of the worker's internal topics (also raised
on topics created before it existed, keeping their other settings)."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from processors import providers
from processors.config import Settings, single_broker
from processors.kafka.topics import (
    MAX_MESSAGE_BYTES,
    TopicSetupError,
    all_topics,
    changelog_topic,
    ensure_topics,
)

pytestmark = pytest.mark.integration


async def topic_configs(bootstrap: str, names: list[str]) -> dict[str, dict[str, str]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        resources = [ConfigResource(ConfigResourceType.TOPIC, n) for n in names]
        out = {}
        for response in await admin.describe_configs(resources):
            for resource in response.to_object()["resources"]:
                out[resource["resource_name"]] = {
                    e["config_names"]: e["config_value"] for e in resource["config_entries"]
                }
        return out
    finally:
        await admin.close()


async def test_too_few_brokers_for_the_replication_factor_is_a_clear_error(
    kafka, topic_prefix
) -> None:
    settings = Settings(kafka_bootstrap=kafka.bootstrap, topic_prefix=topic_prefix)
    assert settings.replication_factor == 3
    with pytest.raises(TopicSetupError) as exc:
        await ensure_topics(settings, [settings.topic("raw.twilio")])
    message = str(exc.value)
    assert "has 1 broker, fewer than MSGSTATUS_REPLICATION_FACTOR=3" in message
    assert "MSGSTATUS_REPLICATION_FACTOR=1 and MSGSTATUS_MIN_INSYNC_REPLICAS=1" in message


async def test_created_topics_carry_min_insync_and_message_size(kafka, topic_prefix) -> None:
    settings = single_broker(kafka_bootstrap=kafka.bootstrap, topic_prefix=topic_prefix)
    await ensure_topics(settings, all_topics(settings, providers.REGISTRY))
    canonical, status = settings.topic("status.canonical"), settings.topic("message.status")
    changelog = changelog_topic(settings, "ordering")
    configs = await topic_configs(kafka.bootstrap, [canonical, status, changelog])
    assert configs[canonical]["max.message.bytes"] == str(MAX_MESSAGE_BYTES)
    assert configs[changelog]["max.message.bytes"] == str(MAX_MESSAGE_BYTES)
    assert configs[changelog]["cleanup.policy"] == "compact"
    assert configs[status]["max.message.bytes"] != str(MAX_MESSAGE_BYTES)  # broker default
    assert {c["min.insync.replicas"] for c in configs.values()} == {"1"}


async def test_existing_internal_topics_get_the_message_size(kafka, topic_prefix) -> None:
    settings = single_broker(kafka_bootstrap=kafka.bootstrap, topic_prefix=topic_prefix)
    changelog = changelog_topic(settings, "emitter")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:  # as an older msgstatus created it
        await admin.create_topics(
            [NewTopic(changelog, 2, 1, topic_configs={"cleanup.policy": "compact"})]
        )
    finally:
        await admin.close()
    for _ in range(50):  # created long ago, as far as msgstatus is concerned
        if "cleanup.policy" in (await topic_configs(kafka.bootstrap, [changelog])).get(
            changelog, {}
        ):
            break
        await asyncio.sleep(0.2)
    await ensure_topics(settings, [changelog])
    for _ in range(50):  # the broker applies an altered config shortly after the answer
        config = (await topic_configs(kafka.bootstrap, [changelog]))[changelog]
        if config["max.message.bytes"] == str(MAX_MESSAGE_BYTES):
            break
        await asyncio.sleep(0.2)
    assert config["max.message.bytes"] == str(MAX_MESSAGE_BYTES)
    assert config["cleanup.policy"] == "compact"  # kept while altering
