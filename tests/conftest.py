"""Session-wide real infrastructure: a KRaft Kafka broker, a redis-server, Prometheus.

Both start lazily (only when a test asks for them), on free 127.0.0.1 ports, and are
stopped at session end, at interpreter exit, and (via PR_SET_PDEATHSIG) even if
pytest itself is killed.  Set MSGSTATUS_TEST_KAFKA_BOOTSTRAP / MSGSTATUS_TEST_REDIS_URL
to use already-running services instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

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
