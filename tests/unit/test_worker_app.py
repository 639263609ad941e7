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


async def test_faust_neither_tracks_nor_commits_the_agents_inputs(tmp_path):
    """Progress commits them, after their outputs are acknowledged (progress.py)."""
    app = worker_app.build(Settings(data_dir=str(tmp_path), topic_prefix="tunit."))
    for name in ("status.canonical", "status.transitions", "status.conversations"):
        assert not app.topics.acks_enabled_for(f"tunit.{name}")


async def test_rebalance_callbacks_are_the_workers_own(tmp_path):
    """Faust captures the callbacks when it builds its consumer: ours must be in place."""
    app = worker_app.build(Settings(data_dir=str(tmp_path), topic_prefix="tunit."))
    consumer = app.consumer
    assert consumer._on_partitions_revoked.__name__ == "on_partitions_revoked"
    assert consumer._on_partitions_revoked is app._on_partitions_revoked
    assert consumer._on_partitions_assigned is app._on_partitions_assigned


async def test_the_read_model_projector_runs_only_with_a_read_model(tmp_path):
    """`msgstatus worker --no-read-model` starts no projector (and no consumer group)."""
    from processors.store.readmodel import ReadModel

    def tasks(app) -> set[str]:  # type: ignore[no-untyped-def]
        return {task.__name__ for task in app._app_tasks}

    settings = Settings(data_dir=str(tmp_path), topic_prefix="tunit.")
    assert "read_model_projector" not in tasks(worker_app.build(settings))
    model = ReadModel("redis://127.0.0.1:1/0")  # never connects here
    with_model = worker_app.build(
        Settings(data_dir=str(tmp_path / "b"), topic_prefix="tunit."), model
    )
    assert "read_model_projector" in tasks(with_model)
    await model.close()
