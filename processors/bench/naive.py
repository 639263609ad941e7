"""The naive Faust baseline: what a first Faust app does with these records.

One agent over the raw topics, a RocksDB table updated per event and an awaited
`topic.send` per event, default settings otherwise. Run as
`python -m processors.bench.naive <bootstrap> <prefix> <datadir>`.
"""

from __future__ import annotations

import sys

import faust

from processors.providers import REGISTRY


def main() -> None:
    bootstrap, prefix, datadir = sys.argv[1:4]
    app = faust.App(
        f"{prefix}naive",
        broker=f"kafka://{bootstrap}",
        store="rocksdb://",
        datadir=datadir,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
    )
    source = app.topic(
        *[f"{prefix}raw.{name}" for name in REGISTRY], value_type=bytes, value_serializer="raw"
    )
    sink = app.topic(f"{prefix}naive.out", value_type=bytes, value_serializer="raw")
    table = app.Table("naive", default=int, partitions=4)

    @app.agent(source)
    async def process(stream):  # type: ignore[no-untyped-def]
        async for key, value in stream.items():
            table[key] += 1
            await sink.send(key=key, value=value)

    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
