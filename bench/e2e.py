"""End-to-end bench: webhook accepted (its 200) -> `message.status` event available.

Real processes against a real broker: one `msgstatus gateway`, one `msgstatus worker
--no-read-model` (log level WARNING), a paced sender process and, in this process, a
consumer of `message.status`.

The sender (a separate process) is open loop: request k is due at t0 + k/rate whatever
the answers, taken in order by a fixed pool of keep-alive connections (a minimal asyncio
HTTP/1.1 client writing pre-built request bytes: ~100 us of CPU per request, an aiohttp
client ~250 us), and it records when each got its answer. Every request is a signed
Twilio callback that must produce exactly one event: each message gets `sent`, then
about a second later `delivered`. The consumer records when each (message_key, status)
event arrived; latency = available - accepted. A `sent` that the worker saw only after
its `delivered` is not emitted (it is stale; the `delivered` event lists it in
`implied`): such cases are counted as `superseded`, anything else without an event as
`unmatched`.

The clock starts only after the worker is ready: its metrics endpoint answers and a
warm-up batch of messages made the round trip through every raw partition.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer

from bench import gateway as gw
from bench.processes import Process
from bench.workload import local_broker
from processors.kafka.topics import STATUS

FULL = {"rate": 2000, "duration": 60.0}
QUICK = {"rate": 200, "duration": 5.0}
CONNECTIONS = 64
WARMUP_MESSAGES = 32
READY_TIMEOUT = 120.0


def plan(rate: int, duration: float, run_id: str) -> list[tuple[str, str]]:
    """(message_id, status) in sending order: `sent` of message m, interleaved with the
    `delivered` of message m - rate/2 (so `delivered` follows its `sent` by ~1 s)."""
    messages = max(1, int(rate * duration) // 2)
    lag = max(1, rate // 2)
    ids = [f"SM{run_id}{m:08d}" for m in range(messages)]
    order: list[tuple[str, str]] = []
    for m in range(messages):
        order.append((ids[m], "sent"))
        if m >= lag:
            order.append((ids[m - lag], "delivered"))
    order += [(ids[m], "delivered") for m in range(max(0, messages - lag), messages)]
    return order


# --------------------------------------------------------------------------- consumer


class StatusReader:
    """Reads `message.status` from the start; first arrival time per (key, status)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = AIOKafkaConsumer(
            topic,
            **local_broker(bootstrap),
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        self.seen: dict[tuple[str, str], float] = {}
        self.implied: dict[tuple[str, str], float] = {}
        self.events = 0
        self.duplicates = 0
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        await self.consumer.start()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=100, max_records=10_000)
            now = time.time()
            for records in batch.values():
                for record in records:
                    data = orjson.loads(record.value)["data"]
                    key = data["message_key"]
                    self.events += 1
                    if (key, data["status"]) in self.seen:
                        self.duplicates += 1
                    self.seen.setdefault((key, data["status"]), now)
                    for status in data.get("implied") or ():
                        self.implied.setdefault((key, status), now)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self.consumer.stop()

    def check(self) -> None:
        if self._task is not None and self._task.done():
            self._task.result()  # re-raises the reader's error


# --------------------------------------------------------------------------- sender


def _http_request(host: str, signature: bytes, body: bytes) -> bytes:
    """The complete HTTP/1.1 request bytes of one signed callback (keep-alive)."""
    return b"".join(
        (
            f"POST {gw.WEBHOOK_PATH} HTTP/1.1\r\nHost: {host}\r\n".encode(),
            b"Content-Type: application/x-www-form-urlencoded\r\n",
            b"X-Twilio-Signature: " + signature + b"\r\n",
            f"Content-Length: {len(body)}\r\n\r\n".encode(),
            body,
        )
    )


def _content_length(head: bytes) -> int:
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    if at < 0:
        raise ValueError("answer without Content-Length")
    return int(lower[at + 17 : lower.index(b"\r\n", at + 2)])


