"""`msgstatus demo`: send messy signed provider traffic and show what comes out.

The point of msgstatus is only visible side by side: shuffled, duplicated and late
webhooks go in, one ordered stream per message comes out. So the demo posts the traffic
of `bench.traffic` to a running gateway, prints every `message.status` event of its
messages as one line while they arrive, and ends with a summary that says whether every
message ended in the status its provider path implies (exit 0) or not (exit 1).
Progress goes to stderr; the stream and the summary go to stdout (DESIGN.md section 10).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

import aiohttp
import orjson

from bench import traffic
from processors.config import Settings
from processors.kafka import client as kafka_client
from processors.kafka.topics import STATUS
from processors.model import ENGAGEMENT

# Secrets the demo signs with, named as `traffic.build_requests` expects them.
SECRET_NAMES = (
    "MSGSTATUS_TWILIO_AUTH_TOKEN",
    "MSGSTATUS_META_APP_SECRET",
    "MSGSTATUS_RYZE_TOKEN",
    "MSGSTATUS_EVENTS_TOKEN",
)
OUTCOMES_METRIC = "msgstatus_ordering_outcomes_total"
DRAIN_SECONDS = 1.5  # keep reading this long after the last final status: extras must show


class DemoError(RuntimeError):
    """Something the user has to fix before the demo can run; the message says what."""


@dataclass(slots=True)
class Progress:
    """What the consumer saw, per demo message."""

    expected: dict[str, str]
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    last: dict[str, str] = field(default_factory=dict)  # last non-engagement status
    finished_at: float | None = None

    def record(self, event: dict[str, Any]) -> None:
        data = event["data"]
        key = data["message_key"]
        self.events.setdefault(key, []).append(event)
        if data["status"] not in ENGAGEMENT:
            self.last[key] = data["status"]

    def wrong(self) -> dict[str, tuple[str | None, str]]:
        """Messages not (yet) in their expected final status: key -> (actual, expected)."""
        return {
            key: (self.last.get(key), want)
            for key, want in self.expected.items()
            if self.last.get(key) != want
        }


def demo_secrets(settings: Settings) -> dict[str, str]:
    """The secrets `traffic.build_requests` signs with; fails clearly if one is missing."""
    values = {
        "MSGSTATUS_TWILIO_AUTH_TOKEN": settings.secret("TWILIO_AUTH_TOKEN"),
        "MSGSTATUS_META_APP_SECRET": settings.secret("META_APP_SECRET"),
        "MSGSTATUS_RYZE_TOKEN": settings.secret("RYZE_TOKEN"),
        "MSGSTATUS_EVENTS_TOKEN": settings.events_token,
    }
    missing = [name for name in SECRET_NAMES if not values[name]]
    if missing:
        raise DemoError(
            f"{', '.join(missing)} not set: the demo signs its webhooks with the same secrets "
            "the gateway verifies them with (`make run` sets demo values)"
        )
    return {name: value for name, value in values.items() if value}


def _local_host(host: str) -> str:
    """A wildcard listen address is not something to connect to."""
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


def gateway_url(settings: Settings, override: str | None) -> str:
    """Where to post: --url, else the gateway's own MSGSTATUS_HTTP_HOST/PORT."""
    if override:
        return override.rstrip("/")
    return f"http://{_local_host(settings.http_host)}:{settings.http_port}"


def format_event(event: dict[str, Any]) -> str:
    """One readable line: emitted time, message key, #sequence, previous -> status, extras."""
    d = event["data"]
    emitted = (d.get("emitted_at") or "")[11:23] or "-"
    implied = f"  implied {','.join(d['implied'])}" if d.get("implied") else ""
    error = d.get("error") or {}
    err = f"  error={error.get('category', '?')}" if error else ""
    previous = d.get("previous_status") or "-"
    line = (
        f"{emitted}  {d['message_key']:<27} #{d['sequence']:<2} "
        f"{previous:>11} -> {d['status']:<11}{implied}{err}"
    )
    return line.rstrip()


def parse_outcomes(text: str) -> dict[str, float]:
    """`msgstatus_ordering_outcomes_total` by outcome from Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == OUTCOMES_METRIC and "outcome" in sample.labels:
                found[sample.labels["outcome"]] = sample.value
    return found


async def read_outcomes(session: aiohttp.ClientSession, url: str) -> dict[str, float] | None:
    """The worker's outcome counters, or None when its metrics endpoint is not reachable."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=3)) as resp:
            if resp.status != 200:
                return None
            return parse_outcomes(await resp.text())
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None


