"""`msgstatus replay` and `msgstatus redrive` against a running worker and the real
broker: copies of raw records emit nothing new, dead letters go back to their parser."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import orjson
import pytest
from support.processes import ROOT, base_env, start_worker
from support.stream import collect, send_events

from processors.config import single_broker
from processors.kafka import offsets
from processors.kafka.topics import all_topics, ensure_topics
from processors.providers import REGISTRY

pytestmark = pytest.mark.integration


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "processors.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _item(mid: str, status: str) -> dict:
    return {"provider": "crm", "provider_message_id": mid, "channel": "web", "status": status}


async def _raw_end(bootstrap: str, topic: str) -> int:
    return sum((await offsets.ends(bootstrap, [topic])).values())


async def test_replay_and_redrive(kafka, topic_prefix, tmp_path):
    settings = single_broker(
        kafka_bootstrap=kafka.bootstrap, topic_prefix=topic_prefix, partitions=4
    )
    await ensure_topics(settings, all_topics(settings, REGISTRY))
    raw_events = settings.topic("raw.events")
    status, deadletter = settings.topic("message.status"), settings.topic("status.deadletter")
    group = f"{topic_prefix}{settings.app_id}-normalize"
    bodies = [[_item(f"m{i}", "sent"), _item(f"m{i}", "delivered")] for i in range(20)] + [
        [_item("good", "read"), _item("bad", "bogus")]
    ]
    await send_events(kafka.bootstrap, raw_events, bodies)

    env = base_env(kafka.bootstrap, topic_prefix, tmp_path / "data")
    worker = start_worker(env, tmp_path, "--no-read-model")
    try:
        await collect(kafka.bootstrap, status, lambda got: len(got) == 21, timeout=90)
        await offsets.wait_consumed(kafka.bootstrap, group, [raw_events], 60)
        emitted = await _raw_end(kafka.bootstrap, status)
        assert emitted == 41  # 20 x (sent, delivered) + read

        # --- redrive --------------------------------------------------------------
        listed = _cli(env, "redrive", "--list")
        assert listed.returncode == 0, listed.stderr
        letters = [orjson.loads(line) for line in listed.stdout.splitlines()]
        assert len(letters) == 1 and "bogus" in letters[0]["reason"], letters
        letter = letters[0]
        assert letter["source"].startswith(f"{raw_events}:")

        before = await _raw_end(kafka.bootstrap, raw_events)
        dry = _cli(env, "redrive", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert orjson.loads(dry.stdout)["sources"] == [letter["source"]]
        assert await _raw_end(kafka.bootstrap, raw_events) == before

        unknown = _cli(env, "redrive", "--id", "no-such-id")
        assert unknown.returncode == 1 and "no-such-id" in unknown.stderr

        done = _cli(env, "redrive", "--id", letter["id"])
        assert done.returncode == 0, done.stderr
        assert orjson.loads(done.stdout)["records"] == 1
        assert await _raw_end(kafka.bootstrap, raw_events) == before + 1
        await offsets.wait_consumed(kafka.bootstrap, group, [raw_events], 60)
        # the parser still rejects "bogus": a new dead letter; "good" is a duplicate
        deadline = time.monotonic() + 30
        while await _raw_end(kafka.bootstrap, deadletter) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.3)
        assert await _raw_end(kafka.bootstrap, deadletter) == 2

        # --- replay ---------------------------------------------------------------
        before = await _raw_end(kafka.bootstrap, raw_events)
        counted = _cli(env, "replay", "--provider", "events", "--dry-run")
        assert counted.returncode == 0, counted.stderr
        assert orjson.loads(counted.stdout)["records"] == before
        assert await _raw_end(kafka.bootstrap, raw_events) == before

        future = _cli(env, "replay", "--all", "--since", "2999-01-01T00:00:00Z")
        assert future.returncode == 0 and orjson.loads(future.stdout)["records"] == 0

        for round_ in (1, 2):
            again = _cli(env, "replay", "--provider", "events")
            assert again.returncode == 0, again.stderr
            assert orjson.loads(again.stdout)["records"] == before * round_
            await offsets.wait_consumed(kafka.bootstrap, group, [raw_events], 60)
        # the ordering agent, then the emitter, have handled all the replay produced
        agents = f"{topic_prefix}{settings.app_id}"
        for stage in ("status.canonical", "status.transitions"):
            await offsets.wait_consumed(kafka.bootstrap, agents, [settings.topic(stage)], 60)
        assert await _raw_end(kafka.bootstrap, status) == emitted, worker.log_tail()
    finally:
        worker.stop()


def test_bad_usage_exits_2(tmp_path):
    env = base_env("127.0.0.1:1", "x.", tmp_path)
    for args in (
        ["replay"],
        ["replay", "--all", "--provider", "twilio"],
        ["replay", "--all", "--since", "yesterday"],
        ["replay", "--all", "--since", "2026-01-02T00:00:00Z", "--until", "2026-01-01T00:00:00Z"],
        ["replay", "--all", "--from-offset", "-1"],
        ["redrive", "--list", "--id", "x"],
    ):
        answer = _cli(env, *args)
        assert answer.returncode == 2, (args, answer.stderr)
        assert answer.stderr.strip(), args
