"""`msgstatus worker` comes back by itself: its real process dies (SIGKILL, as a crash or an
exit 70 after a failed Kafka write would end it) and the supervisor starts a new one that
finishes the work; SIGTERM still stops everything cleanly."""

from __future__ import annotations

import os
import random
import signal
import time
import uuid
from pathlib import Path

import pytest
from support.processes import SECRETS, base_env, start_gateway, start_worker
from support.stream import check_message, collect, last_status

from bench import traffic

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def wait_child(pid: int, other_than: int | None = None, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [c for c in children(pid) if c != other_than]
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError("the supervisor has no worker process")


async def test_a_killed_worker_is_restarted_by_its_supervisor(kafka, topic_prefix, tmp_path):
    env = base_env(
        kafka.bootstrap,
        topic_prefix,
        tmp_path / "data",
        MSGSTATUS_REDIS_URL="redis://127.0.0.1:1/0",
    )
    gateway, url = start_gateway(env, tmp_path)
    worker = start_worker(env, tmp_path, "--no-read-model")
    assert worker.proc is not None
    try:
        rng = random.Random(77)
        messages = traffic.make_messages(300, rng, uuid.uuid4().hex[:6])
        requests = traffic.mess_up(traffic.build_requests(messages, url, SECRETS, rng), rng)
        half = len(requests) // 2
        expected = {m.key: m.expected for m in messages}
        status_topic = topic_prefix + "message.status"
        assert await traffic.post_all(url, requests[:half]) == {200: half}
        await collect(kafka.bootstrap, status_topic, lambda b: len(b) > 50, timeout=60)
        first = wait_child(worker.proc.pid)
        os.kill(first, signal.SIGKILL)  # the real worker dies; the supervisor stays
        assert await traffic.post_all(url, requests[half:]) == {200: len(requests) - half}
        second = wait_child(worker.proc.pid, other_than=first)
        assert second != first and worker.alive()

        def done(by_key: dict) -> bool:
            return all(last_status(by_key.get(k, [])) == v for k, v in expected.items())

        by_key = await collect(kafka.bootstrap, status_topic, done, timeout=120)
        assert done(by_key), worker.log_tail()
        problems = [p for k, evs in by_key.items() for p in check_message(k, evs, True)]
        assert not problems, problems[:10]
        log = worker.log_path.read_text(errors="replace")
        assert "msgstatus worker ended: killed by SIGKILL; restarting it in" in log
    finally:
        gateway.stop()
        worker.stop()
    assert worker.proc.returncode == 0, worker.log_tail()
    assert not children(worker.proc.pid)
