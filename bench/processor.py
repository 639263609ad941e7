"""Processor throughput: msgstatus's worker against baselines over the same records.

All read the same raw records on the same broker in the same run: a bare aiokafka
consume -> produce passthrough (the ceiling), the two naive Faust agents of
`bench.naive` (what a first Faust app gets: forwarding each record, and doing
msgstatus's job), and `msgstatus worker`: one process with the RocksDB state backend,
then (given a Redis) with the Redis one, two processes in one group, and the worker of
the release before crash-consistent state (BASELINE_COMMIT, run from that commit's
sources), each over a copy of the same records on topics of its own, for the cost of
the new write path. A rate is raw records divided by the time between the first and
last output record (broker CreateTime) after everything was consumed, so start-up is not
counted. A naive agent stopped at its time cap has read only part of the records:
`forward` then counts its outputs (one per record), `job` (one output per applied
status) takes the slope of its committed offsets.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from redis import asyncio as aioredis

from bench import workload as wl
from bench.processes import Process
from bench.workload import local_broker
from processors.config import SINGLE_BROKER_ENV, single_broker
from processors.kafka import offsets
from processors.kafka.topics import (
    CANONICAL,
    STATUS,
    TRANSITIONS,
    all_topics,
    ensure_topics,
    raw_topic,
)
from processors.providers import REGISTRY

ROOT = Path(__file__).resolve().parents[1]
# The last commit before issue 11 (write-behind atomic table units, own offset commits,
# in-band watermark markers): its worker is measured side by side with today's.
BASELINE_COMMIT = "c4f36af"


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


async def drop_topics(bootstrap: str, prefix: str) -> int:
    """Delete a section's topics so the next section gets a broker without its backlog
    (1M-record logs, changelogs being compacted) competing for the 2 cores."""
    admin = AIOKafkaAdminClient(**local_broker(bootstrap))
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
        return len(names)
    finally:
        await admin.close()


# The naive agents read the same records as the others; at ~1.5k records/s each would
# need ~11 minutes for 1M, so each is stopped after NAIVE_SECONDS to keep `make bench`
# under 15 minutes: its rate is then that of the first ~200k records (the report says
# how many), where its state is smaller than at the end of the run.
NAIVE_SECONDS = 150.0


async def _wait_output(
    bootstrap: str, topic: str, count: int, seconds: float, proc: Process
) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        ends = await offsets.ends(bootstrap, [topic])
        if sum(ends.values()) >= count:
            return
        await asyncio.sleep(1.0)


async def committed_slope(
    bootstrap: str, group: str, total: int, seconds: float, proc: Process
) -> tuple[int, float]:
    """(records committed, records/s) of a consumer group, from its first commit to the
    last commit seen before it has consumed `total` records or `seconds` have passed."""
    deadline = time.monotonic() + seconds
    first: tuple[float, int] | None = None
    last: tuple[float, int] = (0.0, 0)
    while time.monotonic() < deadline and proc.poll() is None:
        done = sum((await offsets.committed(bootstrap, group)).values())
        now = time.monotonic()
        if done > last[1]:
            last = (now, done)
            if first is None:
                first = last
        if done >= total:
            break
        await asyncio.sleep(0.5)
    if first is None or last[0] <= first[0]:
        return last[1], 0.0
    return last[1], (last[1] - first[1]) / (last[0] - first[0])


def baseline_sources(dest: Path) -> Path | None:
    """BASELINE_COMMIT's `processors/` package, extracted from git (None without history,
    e.g. a shallow clone: the report then says the figure is missing)."""
    if dest.exists():
        return dest
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", BASELINE_COMMIT, "processors"],
        capture_output=True,
    )
    if archive.returncode != 0:
        log(f"no {BASELINE_COMMIT} in this clone's history: skipping the baseline worker")
        return None
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


async def copy_workload(bootstrap: str, records: list, prefix: str, into: str) -> None:
    """The same raw records under another topic prefix (a run of its own)."""
    settings = single_broker(kafka_bootstrap=bootstrap, topic_prefix=into, partitions=4)
    await ensure_topics(settings, all_topics(settings, REGISTRY))
    copies = [
        wl.raw.RawRecord(into + r.topic[len(prefix) :], r.key, r.value, r.headers) for r in records
    ]
    await wl.produce(bootstrap, copies)


async def worker_rate(
    bootstrap: str,
    prefix: str,
    datadir: Path,
    env: dict[str, str],
    timeout: float,
    processes: int = 1,
    sources: Path | None = None,
    backend: str = "rocksdb",
    redis_url: str | None = None,
) -> tuple[float, int]:
    """Raw records/s of `processes` workers over everything under `prefix` (output span)."""
    settings = single_broker(kafka_bootstrap=bootstrap, topic_prefix=prefix, partitions=4)
    raw_topics = [raw_topic(settings, n) for n in REGISTRY]
    total = sum((await offsets.ends(bootstrap, raw_topics)).values())
    workers = []
    for i in range(processes):
        worker_env = {
            **env,
            "MSGSTATUS_KAFKA_BOOTSTRAP": bootstrap,
            "MSGSTATUS_TOPIC_PREFIX": prefix,
            "MSGSTATUS_DATA_DIR": str(datadir / str(i)),
            "MSGSTATUS_METRICS_PORT": "0",
            "MSGSTATUS_LOG_LEVEL": "WARNING",
            **SINGLE_BROKER_ENV,
        }
        if sources is None:  # the baseline release knew only RocksDB
            worker_env["MSGSTATUS_STATE_BACKEND"] = backend
        if redis_url:
            worker_env["MSGSTATUS_REDIS_URL"] = redis_url
        args = [sys.executable, "-m", "processors.cli", "worker", "--no-read-model"]
        if sources is not None:  # run that commit's package, not this checkout's
            worker_env["PYTHONPATH"] = str(sources)
        else:  # the bare worker process (its CPU), not today's supervisor around it
            args.append("--no-supervisor")
        log_path = datadir.with_name(f"{datadir.name}-{i}.log")
        workers.append(
            (
                Process(
                    args,
                    worker_env,
                    log_path,
                    cwd=sources,
                ).start(),
                log_path,
            )
        )
    try:
        proc, log_path = workers[0]
        await offsets.wait_consumed(
            bootstrap, f"{prefix}msgstatus-normalize", raw_topics, timeout, proc, log_path
        )
        await offsets.wait_consumed(
            bootstrap,
            f"{prefix}msgstatus",
            [settings.topic(CANONICAL), settings.topic(TRANSITIONS)],
            timeout,
            proc,
            log_path,
        )
    finally:
        for proc, _ in workers:
            proc.stop(30)
    count, first, last = await offsets.span(bootstrap, settings.topic(STATUS))
    return total / max(last - first, 1e-6), count


async def passthrough(bootstrap: str, topics: list[str], sink: str, total: int) -> float:
    """Bare aiokafka: consume every raw record and produce it again (acks=all)."""
    consumer = AIOKafkaConsumer(
        *topics,
        **local_broker(bootstrap),
        group_id=f"pt-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 << 20,
    )
    producer = AIOKafkaProducer(
        **local_broker(bootstrap),
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=512 * 1024,
    )
    await consumer.start()
    await producer.start()
    seen = 0
    try:
        while seen < total:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            futures = []
            for records in batch.values():
                for record in records:
                    futures.append(
                        await producer.send(
                            sink, record.value, key=record.key, headers=list(record.headers)
                        )
                    )
                seen += len(records)
            for future in futures:
                await future
            if batch:
                await consumer.commit()
    finally:
        await producer.stop()
        await consumer.stop()
    count, first, last = await offsets.span(bootstrap, sink)
    return count / max(last - first, 1e-6)


async def run(
    bootstrap: str,
    workdir: Path,
    messages: int = 100_000,
    records: int = 1_000_000,
    quick: bool = False,
    redis_url: str | None = None,
) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    if quick:
        messages, records = 1_000, 10_000
    prefix = f"b{uuid.uuid4().hex[:6]}."
    settings = single_broker(kafka_bootstrap=bootstrap, topic_prefix=prefix, partitions=4)
    await ensure_topics(settings, all_topics(settings, REGISTRY))
    log(f"building {records} raw records for {messages} messages")
    work = wl.build(settings, messages, records)
    log("producing them")
    produce_seconds = await wl.produce(bootstrap, work.records)
    raw_topics = [raw_topic(settings, n) for n in REGISTRY]
    total = len(work.records)
    result: dict[str, Any] = {
        "records": total,
        "messages": messages,
        "statuses": work.statuses,
        "produce_rate": total / produce_seconds,
    }

    log("baseline: aiokafka passthrough")
    await ensure_topics(single_broker(kafka_bootstrap=bootstrap, partitions=4), [f"{prefix}pt.out"])
    result["passthrough"] = await passthrough(bootstrap, raw_topics, f"{prefix}pt.out", total)

    env = {k: v for k, v in os.environ.items() if not k.startswith("MSGSTATUS_")}
    timeout = 1800 if not quick else 120

    def naive(mode: str) -> Process:
        args = [sys.executable, "-m", "bench.naive", bootstrap, prefix]
        return Process(
            [*args, str(workdir / f"naive-{mode}"), mode], env, workdir / f"naive-{mode}.log"
        ).start()

    cap = NAIVE_SECONDS if not quick else 60
    log("baseline: naive Faust agent forwarding each record")
    proc = naive("forward")
    try:
        await _wait_output(bootstrap, f"{prefix}naive.out", total, cap, proc)
    finally:
        proc.stop(30)
    count, first, last = await offsets.span(bootstrap, f"{prefix}naive.out")
    result["naive_faust"] = count / max(last - first, 1e-6)
    result["naive_faust_records"] = count

    log("baseline: naive Faust agent doing the job")
    proc = naive("job")
    try:
        done, rate = await committed_slope(bootstrap, f"{prefix}naive-job", total, cap, proc)
    finally:
        proc.stop(30)
    if done >= total:  # all read: measured like the others, by its output's span
        _, first, last = await offsets.span(bootstrap, f"{prefix}naive-job.out")
        rate = total / max(last - first, 1e-6)
    result["naive_job"] = rate
    result["naive_job_records"] = done

    log("msgstatus worker (RocksDB state)")
    rate, count = await worker_rate(bootstrap, prefix, workdir / "worker", env, timeout)
    result["msgstatus"] = rate
    result["status_events"] = count

    if redis_url:
        log("msgstatus worker (Redis state)")
        prefix_r = f"{prefix}redis."
        await copy_workload(bootstrap, work.records, prefix, prefix_r)
        result["msgstatus_redis"], result["status_events_redis"] = await worker_rate(
            bootstrap,
            prefix_r,
            workdir / "redis",
            env,
            timeout,
            backend="redis",
            redis_url=redis_url,
        )
        result["redis_vs_rocksdb"] = result["msgstatus_redis"] / max(result["msgstatus"], 1e-6)
        result["redis_keys_dropped"] = await drop_redis_keys(redis_url, prefix_r)

    log("msgstatus worker, two processes in one group")
    prefix2 = f"{prefix}two."
    await copy_workload(bootstrap, work.records, prefix, prefix2)
    result["msgstatus_two"], _ = await worker_rate(
        bootstrap, prefix2, workdir / "two", env, timeout, processes=2
    )
    result["scaling_two"] = result["msgstatus_two"] / result["msgstatus"]

    baseline = baseline_sources(workdir / "baseline")
    if baseline is not None:
        log(f"msgstatus worker as of {BASELINE_COMMIT} (before crash-consistent state)")
        prefix3 = f"{prefix}old."
        await copy_workload(bootstrap, work.records, prefix, prefix3)
        result["msgstatus_baseline"], _ = await worker_rate(
            bootstrap, prefix3, workdir / "old", env, timeout, sources=baseline
        )
        result["write_path_cost"] = result["msgstatus"] / result["msgstatus_baseline"]
    result["baseline_commit"] = BASELINE_COMMIT
    result["ratio_vs_naive"] = result["msgstatus"] / result["naive_faust"]
    result["ratio_vs_naive_job"] = result["msgstatus"] / max(result["naive_job"], 1e-6)
    result["ratio_vs_passthrough"] = result["msgstatus"] / result["passthrough"]
    result["prefix"] = prefix
    result["topics_dropped"] = await drop_topics(bootstrap, prefix)
    return result


async def drop_redis_keys(url: str, prefix: str) -> int:
    """Remove a run's state from the bench's Redis (its memory is the next run's)."""
    client = aioredis.from_url(url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.unlink(*keys)
        return len(keys)
    finally:
        await client.aclose()


if __name__ == "__main__":
    import json

    bootstrap = sys.argv[1]
    n_records = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    n_messages = int(sys.argv[3]) if len(sys.argv) > 3 else n_records // 10
    redis = sys.argv[4] if len(sys.argv) > 4 else None  # e.g. redis://127.0.0.1:6379/0
    work = Path(f"/tmp/bench-{uuid.uuid4().hex[:6]}")
    work.mkdir()
    result = asyncio.run(run(bootstrap, work, n_messages, n_records, redis_url=redis))
    print(json.dumps(result, indent=2))
