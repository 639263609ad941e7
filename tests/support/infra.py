"""Glue between the test suite and ``deploy/local/infra.py``.

The infrastructure script is stdlib-only and lives outside the package (it must run
before the virtual environment exists), so it is imported here by path.
"""

from __future__ import annotations

import atexit
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_LOCAL = REPO_ROOT / "deploy" / "local"
INFRA_SCRIPT = DEPLOY_LOCAL / "infra.py"

if str(DEPLOY_LOCAL) not in sys.path:
    sys.path.insert(0, str(DEPLOY_LOCAL))

import infra as local_infra  # noqa: E402  (needs the sys.path entry above)

KafkaBroker = local_infra.KafkaBroker
RedisServer = local_infra.RedisServer
PrometheusServer = local_infra.PrometheusServer

ENV_TEST_KAFKA_BOOTSTRAP = "MSGSTATUS_TEST_KAFKA_BOOTSTRAP"
ENV_TEST_REDIS_URL = "MSGSTATUS_TEST_REDIS_URL"

# Generous: the first start on a cold machine also runs Maven and formats storage.
KAFKA_READY_TIMEOUT = 120.0


@dataclass(frozen=True)
class ExternalKafka:
    """A broker someone else runs (``MSGSTATUS_TEST_KAFKA_BOOTSTRAP``); never stopped."""

    bootstrap: str


@dataclass(frozen=True)
class ExternalRedis:
    """A Redis someone else runs (``MSGSTATUS_TEST_REDIS_URL``); never stopped."""

    url: str


def unique_prefix() -> str:
    """Topic/key prefix unique per test so tests can share one broker and run in parallel."""
    return f"t{uuid.uuid4().hex[:8]}."


def start_kafka(data_dir: Path, heap: str = "384m") -> local_infra.KafkaBroker:
    """Start a broker on fresh free ports that cannot outlive this test process.

    ``die_with_parent`` covers a SIGKILLed pytest; ``atexit`` covers an interpreter
    exiting without running fixture finalizers.  Stopped again if it never gets ready.
    """
    port, controller_port = local_infra.free_ports(2)
    broker = KafkaBroker(port, controller_port, data_dir, heap, die_with_parent=True)
    atexit.register(broker.stop)
    broker.start()
    try:
        broker.wait_ready(KAFKA_READY_TIMEOUT)
    except BaseException:
        broker.stop()
        raise
    return broker


def start_redis(data_dir: Path, *, durable: bool = False) -> local_infra.RedisServer:
    """Start redis-server on a free port, tied to this process like :func:`start_kafka`
    (``durable``: with an fsynced append-only file, so it survives a kill and restart)."""
    server = RedisServer(local_infra.free_port(), data_dir, die_with_parent=True, durable=durable)
    atexit.register(server.stop)
    server.start()
    try:
        server.wait_ready(30)
    except BaseException:
        server.stop()
        raise
    return server


def start_prometheus(data_dir: Path) -> local_infra.PrometheusServer:
    """Start Prometheus on a free port with an empty config, tied to this process like
    :func:`start_kafka`; tests point it at what they run with ``configure()``."""
    server = PrometheusServer(local_infra.free_port(), data_dir, die_with_parent=True)
    atexit.register(server.stop)
    server.start()
    try:
        server.wait_ready(60)
    except BaseException:
        server.stop()
        raise
    return server


def external_kafka() -> ExternalKafka | None:
    """The externally provided broker, if the environment names one."""
    bootstrap = os.environ.get(ENV_TEST_KAFKA_BOOTSTRAP)
    return ExternalKafka(bootstrap) if bootstrap else None


def external_redis() -> ExternalRedis | None:
    """The externally provided Redis, if the environment names one."""
    url = os.environ.get(ENV_TEST_REDIS_URL)
    return ExternalRedis(url) if url else None
