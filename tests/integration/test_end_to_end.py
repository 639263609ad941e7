"""The whole system on real parts: gateway and worker processes, a real broker.

Hundreds of messages across providers, every status posted signed, shuffled, duplicated
and late; the output must be ordered, gap-free, never regressing and complete.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter

import pytest
from support.processes import SECRETS, base_env, start_gateway, start_worker
from support.stream import check_message, collect, last_status

from bench import traffic

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_messages_end_ordered_and_complete(kafka, redis_server, topic_prefix, tmp_path):
    env = base_env(
        kafka.bootstrap, topic_prefix, tmp_path / "data", MSGSTATUS_REDIS_URL=redis_server.url
    )
    gateway, url = start_gateway(env, tmp_path)
    worker = start_worker(env, tmp_path)
    try:
        rng = random.Random(20261123)
        messages = traffic.make_messages(520, rng, uuid.uuid4().hex[:6])
        requests = traffic.mess_up(traffic.build_requests(messages, url, SECRETS, rng), rng)
        answers = await traffic.post_all(url, requests)
        assert answers == {200: len(requests)}, answers
        expected = {m.key: m.expected for m in messages}

        def done(by_key):
            return all(last_status(by_key.get(k, [])) == want for k, want in expected.items())

        by_key = await collect(kafka.bootstrap, topic_prefix + "message.status", done, timeout=120)
        wrong = {
            k: (last_status(by_key.get(k, [])), want)
            for k, want in expected.items()
            if last_status(by_key.get(k, [])) != want
        }
        sample = list(wrong.items())[:5]
        assert not wrong, f"{len(wrong)} ended wrong, e.g. {sample}\n{worker.log_tail()}"
        problems = [p for key, events in by_key.items() for p in check_message(key, events)]
        assert not problems, problems[:20]
        assert set(by_key) == set(expected)
        providers = Counter(k.split(":")[0] for k in by_key)
        assert set(providers) == {"twilio", "meta", "ryze", "crm"}
        # jumps really happened and were marked as implied
        assert any(e["data"]["implied"] for events in by_key.values() for e in events)
    finally:
        gateway.stop()
        worker.stop()
    assert not worker.alive() and not gateway.alive()
