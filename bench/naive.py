"""The naive Faust baselines: what a first Faust app does with these records.

Run as `python -m bench.naive <bootstrap> <prefix> <datadir> [forward|job]`.

- `forward`: one agent over the raw topics, a RocksDB table updated per record and an
  awaited `topic.send` per record, nothing else: the framework's per-event cost alone.
- `job`: the same agent doing msgstatus's work the way a first app would write it:
  rebuild the request, parse it with the same provider parser, and for each status
  read-modify-write the message's state in a RocksDB table (Faust's default JSON codec)
  under the same transition rules, awaiting `topic.send` of the same CloudEvent for each
  applied transition. It is generous to the baseline: one process, so no repartition
  by message (a multi-worker deployment needs one), and no deadlines or dead letters.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import faust

from processors import providers
from processors.config import single_broker
from processors.kafka import client as kafka_client
from processors.kafka import raw
from processors.kafka.topics import raw_topic
from processors.providers import REGISTRY
from processors.stream import cloudevents
from processors.transitions import APPLIED, DUPLICATE, MessageState, apply


def _job(app: faust.App, source: Any, sink: Any) -> None:
    table = app.Table("naive_job", default=dict, partitions=4)

    @app.agent(source)
    async def process(stream):  # type: ignore[no-untyped-def]
        async for event in stream.events():
            request = raw.decode(event.value, event.headers)
            provider = providers.get(request.provider)
            if provider is None:
                continue
            for status in provider.parse(request).events:
                key = status.message_key
                state = MessageState.from_dict(table[key])
                new, outcome = apply(state, status)
                if outcome.kind == DUPLICATE:
                    continue
                table[key] = new.to_dict()
                if outcome.kind != APPLIED:
                    continue
                meta = {
                    "provider": status.provider,
                    "provider_message_id": status.provider_message_id,
                    "channel": status.channel,
                    "account": status.account,
                }
                ce = cloudevents.build(
                    meta=meta,
                    status=status.status,
                    previous_status=outcome.previous_status,
                    implied=list(outcome.implied),
                    sequence=outcome.index or 0,
                    provider_status=status.provider_status,
                    error=status.error.to_dict() if status.error else None,
                    occurred_at=status.occurred_at,
                    observed_at=status.observed_at,
                    emitted_at=time.time(),
                )
                await sink.send(key=key, value=ce)


def _forward(app: faust.App, source: Any, sink: Any) -> None:
    table = app.Table("naive", default=int, partitions=4)

    @app.agent(source)
    async def process(stream):  # type: ignore[no-untyped-def]
        async for key, value in stream.items():
            table[key] += 1
            await sink.send(key=key, value=value)


def main() -> None:
    bootstrap, prefix, datadir = sys.argv[1:4]
    mode = sys.argv[4] if len(sys.argv) > 4 else "forward"
    app = faust.App(
        f"{prefix}naive-{mode}",
        **kafka_client.faust_kwargs(single_broker(kafka_bootstrap=bootstrap)),
        store="rocksdb://",
        datadir=datadir,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
    )
    names = [raw_topic(single_broker(topic_prefix=prefix), name) for name in REGISTRY]
    source = app.topic(*names, value_type=bytes, value_serializer="raw")
    if mode == "job":
        _job(app, source, app.topic(f"{prefix}naive-job.out"))
    else:
        _forward(
            app, source, app.topic(f"{prefix}naive.out", value_type=bytes, value_serializer="raw")
        )
    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
