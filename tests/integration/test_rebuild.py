"""`msgstatus rebuild`, `redrive` and `replay` after a mapping fix, end to end on the real
broker: real worker processes, the real commands, the shared topics.

The "bug" is a Twilio mapping that a live worker runs with and the fixed code does not:
a `sitecustomize` module on that worker's PYTHONPATH maps `undelivered` onto
`delivered` and forgets `read` (so `read` callbacks become dead letters). Every other
process runs the package as it is, i.e. the fixed mapping.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from support.processes import ROOT, base_env, start_worker
from support.stream import VALIDATOR, collect

from processors.config import single_broker
from processors.kafka import offsets, raw
from processors.kafka.topics import (
    TABLES,
    all_topics,
    changelog_topic,
    ensure_topics,
    partition_for,
)
from processors.ops import journal
from processors.ops.corrections import effective, published
from processors.providers import REGISTRY, twilio
from processors.providers.base import WebhookRequest
from processors.store.readmodel import ReadModel

pytestmark = pytest.mark.integration

BUG = """\
from processors.providers import twilio

twilio.STATUS_MAP["undelivered"] = "delivered"  # the mapping bug the fix removes
del twilio.STATUS_MAP["read"]  # the parser bug: `read` was unknown (dead letters)
"""
OK = [f"SMok{i}" for i in range(5)]
BAD = [f"SMbad{i}" for i in range(3)]
READ = "SMread0"


def _cli(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "processors.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _callback(sid: str, status: str, code: str | None = None) -> dict[str, str]:
    fields = {"MessageSid": sid, "MessageStatus": status, "AccountSid": "AC1", "To": "+15550001"}
    if code:
        fields["ErrorCode"] = code
    return fields


async def _send(bootstrap: str, topic: str, callbacks: list[dict[str, str]]) -> None:
    """Raw Twilio callbacks as the gateway writes them, all to partition 0: live worker
    and shadow then read them in the same order (the test pins sequence numbers)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for fields in callbacks:
            request = WebhookRequest(
                "twilio",
                "POST",
                "http://127.0.0.1/webhooks/twilio",
                {"content-type": "application/x-www-form-urlencoded"},
                urlencode(fields).encode(),
                time.time(),
            )
            record = raw.encode(topic, request, twilio.SIGNATURE_HEADERS)
            await producer.send_and_wait(
                topic, record.value, key=record.key, headers=list(record.headers), partition=0
            )
    finally:
        await producer.stop()


async def _total(bootstrap: str, topics: list[str]) -> dict[str, int]:
    ends = await offsets.ends(bootstrap, topics)
    out: dict[str, int] = {t: 0 for t in topics}
    for tp, end in ends.items():
        out[tp.topic] += end
    return out


async def _records(bootstrap: str, topic: str, after: dict[TopicPartition, int]) -> list:
    """Records appended to `topic` after the offsets `after` (up to the end now)."""
    ends = await offsets.ends(bootstrap, [topic])
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    out = []
    try:
        todo = {tp: end for tp, end in ends.items() if end > after.get(tp, 0)}
        if not todo:
            return out
        consumer.assign(list(todo))
        for tp in todo:
            consumer.seek(tp, after.get(tp, 0))
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=1000)
            for tp, records in batch.items():
                out += [r for r in records if r.offset < todo[tp]]
            for tp in list(todo):
                if await consumer.position(tp) >= todo[tp]:
                    del todo[tp]
    finally:
        await consumer.stop()
    return out


def _statuses(events: list[dict[str, Any]]) -> list[tuple[int, str]]:
    return sorted((e["data"]["sequence"], e["data"]["status"]) for e in events)


async def _drained(bootstrap: str, settings: Any, timeout: float = 90) -> None:
    group = f"{settings.topic_prefix}{settings.app_id}"
    raw_topics = [settings.topic(f"raw.{name}") for name in REGISTRY]
    await offsets.wait_consumed(bootstrap, f"{group}-normalize", raw_topics, timeout)
    for name in ("status.conversations", "status.canonical", "status.transitions"):
        await offsets.wait_consumed(bootstrap, group, [settings.topic(name)], timeout)


