"""Gateway bench: signed webhooks/s per gateway process, with and without the Kafka write.

The gateway is measured twice in the same run on the same machine: once as `msgstatus
gateway` with its real sink (HMAC check of every Twilio callback, then the acks=all,
idempotent Kafka write of the raw record before the 200), and once as the same server
(`processors.ingest.gateway.serve`, same settings and event loop) started by this module
with `NullSink`, which does the same HTTP, verification and framing work and writes
nothing. The ratio of the two is what the durable write costs.

Load generator (a separate process, on loopback): by default Debian's `wrk` (C, epoll;
installed with apt-get when missing) with a generated Lua script that rotates thousands
of pre-signed Twilio status callbacks, a fixed number of keep-alive connections (64),
closed loop, a warm-up run then the measured run. Its `response()` hook counts 200s and
every other answer by code. `loadgen="aiohttp"` uses a Python aiohttp client process
instead (same requests, same connections). Measured here: the aiohttp client spends about
as much CPU per request as the gateway itself (~190 us), wrk under 20 us; on 2 cores the
aiohttp client takes CPU the gateway then lacks, so wrk is the default.

After the Kafka run the raw topic's end offsets are counted: it must hold at least as
many records as there were 200 answers (warm-up included), or the figures say so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer

from bench.processes import Process
from bench.workload import local_broker
from processors import eventloop
from processors.config import SINGLE_BROKER_ENV, Settings, single_broker
from processors.ingest.gateway import serve
from processors.kafka.raw import RawRecord
from processors.kafka.topics import raw_topic
from processors.providers import twilio

PUBLIC_URL = "https://hooks.msgstatus-bench.example"  # what the callbacks are signed for
WEBHOOK_PATH = "/webhooks/twilio"
TWILIO_TOKEN = "bench-twilio-auth-token"
ACCOUNT_SID = "AC" + "5f1e" * 8
CONNECTIONS = 64
DISTINCT_REQUESTS = 20_000
FULL = {"warmup": 3.0, "duration": 20.0}  # whole seconds: wrk takes no fractions
QUICK = {"warmup": 1.0, "duration": 2.0}


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (NaN when empty)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * fraction // 1))
    return sorted_values[min(len(sorted_values), int(rank)) - 1]


# --------------------------------------------------------------------------- processes


def bench_env(bootstrap: str, prefix: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """A clean msgstatus environment: nothing inherited from the caller's MSGSTATUS_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSGSTATUS_")}
    env.update(
        {
            "MSGSTATUS_KAFKA_BOOTSTRAP": bootstrap,
            "MSGSTATUS_TOPIC_PREFIX": prefix,
            "MSGSTATUS_DATA_DIR": str(data_dir),
            "MSGSTATUS_PARTITIONS": "4",
            "MSGSTATUS_TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
            "MSGSTATUS_PUBLIC_URL": PUBLIC_URL,
            "MSGSTATUS_LOG_LEVEL": "WARNING",
            "MSGSTATUS_HTTP_HOST": "127.0.0.1",
            "PYTHONUNBUFFERED": "1",
            **SINGLE_BROKER_ENV,
        }
    )
    env.update(extra)
    return env


class NullSink:
    """Accepts every record and writes nothing: the baseline the Kafka write is compared
    with. A gateway running with it answers 200 and keeps nothing."""

    async def publish(self, record: RawRecord) -> None:
        return None

    async def ready(self) -> bool:
        return True


def serve_null() -> int:
    """The gateway server as `msgstatus gateway` runs it (settings, logging, event loop),
    with NullSink instead of Kafka; until SIGTERM/SIGINT."""
    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level, stream=sys.stderr)

    async def main() -> None:
        loop, task = asyncio.get_running_loop(), asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await serve(settings, NullSink(), None)

    eventloop.run(main(), settings.gateway_event_loop)
    return 0


