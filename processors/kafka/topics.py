"""Topic names (DESIGN.md section 8) and their creation.

Every process that touches Kafka creates what it needs on start, with the configured
partition count, so a fresh broker works without an operator step.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError, for_code
from aiokafka.partitioner import murmur2

from processors.config import Settings
from processors.kafka import client

log = logging.getLogger(__name__)

CANONICAL = "status.canonical"
TRANSITIONS = "status.transitions"
STATUS = "message.status"
DEADLETTER = "status.deadletter"
# Messenger watermarks and the outbound messages they cover, keyed by conversation
# (processors/stream/watermarks.py).
CONVERSATIONS = "status.conversations"
# "Ask the provider once before delivery_unknown": the emitter's questions to the poller,
# keyed by message_key (processors/stream/emission.py, processors/ingest/pollers/).
POLL_REQUESTS = "status.pollrequests"
# `msgstatus rebuild`'s journal: one compacted record per rebuild (processors/ops/journal.py).
REBUILDS = "status.rebuilds"


# The worker's Faust tables (processors/stream/app.py). Their changelog topics are created
# up front, compacted like Faust creates them: Faust itself declares them while the
# consumer group forms, and a changelog the broker does not list yet is left out of that
# first assignment, which stalls its table's agent until the next metadata refresh
# (minutes). Seen with the conversations table on a busy machine.
TABLES: tuple[str, ...] = ("ordering", "emitter", "conversations")
CHANGELOG_CONFIG = {"cleanup.policy": "compact"}
# The worker writes a whole batch of state changes as one record to its internal topics
# and changelogs (atomic changelog batches); the broker default (1 MB) is too small.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024


def changelog_topic(settings: Settings, table: str) -> str:
    """Faust's name for a table's changelog: `<app id>-<table>-changelog`."""
    return f"{settings.topic_prefix}{settings.app_id}-{table}-changelog"


def raw_topic(settings: Settings, provider: str) -> str:
    return f"{settings.raw_prefix}raw.{provider}"


@functools.lru_cache(maxsize=262_144)
def partition_for(key: str, partitions: int) -> int:
    """Kafka's default partitioner (murmur2), so our explicit partitions match keyed sends.

    Cached: aiokafka's murmur2 is pure Python and a message's key recurs with each status.
    """
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def all_topics(settings: Settings, providers: Iterable[str]) -> list[str]:
    names = [raw_topic(settings, p) for p in providers]
    names += [settings.topic(t) for t in (CANONICAL, TRANSITIONS, STATUS, DEADLETTER)]
    names.append(settings.topic(CONVERSATIONS))
    names.append(settings.topic(POLL_REQUESTS))
    names += [changelog_topic(settings, table) for table in TABLES]
    return names


class TopicSetupError(RuntimeError):
    """Topics cannot be created as configured; the message says what to change."""


def internal_topics(settings: Settings) -> set[str]:
    """The topics the worker itself writes batches to: they need MAX_MESSAGE_BYTES."""
    names = {settings.topic(t) for t in (CANONICAL, TRANSITIONS, CONVERSATIONS)}
    return names | {changelog_topic(settings, table) for table in TABLES}


def topic_configs(settings: Settings, name: str) -> dict[str, str]:
    """Broker-side settings of a topic msgstatus creates."""
    configs = {"min.insync.replicas": str(settings.min_insync_replicas)}
    if name.endswith("-changelog"):
        configs.update(CHANGELOG_CONFIG)
    if name in internal_topics(settings):
        configs["max.message.bytes"] = str(MAX_MESSAGE_BYTES)
    return configs


def _too_few_brokers(settings: Settings, brokers: int) -> TopicSetupError:
    return TopicSetupError(
        f"the Kafka cluster at {settings.kafka_bootstrap} has {brokers} broker"
        f"{'s' if brokers != 1 else ''}, fewer than MSGSTATUS_REPLICATION_FACTOR="
        f"{settings.replication_factor}: topics cannot be created. On a single development "
        "broker set MSGSTATUS_REPLICATION_FACTOR=1 and MSGSTATUS_MIN_INSYNC_REPLICAS=1; "
        "in production add brokers (3 or more for the defaults)"
    )


async def ensure_topics(settings: Settings, names: Iterable[str], timeout: float = 30.0) -> None:
    """Create missing topics with the configured replication; existing ones keep theirs,
    except that the worker's internal topics are raised to MAX_MESSAGE_BYTES.

    Raises TopicSetupError when the cluster has fewer brokers than the replication factor
    or refuses a topic, instead of leaving the processes to fail later on a missing topic.
    """
    admin = AIOKafkaAdminClient(
        **client.client_kwargs(settings), request_timeout_ms=int(timeout * 1000)
    )
    await asyncio.wait_for(admin.start(), timeout)
    try:
        existing = set(await admin.list_topics())
        wanted = list(dict.fromkeys(names))
        missing = [n for n in wanted if n not in existing]
        await _raise_message_limits(admin, [n for n in wanted if n in existing], settings)
        if not missing:
            return
        brokers = len((await admin.describe_cluster()).get("brokers", []))
        if brokers < settings.replication_factor:
            raise _too_few_brokers(settings, brokers)
        new = [
            NewTopic(
                n,
                num_partitions=settings.partitions,
                replication_factor=settings.replication_factor,
                topic_configs=topic_configs(settings, n),
            )
            for n in missing
        ]
        response = await admin.create_topics(new)
        raced = [
            t for t, code, *_ in response.topic_errors if code == TopicAlreadyExistsError.errno
        ]
        await _raise_message_limits(admin, raced, settings)  # created meanwhile, elsewhere
        refused = [
            (topic, code, rest[0] if rest and isinstance(rest[0], str) else None)
            for topic, code, *rest in response.topic_errors
            if code not in (0, TopicAlreadyExistsError.errno)
        ]
        if refused:
            topic, code, message = refused[0]
            error = for_code(code)
            raise TopicSetupError(
                f"Kafka refused to create {topic} ({error.__name__}: {message or error.message})"
                + (f" and {len(refused) - 1} more" if len(refused) > 1 else "")
            )
        log.info("created topics %s", missing)
        # Return only once the broker lists them, so clients started next see them all.
        deadline = asyncio.get_running_loop().time() + timeout
        while not set(missing) <= set(await admin.list_topics()):
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


DYNAMIC_TOPIC_CONFIG = 1  # DescribeConfigs config_source of a per-topic override


async def _raise_message_limits(
    admin: AIOKafkaAdminClient, names: list[str], settings: Settings
) -> None:
    """Existing internal topics created before MAX_MESSAGE_BYTES get it (upgrades).

    AlterConfigs replaces every per-topic override of a topic, so the ones it has
    (cleanup.policy=compact, ...) are sent back with it.
    """
    internal = [n for n in names if n in internal_topics(settings)]
    if not internal:
        return
    resources = [ConfigResource(ConfigResourceType.TOPIC, n) for n in internal]
    changes = []
    for response in await admin.describe_configs(resources):
        for resource in response.to_object()["resources"]:
            if resource["error_code"]:
                log.warning(
                    "cannot read the settings of %s (%s): max.message.bytes not checked",
                    resource["resource_name"],
                    for_code(resource["error_code"]).__name__,
                )
                continue
            overrides: dict[str, str] = {}
            current = None
            for entry in resource["config_entries"]:
                name, value = entry["config_names"], entry["config_value"]
                if name == "max.message.bytes":
                    current = int(value)
                dynamic = entry.get("config_source") == DYNAMIC_TOPIC_CONFIG
                if dynamic or entry.get("is_default") is False:
                    overrides[name] = value
            if current is not None and current >= MAX_MESSAGE_BYTES:
                continue
            overrides["max.message.bytes"] = str(MAX_MESSAGE_BYTES)
            changes.append(
                ConfigResource(ConfigResourceType.TOPIC, resource["resource_name"], overrides)
            )
            log.warning(
                "raising max.message.bytes of %s from %s to %d",
                resource["resource_name"],
                current,
                MAX_MESSAGE_BYTES,
            )
    if changes:
        for response in await admin.alter_configs(changes):
            for resource in response.to_object()["resources"]:
                if resource["error_code"]:
                    error = for_code(resource["error_code"])
                    raise TopicSetupError(
                        f"could not raise max.message.bytes of {resource['resource_name']} "
                        f"({error.__name__}: {resource['error_message'] or error.message}); "
                        f"set it to {MAX_MESSAGE_BYTES} with kafka-configs"
                    )