class Rebuild:
    """`msgstatus rebuild` in the background, its stderr in a file to watch."""

    def __init__(self, env: dict[str, str], tmp: Path, *args: str) -> None:
        self.err = tmp / f"rebuild-{time.monotonic_ns()}.err"
        self.out = tmp / f"rebuild-{time.monotonic_ns()}.out"
        with self.err.open("wb") as err, self.out.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "processors.cli", "rebuild", *args],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=err,
            )

    async def wait_for(self, text: str, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.err.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"rebuild never said {text!r}:\n{self.stderr()}")
            await asyncio.sleep(0.3)

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")[-4000:]

    def result(self, timeout: float = 240) -> dict[str, Any]:
        code = self.proc.wait(timeout)
        assert code == 0, self.stderr()
        return orjson.loads(self.out.read_text())


async def test_rebuild_after_a_mapping_fix(kafka, redis_server, topic_prefix, tmp_path):
    settings = single_broker(
        kafka_bootstrap=kafka.bootstrap, topic_prefix=topic_prefix, partitions=4
    )
    await ensure_topics(settings, all_topics(settings, REGISTRY))
    raw_twilio = settings.topic("raw.twilio")
    status, deadletter = settings.topic("message.status"), settings.topic("status.deadletter")
    bug = tmp_path / "bug"
    bug.mkdir()
    (bug / "sitecustomize.py").write_text(BUG)
    env = base_env(
        kafka.bootstrap,
        topic_prefix,
        tmp_path / "data",
        MSGSTATUS_REDIS_URL=redis_server.url,
        MSGSTATUS_DELIVERY_UNKNOWN_AFTER="86400",
    )
    read_model = ReadModel(redis_server.url, topic_prefix)

    # --- the live worker runs with the bug ----------------------------------------------
    buggy = start_worker({**env, "PYTHONPATH": str(bug)}, tmp_path)
    try:
        await _send(kafka.bootstrap, raw_twilio, [_callback(s, "sent") for s in OK + BAD + [READ]])
        await collect(kafka.bootstrap, status, lambda got: len(got) == 9, timeout=120)
        await _send(
            kafka.bootstrap,
            raw_twilio,
            [_callback(s, "delivered") for s in OK]
            + [_callback(s, "undelivered", "30003") for s in BAD]
            + [_callback(READ, "read")],
        )
        got = await collect(
            kafka.bootstrap,
            status,
            lambda got: sum(len(v) for v in got.values()) == 17,
            timeout=120,
        )
        assert all(_statuses(got[f"twilio:{s}"]) == [(1, "sent"), (2, "delivered")] for s in BAD)
        assert _statuses(got[f"twilio:{READ}"]) == [(1, "sent")]
        await _drained(kafka.bootstrap, settings)
    finally:
        buggy.stop()

    # --- the fix is deployed; its dead letter is redriven ------------------------------
    worker = start_worker(env, tmp_path)
    try:
        listed = _cli(env, "redrive", "--list")
        assert listed.returncode == 0, listed.stderr
        letters = [orjson.loads(line) for line in listed.stdout.splitlines()]
        assert len(letters) == 1 and "'read'" in letters[0]["reason"], letters
        redriven = _cli(env, "redrive")
        assert redriven.returncode == 0, redriven.stderr
        assert orjson.loads(redriven.stdout)["records"] == 1
        assert "redrive [" in redriven.stderr  # the progress line
        got = await collect(
            kafka.bootstrap, status, lambda got: len(got[f"twilio:{READ}"]) == 2, timeout=90
        )
        assert _statuses(got[f"twilio:{READ}"]) == [(1, "sent"), (2, "read")]
        assert got[f"twilio:{READ}"][1]["data"]["implied"] == ["delivered"]
        await _drained(kafka.bootstrap, settings)

        # --- dry run, workers running: what would change, nothing written ---------------
        watched = [status, deadletter, raw_twilio]
        tables = [changelog_topic(settings, t) for t in TABLES]
        before = await _total(kafka.bootstrap, watched)
        table_ends = {t: await offsets.ends(kafka.bootstrap, [t]) for t in tables}
        dry = _cli(env, "rebuild", "--dry-run", "--examples", "2")
        assert dry.returncode == 0, dry.stderr
        preview = orjson.loads(dry.stdout)
        assert preview["dry_run"] is True and preview["providers"] == "all"
        assert preview["messages"]["changed"] == len(BAD), preview
        assert preview["messages"]["unchanged"] == len(OK) + 1, preview
        assert preview["changed"] == {"twilio": {"delivered -> undelivered": len(BAD)}}
        assert preview["corrections"] == {"events": 3, "by_status": {"undelivered": 3}}
        assert len(preview["examples"]) == 2
        example = preview["examples"][0]
        assert example["live"] == ["sent", "delivered"]
        assert example["rebuilt"] == ["sent", "undelivered"]
        assert example["corrections"] == [[3, "undelivered"]]
        assert "comparing [" in dry.stderr, dry.stderr
        assert await _total(kafka.bootstrap, watched) == before
        for topic, ends in table_ends.items():  # live markers only, no message state
            written = await _records(kafka.bootstrap, topic, ends)
            assert all(r.key.startswith(b"~") for r in written), topic
        names = await _topics(kafka.bootstrap)
        assert not [n for n in names if n.startswith(f"{topic_prefix}rebuild-")]
        assert journal.topic(settings) not in names
        # --provider narrows what is compared
        only = _cli(env, "rebuild", "--dry-run", "--provider", "vonage")
        assert only.returncode == 0, only.stderr
        assert orjson.loads(only.stdout)["messages"]["compared"] == 0

        # --- the rebuild: builds while the worker runs, switches once it is stopped -----
        # It dies after writing the tables of a partition holding a corrected message,
        # before publishing its corrections: the next `msgstatus rebuild` finishes it.
        status_ends = await offsets.ends(kafka.bootstrap, [status])
        crash_at = partition_for(f"twilio:{BAD[0]}", settings.partitions) + 1
        job = Rebuild(
            {**env, "MSGSTATUS_CRASH_AT": f"rebuild-applying:{crash_at}"}, tmp_path, "--all"
        )
        await job.wait_for("Stop every `msgstatus worker`")
        worker.stop()
    finally:
        worker.stop()
    assert job.proc.wait(240) == 99, job.stderr()
    assert (await journal.read(settings))[1]["phase"] == journal.SWITCHING
    refused = _cli(env, "worker", "--no-read-model", timeout=60)
    assert refused.returncode == 1 and "rebuild 1 is switching over" in refused.stderr
    summary = Rebuild(env, tmp_path).result()
    assert summary["rebuild"] == "1" and summary["resumed"] is True, summary
    assert summary["dry_run"] is False
    corrections = [
        orjson.loads(r.value) for r in await _records(kafka.bootstrap, status, status_ends)
    ]
    assert sorted(e["data"]["message_key"] for e in corrections) == sorted(
        f"twilio:{s}" for s in BAD
    )
    for event in corrections:
        data = event["data"]
        assert not list(VALIDATOR.iter_errors(event))
        assert (data["sequence"], data["status"], data["previous_status"]) == (
            3,
            "undelivered",
            "delivered",
        )
        assert data["correction"] == {"rebuild": "1", "replaces_sequence": 2}
        assert data["error"]["category"] == "unreachable"
        doc = await read_model.get(data["message_key"])
        assert (doc["status"], doc["sequence"]) == ("undelivered", 3)
    phases = await journal.read(settings)
    assert phases[1]["phase"] == journal.DONE
    assert not [
        n for n in await _topics(kafka.bootstrap) if n.startswith(f"{topic_prefix}rebuild-")
    ]

    # --- the workers continue from the corrected state ---------------------------------
    worker = start_worker(env, tmp_path)
    try:
        await _send(
            kafka.bootstrap, raw_twilio, [_callback(BAD[0], "read"), _callback(OK[0], "read")]
        )
        got = await collect(
            kafka.bootstrap,
            status,
            lambda got: len(got[f"twilio:{BAD[0]}"]) == 4 and len(got[f"twilio:{OK[0]}"]) == 3,
            timeout=120,
        )
        recovered = max(got[f"twilio:{BAD[0]}"], key=lambda e: e["data"]["sequence"])["data"]
        assert (recovered["sequence"], recovered["status"], recovered["previous_status"]) == (
            4,
            "read",
            "undelivered",
        )
        assert "correction" not in recovered
        assert _statuses(got[f"twilio:{OK[0]}"])[-1] == (3, "read")
        await _drained(kafka.bootstrap, settings)

        # --- replaying twice emits nothing new -----------------------------------------
        emitted = await _total(kafka.bootstrap, [status])
        for _ in (1, 2):
            again = _cli(env, "replay", "--all")
            assert again.returncode == 0, again.stderr
            assert "replay [" in again.stderr
            await _drained(kafka.bootstrap, settings)
        assert await _total(kafka.bootstrap, [status]) == emitted, worker.log_tail()

        # --- a rebuild right after a rebuild (no mapping change) emits nothing ---------
        job = Rebuild(env, tmp_path)
        await job.wait_for("Stop every `msgstatus worker`")
        worker.stop()
    finally:
        worker.stop()
    summary = job.result()
    assert summary["rebuild"] == "2"
    assert summary["messages"]["changed"] == summary["messages"]["new"] == 0, summary
    assert summary["published"] == 0
    assert await _total(kafka.bootstrap, [status]) == emitted
    final = await collect(kafka.bootstrap, status, lambda got: True, timeout=10)
    told = {key: effective(published(events).entries())[-1].status for key, events in final.items()}
    assert told == {
        **{f"twilio:{s}": "delivered" for s in OK},
        **{f"twilio:{s}": "undelivered" for s in BAD},
        f"twilio:{OK[0]}": "read",
        f"twilio:{BAD[0]}": "read",
        f"twilio:{READ}": "read",
    }
    await read_model.close()