async def start_gateway(
    env: Mapping[str, str], log_dir: Path, null: bool = False, timeout: float = 60.0
) -> tuple[Process, str]:
    """Start `msgstatus gateway` (or, `null`, the same server with NullSink) on a free
    port; return it once /readyz answers 200."""
    port = free_port()
    env = {**env, "MSGSTATUS_HTTP_PORT": str(port)}
    if null:
        log_path = log_dir / f"gateway-null-{time.monotonic_ns()}.log"
        argv = [sys.executable, "-m", "bench.gateway", "--serve-null"]
        part = Process(argv, env, log_path).start()
    else:
        part = Process.msgstatus("gateway", (), env, log_dir, cwd=log_dir).start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session:
            while True:
                if not part.alive():
                    raise RuntimeError(f"gateway exited:\n{part.log_tail()}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(url + "/readyz") as answer:
                        if answer.status == 200:
                            return part, url
                if time.monotonic() > deadline:
                    raise RuntimeError(f"gateway not ready in {timeout:.0f}s:\n{part.log_tail()}")
                await asyncio.sleep(0.1)
    except BaseException:
        await part.stop_async()
        raise


# --------------------------------------------------------------------------- requests


def twilio_form(message_id: str, status: str, channel: str = "sms") -> bytes:
    """A Twilio status callback body as Twilio sends it (same fields as bench.traffic)."""
    to, sender = "+15558675310", "+15017250604"
    params = [
        ("AccountSid", ACCOUNT_SID),
        ("ApiVersion", "2010-04-01"),
        ("From", f"whatsapp:{sender}" if channel == "whatsapp" else sender),
        ("MessageSid", message_id),
        ("MessageStatus", status),
        ("SmsSid", message_id),
        ("SmsStatus", status),
        ("To", f"whatsapp:{to}" if channel == "whatsapp" else to),
    ]
    if channel == "whatsapp":
        params.append(("ChannelPrefix", "whatsapp"))
    return urllib.parse.urlencode(params).encode()


def signed_twilio(message_id: str, status: str, channel: str = "sms") -> tuple[dict, bytes]:
    """(headers, body) of a callback signed for PUBLIC_URL with the bench's auth token."""
    body = twilio_form(message_id, status, channel)
    return twilio.sign(PUBLIC_URL + WEBHOOK_PATH, body, TWILIO_TOKEN), body


def write_requests(path: Path, count: int, run_id: str) -> None:
    """`count` distinct signed callbacks, one `signature<TAB>body` per line."""
    statuses = ("sent", "delivered", "read")
    lines = []
    for i in range(count):
        channel = "whatsapp" if i % 3 == 0 else "sms"
        status = statuses[i % len(statuses)] if channel == "whatsapp" else statuses[i % 2]
        headers, body = signed_twilio(f"SM{run_id}{i:08d}", status, channel)
        lines.append(headers["x-twilio-signature"].encode() + b"\t" + body)
    path.write_bytes(b"\n".join(lines) + b"\n")


# --------------------------------------------------------------------------- wrk

WRK_SCRIPT = """\
-- generated by bench/gateway.py: rotate pre-signed Twilio status callbacks
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local reqs = {}
local n = 0
local i = 0
ok = 0
bad = 0
codes = {}

function init(args)
  for line in io.lines(%(data)s) do
    local tab = line:find("\\t", 1, true)
    n = n + 1
    reqs[n] = wrk.format("POST", %(path)s, {
      ["Host"] = %(host)s,
      ["Content-Type"] = "application/x-www-form-urlencoded",
      ["X-Twilio-Signature"] = line:sub(1, tab - 1),
    }, line:sub(tab + 1))
  end
  i = ((id or 0) * 7919) %% n
end

function request()
  i = i %% n + 1
  return reqs[i]
end

function response(status, headers, body)
  if status == 200 then
    ok = ok + 1
  else
    bad = bad + 1
    local k = tostring(status)
    codes[k] = (codes[k] or 0) + 1
  end
end

function done(summary, latency, requests)
  local good, wrong, merged = 0, 0, {}
  for _, t in ipairs(threads) do
    good = good + t:get("ok")
    wrong = wrong + t:get("bad")
    for k, v in pairs(t:get("codes")) do merged[k] = (merged[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(merged) do parts[#parts + 1] = string.format('"%%s": %%d', k, v) end
  local e = summary.errors
  io.write(string.format(
    'WRKRESULT {"requests": %%d, "duration_s": %%.6f, "ok": %%d, "non200": %%d, ' ..
    '"codes": {%%s}, "connect_errors": %%d, "read_errors": %%d, "write_errors": %%d, ' ..
    '"timeouts": %%d, "p50_ms": %%.3f, "p90_ms": %%.3f, "p99_ms": %%.3f, "max_ms": %%.3f, ' ..
    '"mean_ms": %%.3f}\\n',
    summary.requests, summary.duration / 1e6, good, wrong, table.concat(parts, ", "),
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50) / 1e3, latency:percentile(90) / 1e3,
    latency:percentile(99) / 1e3, latency.max / 1e3, latency.mean / 1e3))
end
"""


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ensure_wrk() -> str | None:
    """`wrk`, installed from Debian with apt-get when missing; None if that fails."""
    found = shutil.which("wrk")
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        return None
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in ([apt, "update"], [apt, "install", "-y", "wrk"]):
        say("running " + " ".join(cmd))
        if subprocess.run(cmd, env=env, stdout=sys.stderr, check=False).returncode != 0:
            return None
    return shutil.which("wrk") or ("/usr/bin/wrk" if os.access("/usr/bin/wrk", os.X_OK) else None)


def children_cpu() -> float:
    """CPU seconds of every child process reaped so far (load generators, senders)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def _run_tool(cmd: list[str], limit: float, marker: str) -> dict:
    """Run a load generator process; parse the JSON after `marker` on its stdout."""
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), limit)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    for line in out.decode(errors="replace").splitlines():
        if line.startswith(marker):
            return orjson.loads(line[len(marker) :])
    raise RuntimeError(
        f"{cmd[0]} exited {proc.returncode} without a result:\n"
        f"{out.decode(errors='replace')[-2000:]}\n{err.decode(errors='replace')[-2000:]}"
    )


async def wrk_run(wrk: str, script: Path, url: str, seconds: float) -> dict:
    cmd = [
        wrk, "-t1", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
        "-s", str(script), url + WEBHOOK_PATH,
    ]  # fmt: skip
    return await _run_tool(cmd, seconds + 60, "WRKRESULT ")


# --------------------------------------------------------------------------- aiohttp loadgen


async def _loadgen(url: str, data: Path, connections: int, warmup: float, duration: float) -> dict:
    """Closed loop: `connections` workers each post the next pre-signed callback."""
    reqs = []
    for line in data.read_bytes().splitlines():
        signature, body = line.split(b"\t", 1)
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signature.decode(),
        }
        reqs.append((headers, body))
    target = url + WEBHOOK_PATH
    codes: Counter[int] = Counter()  # measured window
    answers: Counter[int] = Counter()  # every phase, for the raw-topic check
    latencies: list[float] = []
    began = time.perf_counter()
    measure_from, measure_to = began + warmup, began + warmup + duration
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker(k: int) -> None:
            i = k * 7919
            while True:
                started = time.perf_counter()
                if started >= measure_to:
                    return
                headers, body = reqs[i % len(reqs)]
                i += 1
                try:
                    async with session.post(target, data=body, headers=headers) as resp:
                        await resp.read()
                        status = resp.status
                except (aiohttp.ClientError, TimeoutError):
                    status = 0
                finished = time.perf_counter()
                answers[status] += 1
                if measure_from <= finished <= measure_to:
                    codes[status] += 1
                    latencies.append(finished - started)

        await asyncio.gather(*(worker(k) for k in range(connections)))
    latencies.sort()
    ok = codes.get(200, 0)
    return {
        "requests": sum(codes.values()),
        "duration_s": duration,
        "ok": ok,
        "non200": sum(codes.values()) - ok,
        "codes": {str(code): n for code, n in codes.items() if code != 200},
        "all_phases_ok": answers.get(200, 0),
        "p50_ms": percentile(latencies, 0.50) * 1e3,
        "p90_ms": percentile(latencies, 0.90) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
        "max_ms": (latencies[-1] if latencies else float("nan")) * 1e3,
        "mean_ms": (sum(latencies) / len(latencies) * 1e3) if latencies else float("nan"),
    }


async def aiohttp_run(url: str, data: Path, warmup: float, duration: float) -> dict:
    cmd = [
        sys.executable, "-m", "bench.gateway", "--loadgen", "--url", url,
        "--data", str(data), "--connections", str(CONNECTIONS),
        "--warmup", str(warmup), "--duration", str(duration),
    ]  # fmt: skip
    return await _run_tool(cmd, warmup + duration + 60, "LOADGEN ")


# --------------------------------------------------------------------------- Kafka check


async def topic_records(bootstrap: str, topic: str) -> int:
    """Records in `topic` now: sum over partitions of end offset - beginning offset."""
    consumer = AIOKafkaConsumer(topic, **local_broker(bootstrap), enable_auto_commit=False)
    await consumer.start()
    try:
        deadline = time.monotonic() + 10
        while not consumer.assignment():  # group-less: every partition, once known
            if time.monotonic() > deadline:
                raise RuntimeError(f"topic {topic} has no partitions")
            await asyncio.sleep(0.05)
        tps = sorted(consumer.assignment())
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        return sum(ends[tp] - starts[tp] for tp in tps)
    finally:
        await consumer.stop()


# --------------------------------------------------------------------------- the bench


async def _measure(
    mode: str,
    env: Mapping[str, str],
    workdir: Path,
    data: Path,
    wrk: str | None,
    warmup: float,
    duration: float,
) -> dict:
    """Start a gateway (`mode` kafka or null), load it, stop it; the load figures."""
    gateway, url = await start_gateway(env, workdir, null=mode == "null")
    try:
        say(f"gateway ({mode} sink) ready at {url}; warm-up {warmup:g}s, measuring {duration:g}s")
        if wrk:
            script = workdir / "rotate.lua"
            script.write_text(
                WRK_SCRIPT
                % {
                    "data": _lua_string(str(data)),
                    "path": _lua_string(WEBHOOK_PATH),
                    "host": _lua_string(url.removeprefix("http://")),
                }
            )
            warm = await wrk_run(wrk, script, url, warmup)
            cpu_gw, cpu_lg, t0 = gateway.cpu_seconds(), children_cpu(), time.monotonic()
            result = await wrk_run(wrk, script, url, duration)
            wall = time.monotonic() - t0
            result["all_phases_ok"] = warm["ok"] + result["ok"]
            result["warmup_non200"] = warm["non200"] + _socket_errors(warm)
        else:
            cpu_gw, cpu_lg, t0 = gateway.cpu_seconds(), children_cpu(), time.monotonic()
            result = await aiohttp_run(url, data, warmup, duration)
            wall = time.monotonic() - t0  # includes the warm-up: CPU figures are averages
            result["warmup_non200"] = 0
        result["gateway_cpu_cores"] = (gateway.cpu_seconds() - cpu_gw) / wall
        result["loadgen_cpu_cores"] = (children_cpu() - cpu_lg) / wall
        if not gateway.alive():
            raise RuntimeError(f"gateway died during the run:\n{gateway.log_tail()}")
    finally:
        await gateway.stop_async()
    result["rate"] = result["ok"] / result["duration_s"] if result["duration_s"] else 0.0
    say(
        f"{mode} sink: {result['rate']:,.0f} webhooks/s, p50 {result['p50_ms']:.2f} ms, "
        f"p99 {result['p99_ms']:.2f} ms, 200s {result['ok']}, errors {_errors(result)}"
    )
    return result


def _socket_errors(result: Mapping) -> int:
    return sum(
        int(result.get(k, 0)) for k in ("connect_errors", "read_errors", "write_errors", "timeouts")
    )


def _cpu_per_webhook(result: Mapping) -> float:
    """Gateway CPU microseconds per answered webhook: less sensitive to a busy machine."""
    return round(result["gateway_cpu_cores"] * 1e6 / result["rate"], 1) if result["rate"] else 0.0


def _errors(result: Mapping) -> int:
    return int(result["non200"]) + _socket_errors(result)


async def run(bootstrap: str, workdir: Path, quick: bool = False, loadgen: str = "wrk") -> dict:
    """Measure the gateway with the Kafka write and with the null sink; the figures."""
    shape = QUICK if quick else FULL
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex[:8]
    load_before = os.getloadavg()[0]
    wrk = ensure_wrk() if loadgen == "wrk" else None
    tool = "wrk" if wrk else "aiohttp"
    if loadgen == "wrk" and not wrk:
        say("wrk is not available; falling back to the aiohttp load generator")
    data = workdir / "twilio-requests.tsv"
    count = 2_000 if quick else DISTINCT_REQUESTS
    write_requests(data, count, run_id)
    say(f"{count} pre-signed Twilio callbacks; load generator: {tool}, {CONNECTIONS} connections")

    figures: dict[str, dict] = {}
    prefixes = {mode: f"bench-gw-{mode}-{run_id}." for mode in ("null", "kafka")}
    for mode in ("null", "kafka"):
        env = bench_env(bootstrap, prefixes[mode], workdir / "data")
        figures[mode] = await _measure(
            mode, env, workdir, data, wrk, shape["warmup"], shape["duration"]
        )
    kafka, null = figures["kafka"], figures["null"]
    await asyncio.sleep(0.5)
    kafka_topic = raw_topic(single_broker(topic_prefix=prefixes["kafka"]), twilio.NAME)
    raw_records = await topic_records(bootstrap, kafka_topic)
    accepted = int(kafka["all_phases_ok"])
    if raw_records < accepted:
        say(f"LOST WRITES: {accepted} answers 200 but only {raw_records} raw records in Kafka")

    def errors_text(r: Mapping) -> str:
        parts = [f"{code}: {n}" for code, n in sorted(r["codes"].items())]
        socket_errors = _socket_errors(r)
        if socket_errors:
            parts.append(f"socket errors: {socket_errors}")
        return ", ".join(parts) or "none"

    how = (
        f"wrk 4.1 (1 thread, {CONNECTIONS} keep-alive connections, closed loop)"
        if tool == "wrk"
        else f"aiohttp client process ({CONNECTIONS} connections, closed loop)"
    )
    notes = (
        f"one gateway process each; load from {how} on loopback rotating {count} "
        f"pre-signed Twilio callbacks, {shape['duration']:g} s after {shape['warmup']:g} s "
        f"warm-up; Kafka: acks=all idempotent write before each 200; baseline: same "
        f"server with NullSink. Non-200 with Kafka: {errors_text(kafka)}; without: "
        f"{errors_text(null)}. Raw topic holds {raw_records} records for {accepted} "
        f"answers 200 (warm-up included): "
        + ("none lost." if raw_records >= accepted else "WRITES LOST.")
        + f" Machine: {os.cpu_count()} cores, 1-min load average {load_before:.1f} before."
    )
    return {
        "loadgen": tool,
        "connections": CONNECTIONS,
        "duration_s": shape["duration"],
        "kafka_webhooks_per_s": round(kafka["rate"], 1),
        "kafka_p50_ms": round(kafka["p50_ms"], 3),
        "kafka_p99_ms": round(kafka["p99_ms"], 3),
        "kafka_max_ms": round(kafka["max_ms"], 3),
        "kafka_ok": int(kafka["ok"]),
        "kafka_errors": _errors(kafka) + int(kafka["warmup_non200"]),
        "kafka_gateway_cpu_cores": round(kafka["gateway_cpu_cores"], 2),
        "kafka_gateway_cpu_us_per_webhook": _cpu_per_webhook(kafka),
        "null_webhooks_per_s": round(null["rate"], 1),
        "null_p50_ms": round(null["p50_ms"], 3),
        "null_p99_ms": round(null["p99_ms"], 3),
        "null_max_ms": round(null["max_ms"], 3),
        "null_ok": int(null["ok"]),
        "null_errors": _errors(null) + int(null["warmup_non200"]),
        "null_gateway_cpu_cores": round(null["gateway_cpu_cores"], 2),
        "null_gateway_cpu_us_per_webhook": _cpu_per_webhook(null),
        "kafka_vs_null_ratio": round(kafka["rate"] / null["rate"], 3) if null["rate"] else 0.0,
        "loadgen_cpu_cores": round(kafka["loadgen_cpu_cores"], 2),
        "kafka_accepted_all_phases": accepted,
        "raw_records": raw_records,
        "raw_records_cover_200s": raw_records >= accepted,
        "notes": notes,
    }


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """`--loadgen`: the aiohttp load generator process; `--serve-null`: the gateway with
    NullSink; otherwise run the bench."""
    p = argparse.ArgumentParser(prog="python -m bench.gateway")
    p.add_argument("--loadgen", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--serve-null", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--url")
    p.add_argument("--data", type=Path)
    p.add_argument("--connections", type=int, default=CONNECTIONS)
    p.add_argument("--warmup", type=float, default=FULL["warmup"])
    p.add_argument("--duration", type=float, default=FULL["duration"])
    p.add_argument("--bootstrap", help="Kafka bootstrap (bench mode)")
    p.add_argument("--workdir", type=Path, default=Path("var/bench/gateway"))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--tool", choices=("wrk", "aiohttp"), default="wrk")
    args = p.parse_args(argv)
    if args.serve_null:
        return serve_null()
    if args.loadgen:
        result = asyncio.run(
            _loadgen(args.url, args.data, args.connections, args.warmup, args.duration)
        )
        sys.stdout.write("LOADGEN " + orjson.dumps(result).decode() + "\n")
        return 0
    if not args.bootstrap:
        p.error("--bootstrap is required")
    figures = asyncio.run(run(args.bootstrap, args.workdir, args.quick, args.tool))
    sys.stdout.write(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