async def _send(url: str, data: Path, rate: float, connections: int) -> dict:
    """Open loop: request k is due at t0 + k/rate whatever the answers; `connections`
    keep-alive connections take due requests in order. Records when each request was
    due, when its answer had arrived, and its code (0: connection failed).

    A minimal HTTP/1.1 client on asyncio streams writing pre-built request bytes: at
    2,000/s an aiohttp client process cost ~0.5 core here, which the worker then lacks;
    this one ~0.2.
    """
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    reqs = []
    for line in data.read_bytes().splitlines():
        signature, body = line.split(b"\t", 1)
        reqs.append(_http_request(parts.netloc, signature, body))
    n = len(reqs)
    dispatched = [0.0] * n  # when it was due
    written = [0.0] * n  # when a connection was free to write it
    answered = [0.0] * n
    codes = [0] * n
    queue: asyncio.Queue[int] = asyncio.Queue()

    async def connection() -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while (i := await queue.get()) >= 0:
            try:
                if writer is None or reader is None:
                    reader, writer = await asyncio.open_connection(host, port)
                written[i] = time.time()
                writer.write(reqs[i])
                head = await reader.readuntil(b"\r\n\r\n")
                codes[i] = int(head[9:12])
                await reader.readexactly(_content_length(head))
            except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                codes[i] = 0
                if writer is not None:
                    writer.close()
                reader = writer = None
            answered[i] = time.time()
        if writer is not None:
            writer.close()

    workers = [asyncio.create_task(connection()) for _ in range(connections)]
    t0 = time.time() + 0.2
    i = 0
    while i < n:
        due = min(n, int((time.time() - t0) * rate) + 1)
        now = time.time()
        while i < due:
            dispatched[i] = now
            queue.put_nowait(i)
            i += 1
        await asyncio.sleep(max(0.0, t0 + i / rate - time.time()))
    for _ in workers:
        queue.put_nowait(-1)
    await asyncio.gather(*workers)
    return {
        "t0": t0,
        "rate": rate,
        "dispatched": dispatched,
        "written": written,
        "answered": answered,
        "codes": codes,
    }


# --------------------------------------------------------------------------- the bench


async def _wait_metrics(worker: Process, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while True:
            if not worker.alive():
                raise RuntimeError(f"worker exited:\n{worker.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(f"http://127.0.0.1:{port}/metrics") as answer:
                    if answer.status == 200:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker metrics not up in {timeout:.0f}s:\n{worker.log_tail()}")
            await asyncio.sleep(0.2)


async def _warm_up(url: str, reader: StatusReader, worker: Process, run_id: str) -> float:
    """Post `sent` then `delivered` for a few messages; wait for all their events."""
    began = time.monotonic()
    ids = [f"SMW{run_id}{i:04d}" for i in range(WARMUP_MESSAGES)]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for status in ("sent", "delivered"):
            for mid in ids:
                headers, body = gw.signed_twilio(mid, status)
                async with session.post(url + gw.WEBHOOK_PATH, data=body, headers=headers) as r:
                    if r.status != 200:
                        raise RuntimeError(f"warm-up webhook answered {r.status}: {await r.text()}")
            want = {(f"twilio:{mid}", status) for mid in ids}
            while not want <= reader.seen.keys():
                reader.check()
                if not worker.alive():
                    raise RuntimeError(f"worker exited:\n{worker.log_tail()}")
                if time.monotonic() - began > READY_TIMEOUT:
                    missing = len(want - reader.seen.keys())
                    raise RuntimeError(
                        f"warm-up: {missing} events missing after {READY_TIMEOUT:.0f}s:\n"
                        f"{worker.log_tail()}"
                    )
                await asyncio.sleep(0.05)
    return time.monotonic() - began


async def _sender(url: str, data: Path, rate: int, out: Path, limit: float) -> dict:
    cmd = [
        sys.executable, "-m", "bench.e2e", "--send", "--url", url,
        "--data", str(data), "--rate", str(rate), "--connections", str(CONNECTIONS),
        "--out", str(out),
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), limit)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"sender exited {proc.returncode}:\n{err.decode(errors='replace')}")
    return orjson.loads(out.read_bytes())


def _rate(times: Sequence[float]) -> float:
    """Events per second over the span of `times` (0 with fewer than two)."""
    if len(times) < 2:
        return 0.0
    span = max(times) - min(times)
    return (len(times) - 1) / span if span > 0 else 0.0


