"""The shadow generation of `msgstatus rebuild`: the real worker, on its own state.

It is a `msgstatus worker` subprocess (the same stages, code and settings as the live
workers, so nothing is implemented twice) whose topic prefix is
`<prefix>rebuild-<n>.` while its raw prefix stays the live one
(MSGSTATUS_RAW_TOPIC_PREFIX): it reads the live `raw.<provider>` topics from their
earliest retained record and writes everything else (internal topics, changelogs,
`message.status`, dead letters, poll requests) under its own prefix, with its own
consumer groups and its own RocksDB directory. It writes no read model and serves no
metrics. What it publishes on its own `message.status` is what the live one would say
had the current code read every retained raw record.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import DeleteGroupsRequest, DescribeGroupsRequest

from processors import providers
from processors.config import Settings
from processors.kafka import client as kafka_client
from processors.kafka import offsets
from processors.kafka.topics import CANONICAL, CONVERSATIONS, TRANSITIONS, raw_topic
from processors.ops.kafka import OpsError
from processors.ops.progress import Progress

STALL = 600.0  # seconds without progress before the shadow is declared stuck
POLL = 0.5


def prefix_of(settings: Settings, name: str) -> str:
    return f"{settings.topic_prefix}rebuild-{name}."


def app_group(settings: Settings) -> str:
    return f"{settings.topic_prefix}{settings.app_id}"


def normalize_group(settings: Settings) -> str:
    return f"{app_group(settings)}-normalize"


def raw_topics(settings: Settings) -> list[str]:
    return [raw_topic(settings, name) for name in providers.REGISTRY]


class Admin:
    """The broker facts the rebuild polls: offsets, group states."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.admin = AIOKafkaAdminClient(**kafka_client.client_kwargs(settings))
        self.consumer = AIOKafkaConsumer(
            **kafka_client.client_kwargs(settings), enable_auto_commit=False
        )

    async def start(self) -> None:
        try:
            await self.admin.start()
            await self.consumer.start()
        except Exception as exc:
            await self.close()
            where = kafka_client.describe(self.settings)
            raise OpsError(f"cannot reach Kafka at {where}: {type(exc).__name__}") from None

    async def close(self) -> None:
        await self.consumer.stop()
        await self.admin.close()

    async def partitions(self, topics: list[str], required: bool = True) -> list[TopicPartition]:
        return await offsets.partitions(self.consumer, topics, required)

    async def ends(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return await self.consumer.end_offsets(tps) if tps else {}

    async def starts(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return await self.consumer.beginning_offsets(tps) if tps else {}

    async def committed(self, group: str, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Committed offsets (partitions without one are left out)."""
        found = await self.admin.list_consumer_group_offsets(group, partitions=tps)
        return {tp: meta.offset for tp, meta in found.items() if meta.offset >= 0}

    async def members(self, groups: list[str]) -> dict[str, int]:
        """Active members per group (0: nobody consumes, the group can be written for)."""
        out: dict[str, int] = {}
        for group in groups:
            node = await self.admin.find_coordinator(group)
            response = await self.admin._send_request(DescribeGroupsRequest([group]), node)
            for entry in response.groups:
                out[entry[1]] = len(entry[5])
        return out

    async def delete_groups(self, groups: list[str]) -> None:
        for group in groups:
            node = await self.admin.find_coordinator(group)
            await self.admin._send_request(DeleteGroupsRequest([group]), node)

    async def delete_topics(self, prefix: str) -> list[str]:
        names = [t for t in await self.admin.list_topics() if t.startswith(prefix)]
        if names:
            await self.admin.delete_topics(names)
        return names


def behind(
    targets: Mapping[TopicPartition, int],
    starts: Mapping[TopicPartition, int],
    committed: Mapping[TopicPartition, int],
) -> int:
    """Records of `targets` the group has still to commit (a partition it never committed
    is read from its log start)."""
    return sum(
        max(0, end - max(committed.get(tp, starts.get(tp, 0)), starts.get(tp, 0)))
        for tp, end in targets.items()
    )


class Shadow:
    def __init__(self, live: Settings, name: str) -> None:
        self.live = live
        self.name = name
        self.data_dir = Path(live.data_dir) / f"rebuild-{name}"
        self.settings = dataclasses.replace(
            live,
            topic_prefix=prefix_of(live, name),
            raw_topic_prefix=live.raw_prefix,
            data_dir=str(self.data_dir),
            metrics_port=0,
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir / "worker.log"

    @property
    def prefix(self) -> str:
        return self.settings.topic_prefix

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        env.update(
            MSGSTATUS_TOPIC_PREFIX=self.settings.topic_prefix,
            MSGSTATUS_RAW_TOPIC_PREFIX=self.live.raw_prefix,
            MSGSTATUS_DATA_DIR=str(self.data_dir),
            MSGSTATUS_METRICS_PORT="0",
            MSGSTATUS_PARTITIONS=str(self.live.partitions),
            MSGSTATUS_APP_ID=self.live.app_id,
        )
        return env

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            # bare: a crashing shadow worker is reported, not restarted by a supervisor
            [
                sys.executable,
                "-m",
                "processors.cli",
                "worker",
                "--no-read-model",
                "--no-supervisor",
            ],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise OpsError(
                f"the shadow worker exited with status {self.proc.returncode}; its log "
                f"({self.log_path}) ends with:\n{self.log_tail()}"
            )

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM (it commits what it did, like any worker), SIGKILL if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        except ProcessLookupError:
            pass

    async def wait_committed(
        self,
        admin: Admin,
        group: str,
        targets: Mapping[TopicPartition, int],
        progress: Progress | None = None,
        stall: float = STALL,
    ) -> None:
        """Until `group` committed at least `targets` (the shadow keeps running)."""
        tps = list(targets)
        starts = await admin.starts(tps)
        total = behind(targets, starts, {})
        last, moved = None, time.monotonic()
        while True:
            self.check()
            left = behind(targets, starts, await admin.committed(group, tps))
            if progress is not None:
                progress.update(total - left, total)
            if left == 0:
                return
            if left != last:
                last, moved = left, time.monotonic()
            elif time.monotonic() - moved > stall:
                raise OpsError(
                    f"the shadow worker made no progress for {stall:.0f} s ({left} records "
                    f"of {group} left); its log ({self.log_path}) ends with:\n{self.log_tail()}"
                )
            await asyncio.sleep(POLL)

    async def drain(self, admin: Admin, say: Callable[[str], None]) -> None:
        """Let the agents finish what the normalize stage wrote, then one more round of
        watermark markers, so every deadline the watermark passed has fired."""
        settings = self.settings
        await asyncio.sleep(max(1.0, 2.5 * settings.watermark_interval))
        group = app_group(settings)
        for name in (CONVERSATIONS, CANONICAL, TRANSITIONS):
            tps = await admin.partitions([settings.topic(name)])
            await self.wait_committed(admin, group, await admin.ends(tps))
        say(f"rebuild {self.name}: the shadow generation is complete")

    async def cleanup(self, admin: Admin) -> list[str]:
        """Delete the shadow's topics, consumer groups and RocksDB directory."""
        self.stop()
        deleted = await admin.delete_topics(self.prefix)
        # an empty group left behind expires on its own (offsets.retention.minutes)
        with contextlib.suppress(Exception):
            await admin.delete_groups([app_group(self.settings), normalize_group(self.settings)])
        shutil.rmtree(self.data_dir, ignore_errors=True)
        return deleted
