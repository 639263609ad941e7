"""How the worker's Faust app is wired where Faust's defaults cost throughput."""

from __future__ import annotations

import pytest

from processors.config import ConfigError, Settings
from processors.stream import app as worker_app


async def test_faust_consumer_fetches_do_not_wait_seconds_at_the_broker(tmp_path):
    app = worker_app.build(Settings(data_dir=str(tmp_path), topic_prefix="tunit."))
    consumer = app.consumer._thread._create_worker_consumer(app.transport)
    assert consumer._fetch_max_wait_ms == Settings().fetch_max_wait_ms <= 50


async def test_the_fetch_wait_is_configurable(tmp_path):
    settings = Settings.from_env(
        {"MSGSTATUS_DATA_DIR": str(tmp_path), "MSGSTATUS_FETCH_MAX_WAIT_MS": "250"}
    )
    app = worker_app.build(settings)
    assert app.consumer._thread._create_worker_consumer(app.transport)._fetch_max_wait_ms == 250
    for bad in ("-1", "20000", "soon"):
        with pytest.raises(ConfigError, match="MSGSTATUS_FETCH_MAX_WAIT_MS"):
            Settings.from_env({"MSGSTATUS_FETCH_MAX_WAIT_MS": bad})


async def test_faust_producer_flush_first_hands_over_queued_partition_writes(tmp_path):
    """Faust's commit awaits its producer's flush: records still in a partition writer
    must reach the producer before it."""
    app = worker_app.build(Settings(data_dir=str(tmp_path), topic_prefix="tunit."))
    order: list[str] = []

    class Writers:
        async def drain(self) -> None:
            order.append("writers")

    producer = app.producer

    async def flush() -> None:
        order.append("producer")

    producer.flush = flush
    worker_app.flush_writers_first(app, Writers())  # type: ignore[arg-type]
    await app.producer.flush()
    assert order == ["writers", "producer"]
