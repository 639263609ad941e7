"""Session-wide real infrastructure: a KRaft Kafka broker, a redis-server, Prometheus.

Both start lazily (only when a test asks for them), on free 127.0.0.1 ports, and are
stopped at session end, at interpreter exit, and (via PR_SET_PDEATHSIG) even if
pytest itself is killed.  Set MSGSTATUS_TEST_KAFKA_BOOTSTRAP / MSGSTATUS_TEST_REDIS_URL
to use already-running services instead.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest
from aiokafka.admin import AIOKafkaAdminClient

_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:  # makes `support` importable whatever the import mode
    sys.path.insert(0, _TESTS_DIR)

from support.infra import (  # noqa: E402
    ExternalKafka,
    ExternalRedis,
    KafkaBroker,
    PrometheusServer,
    RedisServer,
    external_kafka,
    external_redis,
    start_kafka,
    start_prometheus,
    start_redis,
    unique_prefix,
)

T = TypeVar("T")


@pytest.fixture(scope="session")
def kafka(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> KafkaBroker | ExternalKafka:
    """A ready Kafka broker for the whole session; use ``.bootstrap``."""
    external = external_kafka()
    if external is not None:
        return external
    broker = start_kafka(tmp_path_factory.mktemp("kafka"))
    request.addfinalizer(broker.stop)
    return broker


@pytest.fixture(scope="session")
def redis_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> RedisServer | ExternalRedis:
    """A ready redis-server for the whole session; use ``.url``."""
    external = external_redis()
    if external is not None:
        return external
    server = start_redis(tmp_path_factory.mktemp("redis"))
    request.addfinalizer(server.stop)
    return server


@pytest.fixture(scope="session")
def prometheus(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> PrometheusServer:
    """A ready Prometheus (Debian's package) for the session; point it at what a test
    runs with ``.configure(config)``, ask it with ``.query(expr)``."""
    server = start_prometheus(tmp_path_factory.mktemp("prometheus"))
    request.addfinalizer(server.stop)
    return server


@pytest.fixture
def topic_prefix() -> str:
    """A unique ``t<hex8>.`` prefix for topic names, group ids and keys."""
    return unique_prefix()


def _admin(bootstrap: str, call: Callable[[AIOKafkaAdminClient], Awaitable[T]]) -> T:
    """One admin call, on a loop of its own thread: the test's event loop (set as the main
    thread's current one by pytest-asyncio) stays untouched."""

    async def run() -> T:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            return await call(admin)
        finally:
            await admin.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


@pytest.fixture(autouse=True)
def _drop_new_topics(request: pytest.FixtureRequest) -> Iterator[None]:
    """Delete the topics a test created on the session's own broker once it is done.

    A broker keeps a file open per partition; a whole session's topics (hundreds of
    tests, each with every raw topic, the internal ones and the changelogs) passed a
    20,000 open-files limit and the broker shut itself down mid-session. Only on a
    broker this session started: on a shared one (MSGSTATUS_TEST_KAFKA_BOOTSTRAP) new
    topics may be someone else's.
    """
    if "kafka" not in request.fixturenames:
        yield
        return
    broker = request.getfixturevalue("kafka")
    if isinstance(broker, ExternalKafka):
        yield
        return
    try:
        before = set(_admin(broker.bootstrap, lambda admin: admin.list_topics()))
    except Exception:  # the broker is down (a test stops it): nothing to compare with
        before = None
    yield
    if before is None:
        return
    try:
        created = set(_admin(broker.bootstrap, lambda admin: admin.list_topics())) - before
        if created:
            _admin(broker.bootstrap, lambda admin: admin.delete_topics(sorted(created)))
    except Exception as exc:  # a test that stopped the broker; its topics stay
        print(f"could not delete the topics of {request.node.nodeid}: {exc!r}", file=sys.stderr)
