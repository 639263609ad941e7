"""Topic names (DESIGN.md section 8) and their creation.

Every process that touches Kafka creates what it needs on start, with the configured
partition count, so a fresh broker works without an operator step.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.partitioner import murmur2

from processors.config import Settings

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


# The worker's Faust tables (processors/stream/app.py). Their changelog topics are created
# up front, compacted like Faust creates them: Faust itself declares them while the
# consumer group forms, and a changelog the broker does not list yet is left out of that
# first assignment, which stalls its table's agent until the next metadata refresh
# (minutes). Seen with the conversations table on a busy machine.
TABLES: tuple[str, ...] = ("ordering", "emitter", "conversations")
CHANGELOG_CONFIG = {"cleanup.policy": "compact"}


def changelog_topic(settings: Settings, table: str) -> str:
    """Faust's name for a table's changelog: `<app id>-<table>-changelog`."""
    return f"{settings.topic_prefix}{settings.app_id}-{table}-changelog"


def raw_topic(settings: Settings, provider: str) -> str:
    return settings.topic(f"raw.{provider}")


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


async def ensure_topics(settings: Settings, names: Iterable[str], timeout: float = 30.0) -> None:
    """Create missing topics; existing ones are left as they are."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=int(timeout * 1000)
    )
    await asyncio.wait_for(admin.start(), timeout)
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in dict.fromkeys(names) if n not in existing]
        if not missing:
            return
        new = [
            NewTopic(
                n,
                num_partitions=settings.partitions,
                replication_factor=1,
                topic_configs=CHANGELOG_CONFIG if n.endswith("-changelog") else {},
            )
            for n in missing
        ]
        with contextlib.suppress(TopicAlreadyExistsError):  # another process won the race
            await admin.create_topics(new)
        log.info("created topics %s", missing)
        # Return only once the broker lists them, so clients started next see them all.
        deadline = asyncio.get_running_loop().time() + timeout
        while not set(missing) <= set(await admin.list_topics()):
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
