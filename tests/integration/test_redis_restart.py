"""Redis killed and restarted under a running worker (MSGSTATUS_STATE_BACKEND=redis).

A dedicated redis-server (fsynced append-only file, as docs/operations.md requires) is
SIGKILLed while records flow: the worker stays up, pauses the agents (no record skipped,
nothing published or committed past the one in hand), says so on `/readyz` (503) and in
`msgstatus_dependency_up{dependency="redis"}`, and once Redis is back it catches up: the
stream and the final states are exactly what the model says.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
import uuid

import pytest
from support.infra import start_redis
from support.processes import free_port, start_worker
from support.state_contract import (
    differences,
    model,
    produce,
    published,
    redis_states,
    state_differences,
    wait_processed,
    watching,
    worker_env,
    workload,
)
from support.stream import check_message, collect

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def _until(check, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.3)


async def test_the_worker_pauses_while_redis_is_down_and_catches_up(kafka, topic_prefix, tmp_path):
    server = start_redis(tmp_path / "redis", durable=True)
    work = workload(uuid.uuid4().hex[:6], messages=200)
    third = len(work.records) // 3
    env = worker_env(kafka, server, topic_prefix, tmp_path, "redis")
    port = free_port()
    env["MSGSTATUS_METRICS_PORT"] = str(port)
    env["MSGSTATUS_REDIS_TIMEOUT"] = "1"
    worker = start_worker(env, tmp_path, "--no-read-model")
    status = f"{topic_prefix}message.status"
    try:
        await produce(kafka.bootstrap, topic_prefix, work.records[:third])
        await collect(kafka.bootstrap, status, lambda by: len(by) >= 20, 90)
        await _until(lambda: _get(port, "/readyz")[0] == 200, 30)

        server.kill()  # mid-stream: a SIGKILL, as a crash of Redis would be
        await produce(kafka.bootstrap, topic_prefix, work.records[third:])
        await _until(lambda: _get(port, "/readyz")[0] == 503, 30)
        _, body = _get(port, "/readyz")
        assert json.loads(body)["dependencies"]["redis"] is False
        metrics = _get(port, "/metrics")[1]
        assert _metric(metrics, "msgstatus_dependency_up", dependency="redis") == 0
        await asyncio.sleep(3)
        metrics = _get(port, "/metrics")[1]
        assert _metric(metrics, "msgstatus_state_retries_total", reason="unavailable") > 0
        assert worker.alive(), worker.log_tail()
        paused = await published(kafka.bootstrap, status)

        server.start()  # the same data dir: the append-only file brings the state back
        server.wait_ready(30)
        await _until(lambda: _get(port, "/readyz")[0] == 200, 30)
        await wait_processed(kafka.bootstrap, topic_prefix, 180, watching([worker]))
        await collect(
            kafka.bootstrap,
            status,
            lambda by: all(
                any(e["data"]["status"] == "delivery_unknown" for e in by.get(f"crm:{c}", []))
                for c in work.controls
            ),
            60,
        )
        got = await published(kafka.bootstrap, status)
        worker.stop()
        assert sum(map(len, got.values())) > sum(map(len, paused.values()))  # it caught up
        want = model(work)
        problems = differences(want, got)
        for key, events in got.items():
            problems += check_message(key, events, allow_repeats=True)
        assert not problems, f"{len(problems)} problems: {problems[:8]}\n{worker.log_tail()}"
        problems = state_differences(want, await redis_states(server.url, topic_prefix))
        assert not problems, f"{len(problems)} state differences: {problems[:8]}"
        log = worker.log_path.read_text(errors="replace")
        assert "Redis state unavailable" in log and "Redis state available again" in log
    finally:
        worker.stop()
        server.stop()