async def wait_for_gateway(session: aiohttp.ClientSession, url: str, timeout: float) -> None:
    """Posting into a gateway that is not there would only retry for minutes."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            async with session.get(f"{url}/readyz", timeout=aiohttp.ClientTimeout(total=3)) as r:
                if r.status == 200:
                    return
                last = f"HTTP {r.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            last = str(exc) or type(exc).__name__
        await asyncio.sleep(0.5)
    raise DemoError(f"gateway at {url} is not ready ({last}); is `msgstatus gateway` running?")


def _say(message: str) -> None:
    print(f"[demo] {message}", file=sys.stderr, flush=True)


async def _consume(
    settings: Settings, progress: Progress, posted: asyncio.Event, deadline: float, out: TextIO
) -> None:
    """Print this run's events from the start of the topic until all are final or timeout."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.errors import KafkaError

    consumer = AIOKafkaConsumer(
        settings.topic(STATUS),
        **kafka_client.client_kwargs(settings),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    try:
        await consumer.start()
    except KafkaError as exc:
        raise DemoError(f"cannot read from Kafka at {settings.kafka_bootstrap}: {exc}") from exc
    drain_until: float | None = None
    try:
        while True:
            now = time.monotonic()
            if drain_until is not None and now >= drain_until:
                return
            if drain_until is None and now >= deadline:
                return
            batch = await consumer.getmany(timeout_ms=300, max_records=2000)
            for records in batch.values():
                for record in records:
                    event = orjson.loads(record.value)
                    if event["data"]["message_key"] not in progress.expected:
                        continue  # an earlier run on the same topics
                    progress.record(event)
                    out.write(format_event(event) + "\n")
            out.flush()
            if drain_until is None and posted.is_set() and not progress.wrong():
                progress.finished_at = time.monotonic()
                drain_until = progress.finished_at + DRAIN_SECONDS
    finally:
        await consumer.stop()


def _counts(counter: Mapping[Any, int | float]) -> str:
    return ", ".join(f"{k} {int(v)}" for k, v in sorted(counter.items(), key=lambda kv: str(kv[0])))


@dataclass(slots=True)
class DemoRun:
    """Everything the summary reports on."""

    messages: list[traffic.Message]
    distinct: int  # requests before duplication
    requests: list[traffic.Request]  # as posted: shuffled, duplicated, late
    progress: Progress
    status_topic: str
    metrics_url: str
    timeout: float
    answers: dict[int, int] = field(default_factory=dict)
    outcomes: dict[str, float] | None = None  # worker ordering outcomes during this run
    elapsed: float = 0.0
    aborted: str | None = None  # why the demo stopped waiting early
    outcomes_since_start: bool = False  # no baseline: the worker's totals since it started

    @property
    def statuses(self) -> int:
        """Provider statuses posted (Meta batches several): what the worker will count."""
        return sum(len(r.keys) for r in self.requests)


def summary(run: DemoRun) -> str:
    """The closing report; its last line says OK or FAILED so scripts can grep it."""
    wrong = run.progress.wrong()
    total = len(run.messages)
    emitted = sum(len(events) for events in run.progress.events.values())
    finals = Counter(run.progress.last.get(key, "(no event)") for key in run.progress.expected)
    by_code = {f"HTTP {code}" if code else "no answer": n for code, n in run.answers.items()}
    lines = [
        "",
        "=== msgstatus demo summary ===",
        f"messages:          {total} ({_counts(Counter(m.provider for m in run.messages))})",
        f"requests posted:   {len(run.requests)} ({run.distinct} distinct + "
        f"{len(run.requests) - run.distinct} duplicates, {run.statuses} provider statuses)",
        f"answers:           {_counts(by_code) or '(posting did not finish)'}",
        f"events emitted:    {emitted} on {run.status_topic}",
        f"final statuses:    {_counts(finals)}",
        f"ended as expected: {total - len(wrong)}/{total}",
    ]
    if run.outcomes is not None:
        lines.append(
            f"dropped:           {int(run.outcomes.get('duplicate', 0))} duplicates, "
            f"{int(run.outcomes.get('stale', 0))} stale "
            f"(worker ordering outcomes{' since it started' if run.outcomes_since_start else ''}"
            f": {_counts(run.outcomes)})"
        )
    else:
        lines.append(f"dropped:           (worker metrics not reachable at {run.metrics_url})")
    if run.aborted:
        lines.append(f"aborted:           {run.aborted}")
    if wrong:
        examples = ", ".join(
            f"{key} is {got or 'unseen'} (want {want})"
            for key, (got, want) in list(wrong.items())[:5]
        )
        hint = "; no events at all: is `msgstatus worker` running?" if not emitted else ""
        hint = "" if run.aborted else hint
        gave_up = f"after {run.elapsed:.0f}s" if run.aborted else f"after {run.timeout:.0f}s"
        lines += [
            f"end-to-end:        gave up {gave_up}",
            f"demo FAILED: {len(wrong)} of {total} messages did not end as expected, "
            f"e.g. {examples}{hint}",
        ]
    else:
        lines += [
            f"end-to-end:        {run.elapsed:.1f}s from first request to last final status",
            f"demo OK: all {total} messages ended as expected",
        ]
    return "\n".join(lines) + "\n"


async def _settled_outcomes(
    session: aiohttp.ClientSession, run: DemoRun, before: dict[str, float]
) -> dict[str, float] | None:
    """This run's share of the worker's counters, once it counted every status we posted.

    Late duplicates can still be in flight when the last final status is out; they
    change nothing visible, so wait for them only briefly.
    """
    outcomes = None
    settle = time.monotonic() + 10
    while True:
        after = await read_outcomes(session, run.metrics_url)
        if after is None:
            return outcomes
        outcomes = {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}
        if sum(outcomes.values()) >= run.statuses or time.monotonic() >= settle:
            return outcomes
        await asyncio.sleep(0.5)


async def _watch_worker(
    session: aiohttp.ClientSession, metrics_url: str, before: dict[str, float] | None
) -> str:
    """Returns (ends the demo) only when a worker that answered stops answering.

    Without it a crashed worker would show up as a silent wait until the timeout.
    """
    if before is None:  # no metrics to watch: never give up early
        await asyncio.Event().wait()
    misses = 0
    while misses < 3:
        await asyncio.sleep(2)
        misses = misses + 1 if await read_outcomes(session, metrics_url) is None else 0
    return f"the worker stopped answering at {metrics_url}: it seems to have stopped, see its log"


async def _demo(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    count = int(getattr(args, "messages", 300))
    timeout = float(getattr(args, "timeout", None) or 120.0)
    secrets = demo_secrets(settings)
    url = gateway_url(settings, getattr(args, "url", None))
    # Twilio signs the URL it called; the gateway checks against PUBLIC_URL when set.
    signing_base = (settings.public_url or url).rstrip("/")

    rng = random.Random(getattr(args, "seed", 7))
    run_id = uuid.uuid4().hex[:6]  # fresh keys, so a rerun on the same topics is not a replay
    messages = traffic.make_messages(count, rng, run_id)
    distinct = traffic.build_requests(messages, signing_base, secrets, rng)
    run = DemoRun(
        messages=messages,
        distinct=len(distinct),
        requests=traffic.mess_up(distinct, rng),
        progress=Progress({m.key: m.expected for m in messages}),
        status_topic=settings.topic(STATUS),
        metrics_url=f"http://{_local_host(settings.http_host)}:{settings.metrics_port}/metrics",
        timeout=timeout,
    )

    async with aiohttp.ClientSession() as session:
        await wait_for_gateway(session, url, timeout=30)
        before = await read_outcomes(session, run.metrics_url) if settings.metrics_port else None
        _say(
            f"{count} messages as {len(run.requests)} requests ({len(run.requests) - run.distinct}"
            f" duplicates, shuffled, some late) -> {url}; reading {run.status_topic}"
        )
        started = time.monotonic()
        posted = asyncio.Event()

        async def post() -> None:
            run.answers.update(await traffic.post_all(url, run.requests))
            _say(f"posted {len(run.requests)} requests in {time.monotonic() - started:.1f}s")
            posted.set()

        poster = asyncio.create_task(post())
        consumer = asyncio.create_task(
            _consume(settings, run.progress, posted, started + timeout, out)
        )
        watchdog = asyncio.create_task(_watch_worker(session, run.metrics_url, before))
        try:
            await asyncio.wait({consumer, watchdog}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (poster, consumer, watchdog):
                task.cancel()
            await asyncio.gather(poster, consumer, watchdog, return_exceptions=True)
        if not consumer.cancelled() and (failure := consumer.exception()) is not None:
            raise failure
        if not poster.cancelled() and (failure := poster.exception()) is not None:
            raise DemoError(f"posting failed: {failure!r}")
        if not watchdog.cancelled():
            run.aborted = watchdog.result()
        run.elapsed = (run.progress.finished_at or time.monotonic()) - started
        if settings.metrics_port and not run.aborted:
            # A worker that only came up during the run counted nothing before it.
            run.outcomes_since_start = before is None
            run.outcomes = await _settled_outcomes(session, run, before or {})

    out.write(summary(run))
    out.flush()
    return 0 if not run.progress.wrong() else 1


def run_demo(settings: Settings, args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Entry point of `msgstatus demo`: 0 when every message ended as expected, else 1."""
    if getattr(args, "messages", 300) < 1:
        print("msgstatus demo: --messages must be at least 1", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_demo(settings, args, out or sys.stdout))
    except DemoError as exc:
        print(f"msgstatus demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("msgstatus demo: interrupted", file=sys.stderr)
        return 130
