"""Consumer lag arithmetic and the groups a worker reports (processors/ops/lag.py)."""

from __future__ import annotations

from aiokafka import TopicPartition

from processors import providers
from processors.config import Settings
from processors.ops import lag

A0, A1, A2 = (TopicPartition("a", n) for n in range(3))


def test_lag_is_end_minus_committed_else_from_the_log_start() -> None:
    ends = {A0: 10, A1: 7, A2: 5}
    starts = {A0: 0, A1: 3, A2: 0}
    committed = {A0: 4, A1: -1}  # A1: no offset stored (-1); A2: never committed
    assert lag.lag(ends, starts, committed) == {A0: 6, A1: 4, A2: 5}


def test_lag_never_negative() -> None:
    # a commit can land after the end offsets were read
    assert lag.lag({A0: 10}, {A0: 0}, {A0: 12}) == {A0: 0}


def test_worker_groups_are_the_faust_app_the_normalize_stage_and_the_projector() -> None:
    settings = Settings(topic_prefix="p.", app_id="msgstatus")
    app, normalize, projector = lag.worker_groups(settings)
    assert projector.group_id == "p.msgstatus-readmodel"
    assert projector.topics == ("p.message.status", "p.status.transitions")
    assert app.group_id == "p.msgstatus"
    assert app.topics == ("p.status.canonical", "p.status.transitions", "p.status.conversations")
    assert normalize.group_id == "p.msgstatus-normalize"
    assert set(normalize.topics) == {f"p.raw.{name}" for name in providers.REGISTRY}
