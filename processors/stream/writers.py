"""The worker's partition writers: the shared batching writer (processors/kafka/writer.py)
with what the worker adds to it.

- Fencing: units carry the ownership token of the input record that made them; a unit
  whose partition was revoked meanwhile is dropped instead of handed over (fence.py),
  and a batch the producer failed with `Fenced` (held past the group lease, then
  revoked) is a write dropped on purpose, not an error. Both are counted in
  `msgstatus_fenced_writes_total`.
- Any other failed batch or hand-over loses output: the worker must stop (the input
  offset is not committed; the restarted worker processes that input again).
- Fault points `changelog-handed` / `output-handed` (faults.py) and the send latency
  `msgstatus_kafka_send_seconds{kind}`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from processors.kafka import writer
from processors.stream import faults, metrics
from processors.stream.fence import Fenced, Ownership

log = logging.getLogger(__name__)


class WorkerWatch(writer.Watch):
    def handed(self, batch: writer.Batch) -> None:
        point = "changelog-handed" if batch.kind == "changelog" else "output-handed"
        faults.point(point, batch.label)

    def acked(self, batch: writer.Batch, seconds: float) -> None:
        metrics.SEND_SECONDS.labels(batch.kind).observe(seconds)

    def dropped(self, records: int) -> None:
        metrics.FENCED_WRITES.inc(records)

    def benign(self, exc: BaseException, batch: writer.Batch) -> bool:
        if isinstance(exc, Fenced):
            metrics.FENCED_WRITES.inc(batch.count)
            return True
        return False


class PartitionWriters(writer.PartitionWriters):
    def __init__(
        self,
        producer: Callable[[], Any],
        on_error: Callable[[BaseException], None],
        ownership: Ownership | None = None,
        limit: int = 200_000,
    ) -> None:
        def stop(exc: BaseException) -> None:
            log.critical("a Kafka write failed, stopping the worker: %r", exc)
            on_error(exc)

        super().__init__(producer, stop, ownership or Ownership(), limit, WorkerWatch())