def _ms(values: Sequence[float], fraction: float) -> float:
    return round(gw.percentile(values, fraction) * 1e3, 2) if values else float("nan")


async def run(
    bootstrap: str,
    workdir: Path,
    quick: bool = False,
    rate: int | None = None,
    duration: float | None = None,
) -> dict:
    """Gateway + worker at a fixed offered rate; latency from 200 to event available."""
    shape = dict(QUICK if quick else FULL)
    rate = int(rate or shape["rate"])
    duration = float(duration or shape["duration"])
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex[:8]
    prefix = f"bench-e2e-{run_id}."
    metrics_port = gw.free_port()
    env = gw.bench_env(
        bootstrap, prefix, workdir / "data", MSGSTATUS_METRICS_PORT=str(metrics_port)
    )
    load_before = os.getloadavg()[0]
    order = plan(rate, duration, run_id)
    data = workdir / "e2e-requests.tsv"
    lines = []
    for mid, status in order:
        headers, body = gw.signed_twilio(mid, status)
        lines.append(headers["x-twilio-signature"].encode() + b"\t" + body)
    data.write_bytes(b"\n".join(lines) + b"\n")

    gateway: Process | None = None
    worker: Process | None = None
    reader: StatusReader | None = None
    try:
        gateway, url = await gw.start_gateway(env, workdir)
        worker = Process.msgstatus(
            "worker", ["--no-read-model", "--no-supervisor"], env, workdir, cwd=workdir
        ).start()
        await _wait_metrics(worker, metrics_port, READY_TIMEOUT)
        reader = StatusReader(bootstrap, prefix + STATUS)
        await reader.start()
        warm = await _warm_up(url, reader, worker, run_id)
        gw.say(
            f"worker ready (warm-up round trip {warm:.1f}s); sending {len(order)} webhooks "
            f"at {rate}/s for {duration:g}s, open loop over {CONNECTIONS} connections"
        )
        cpu_gw, cpu_wk, cpu_sd = gateway.cpu_seconds(), worker.cpu_seconds(), gw.children_cpu()
        t_start = time.monotonic()
        sent = await _sender(url, data, rate, workdir / "e2e-sender.json", duration * 3 + 60)
        send_wall = time.monotonic() - t_start
        cpu = {
            "gateway": (gateway.cpu_seconds() - cpu_gw) / send_wall,
            "worker": (worker.cpu_seconds() - cpu_wk) / send_wall,
            "sender": (gw.children_cpu() - cpu_sd) / send_wall,
        }
        codes = sent["codes"]
        expected = [
            (f"twilio:{mid}", status)
            for (mid, status), code in zip(order, codes, strict=True)
            if code == 200
        ]
        gw.say(f"sent; {len(expected)} answered 200; waiting for their events")
        idle_limit = 10.0 if quick else 20.0
        last_progress, last_count, began = time.monotonic(), -1, time.monotonic()
        while True:
            reader.check()
            done = sum(1 for k in expected if k in reader.seen or k in reader.implied)
            if done == len(expected):
                break
            now = time.monotonic()
            if done != last_count:
                last_count, last_progress = done, now
            if now - last_progress > idle_limit or now - began > 120:
                gw.say(f"giving up waiting: {len(expected) - done} events missing")
                break
            await asyncio.sleep(0.2)
        drain = time.monotonic() - began
        if not worker.alive():
            raise RuntimeError(f"worker died during the run:\n{worker.log_tail()}")
    finally:
        if reader is not None:
            with contextlib.suppress(Exception):
                await reader.stop()
        if worker is not None:
            await worker.stop_async()
        if gateway is not None:
            await gateway.stop_async()

    in_order: list[float] = []  # latencies in sending order
    answers: list[float] = []
    superseded = unmatched = 0
    for (mid, status), code, accepted, due in zip(
        order, codes, sent["answered"], sent["dispatched"], strict=True
    ):
        if code != 200:
            continue
        answers.append(accepted - due)
        key = (f"twilio:{mid}", status)
        if key in reader.seen:
            in_order.append(reader.seen[key] - accepted)
        elif key in reader.implied:
            superseded += 1
        else:
            unmatched += 1
    latencies = sorted(in_order)
    quarter = max(1, len(in_order) // 4)
    first_quarter, last_quarter = sorted(in_order[:quarter]), sorted(in_order[-quarter:])
    answers.sort()
    t0, due_times = sent["t0"], sent["dispatched"]
    lag = sorted(at - (t0 + k / rate) for k, at in enumerate(due_times))
    errors = Counter(str(c) for c in codes if c != 200)
    achieved = _rate(due_times)
    on_wire = _rate([t for t in sent["written"] if t])
    notes = (
        f"gateway + worker (--no-read-model, RocksDB state) processes, 4 partitions; "
        f"open-loop sender process ({CONNECTIONS} keep-alive connections) of signed Twilio "
        f"callbacks, "
        f"each a new status (sent, ~1 s later delivered) of fresh messages, at {rate}/s for "
        f"{duration:g} s after a {WARMUP_MESSAGES}-message warm-up round trip; latency = "
        f"event read from message.status - 200 received. Non-200: "
        f"{', '.join(f'{c}: {n}' for c, n in sorted(errors.items())) or 'none'}; "
        f"unmatched: {unmatched}; superseded (stale sent after delivered): {superseded}. "
        f"Requests reached the gateway at {on_wire:,.0f}/s. Worker used "
        f"{cpu['worker']:.2f} cores, gateway {cpu['gateway']:.2f}, sender {cpu['sender']:.2f}. "
        f"Machine: {os.cpu_count()} cores, 1-min load average {load_before:.1f} before."
    )
    figures = {
        "offered_rate_target": rate,
        "offered_rate_achieved": round(achieved, 1),
        "rate_on_wire": round(on_wire, 1),
        "duration_s": duration,
        "requests": len(order),
        "accepted_200": len(expected),
        "errors": sum(errors.values()),
        "matched": len(latencies),
        "superseded": superseded,
        "unmatched": unmatched,
        "duplicate_events": reader.duplicates,
        "p50_ms": _ms(latencies, 0.50),
        "p90_ms": _ms(latencies, 0.90),
        "p99_ms": _ms(latencies, 0.99),
        "max_ms": round(latencies[-1] * 1e3, 2) if latencies else float("nan"),
        "p50_first_quarter_ms": _ms(first_quarter, 0.50),
        "p50_last_quarter_ms": _ms(last_quarter, 0.50),
        "gateway_answer_p50_ms": _ms(answers, 0.50),
        "gateway_answer_p99_ms": _ms(answers, 0.99),
        "dispatch_lag_p99_ms": _ms(lag, 0.99),
        "worker_cpu_cores": round(cpu["worker"], 2),
        "gateway_cpu_cores": round(cpu["gateway"], 2),
        "sender_cpu_cores": round(cpu["sender"], 2),
        "drain_s": round(drain, 2),
        "warmup_round_trip_s": round(warm, 2),
        "notes": notes,
    }
    gw.say(
        f"e2e at {achieved:,.0f}/s: p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms, "
        f"max {figures['max_ms']} ms; matched {len(latencies)}, superseded {superseded}, "
        f"unmatched {unmatched}, errors {figures['errors']}"
    )
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    """`--send`: the paced sender process; otherwise run the bench."""
    p = argparse.ArgumentParser(prog="python -m bench.e2e")
    p.add_argument("--send", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--url")
    p.add_argument("--data", type=Path)
    p.add_argument("--rate", type=int)
    p.add_argument("--duration", type=float)
    p.add_argument("--connections", type=int, default=CONNECTIONS)
    p.add_argument("--out", type=Path)
    p.add_argument("--bootstrap", help="Kafka bootstrap (bench mode)")
    p.add_argument("--workdir", type=Path, default=Path("var/bench/e2e"))
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    if args.send:
        result = asyncio.run(_send(args.url, args.data, args.rate, args.connections))
        args.out.write_bytes(orjson.dumps(result))
        return 0
    if not args.bootstrap:
        p.error("--bootstrap is required")
    figures = asyncio.run(run(args.bootstrap, args.workdir, args.quick, args.rate, args.duration))
    sys.stdout.write(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