async def _topics(bootstrap: str) -> list[str]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        return sorted(await consumer.topics())
    finally:
        await consumer.stop()


async def test_worker_refuses_to_start_during_a_switch_over(kafka, topic_prefix, tmp_path):
    settings = single_broker(
        kafka_bootstrap=kafka.bootstrap, topic_prefix=topic_prefix, partitions=4
    )
    await ensure_topics(settings, all_topics(settings, REGISTRY))
    await journal.write(settings, 4, journal.SWITCHING, providers="all")
    env = base_env(kafka.bootstrap, topic_prefix, tmp_path / "data")
    refused = _cli(env, "worker", "--no-read-model", timeout=60)
    assert refused.returncode == 1
    assert "rebuild 4 is switching over" in refused.stderr
    # a dry run cannot start either: the switch must be finished first
    dry = _cli(env, "rebuild", "--dry-run", timeout=60)
    assert dry.returncode == 1 and "rebuild 4 is switching over" in dry.stderr


def test_rebuild_bad_usage_exits_2(tmp_path):
    env = base_env("127.0.0.1:1", "x.", tmp_path)
    for args in (
        ["rebuild", "--all", "--provider", "twilio"],
        ["rebuild", "--provider", "Not A Name"],
        ["rebuild", "--examples", "-1"],
        ["rebuild", "--stop-timeout", "soon"],
    ):
        answer = _cli(env, *args, timeout=60)
        assert answer.returncode == 2, (args, answer.stderr)
        assert answer.stderr.strip(), args
