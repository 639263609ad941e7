"""A worker killed with SIGKILL mid-stream: state returns from the changelog, the
output never regresses, and anything re-emitted carries the id it had before."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest
from support.processes import SECRETS, base_env, start_gateway, start_worker
from support.stream import check_message, collect, last_status

from bench import traffic

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.soak  # make test: test_random_sigkill.py
async def test_sigkill_and_restart_keeps_output_consistent(kafka, topic_prefix, tmp_path):
    env = base_env(
        kafka.bootstrap,
        topic_prefix,
        tmp_path / "data1",
        MSGSTATUS_REDIS_URL="redis://127.0.0.1:1/0",
    )
    gateway, url = start_gateway(env, tmp_path)
    worker = start_worker(env, tmp_path, "--no-read-model")
    try:
        rng = random.Random(4242)
        messages = traffic.make_messages(600, rng, uuid.uuid4().hex[:6])
        requests = traffic.mess_up(traffic.build_requests(messages, url, SECRETS, rng), rng)
        third = len(requests) // 3
        expected = {m.key: m.expected for m in messages}
        status_topic = topic_prefix + "message.status"

        answers = await traffic.post_all(url, requests[:third])
        # Let the worker get some of it done, then crash it in the middle of the stream.
        await collect(kafka.bootstrap, status_topic, lambda by_key: len(by_key) > 50, timeout=60)
        posting = asyncio.create_task(traffic.post_all(url, requests[third : 2 * third]))
        await asyncio.sleep(0.5)
        worker.kill()
        await posting
        # Same data dir: local RocksDB may be ahead of the committed offsets.
        worker = start_worker(env, tmp_path, "--no-read-model")
        await collect(kafka.bootstrap, status_topic, lambda by_key: len(by_key) > 300, timeout=90)
        posting = asyncio.create_task(traffic.post_all(url, requests[2 * third :]))
        await asyncio.sleep(0.3)
        worker.kill()
        await posting
        # A fresh data dir: state can only come back from the changelog topics.
        worker = start_worker(env, tmp_path, "--no-read-model", data_dir=tmp_path / "data2")

        def done(by_key):
            return all(last_status(by_key.get(k, [])) == want for k, want in expected.items())

        by_key = await collect(kafka.bootstrap, status_topic, done, timeout=150)
        del answers
        wrong = {
            k: (last_status(by_key.get(k, [])), w)
            for k, w in expected.items()
            if last_status(by_key.get(k, [])) != w
        }
        assert not wrong, f"{len(wrong)} wrong, e.g. {list(wrong.items())[:5]}\n{worker.log_tail()}"
        problems = [
            p
            for key, events in by_key.items()
            for p in check_message(key, events, allow_repeats=True)
        ]
        assert not problems, problems[:20]
    finally:
        gateway.stop()
        worker.stop()
