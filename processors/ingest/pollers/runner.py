"""`msgstatus poller`: learn pending messages from `message.status`, poll, write raw records.

One consumer (group `<prefix>msgstatus-poller`) reads `message.status` from the start of
every partition it is assigned, so the set of pending messages is rebuilt from the log on
each start and nothing needs storing elsewhere; with several pollers each polls the
messages of its own partitions (each with the whole rate limit: run one per provider
account). Per provider one loop takes the most overdue message, waits for a token of the
provider's rate limit (shared by all messages), and polls; answers that say something new
go to `raw.<provider>` exactly like a webhook, marked as polled (DESIGN.md section 1).

Settings (environment; URLs and tokens may also come from the MSGSTATUS_CONFIG file):
MSGSTATUS_RYZE_API_URL / _API_TOKEN / MSGSTATUS_RYZE_RATE_LIMIT (100 per minute),
MSGSTATUS_OCTOPODS_API_URL / _API_TOKEN / MSGSTATUS_OCTOPODS_RATE_LIMIT (60, assumed),
MSGSTATUS_POLL_INTERVAL (15 s), MSGSTATUS_POLL_MAX_AGE (72 h), MSGSTATUS_POLL_BACKOFF_MAX
(300 s), MSGSTATUS_POLL_CONCURRENCY (4 requests in flight per provider),
MSGSTATUS_POLL_TIMEOUT (10 s per request), MSGSTATUS_POLLER_METRICS_PORT (6067, 0: off).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from prometheus_client import Counter, Gauge, start_http_server

from processors import dependencies, providers
from processors.config import ConfigError, PollerConfig, Settings
from processors.ingest.pollers import MODULES
from processors.ingest.pollers.tracker import (
    BAD_REQUEST,
    EXPIRED,
    FINAL,
    NOT_FOUND,
    Backoff,
    Pending,
    TokenBucket,
    Tracker,
    digest,
    is_news,
)
from processors.ingest.producer import KafkaRawSink, KafkaUnavailable, RawSink
from processors.kafka import client as kafka_client
from processors.kafka import raw
from processors.kafka.topics import STATUS, ensure_topics, raw_topic
from processors.ops.lag import CONSUMER_LAG
from processors.providers.base import FramingError, WebhookRequest

log = logging.getLogger("msgstatus.poller")

# Labels are bounded: provider, outcome, reason. Never a message id.
POLLS = Counter(
    "msgstatus_poller_polls_total", "Status polls by provider and outcome", ["provider", "outcome"]
)
PENDING = Gauge(
    "msgstatus_poller_pending_messages", "Messages not final yet, still polled", ["provider"]
)
RATE_WAITS = Counter(
    "msgstatus_poller_rate_limit_waits_total",
    "Times a poll waited for the provider's rate limit",
    ["provider"],
)
RATE_WAIT_SECONDS = Counter(
    "msgstatus_poller_rate_limit_wait_seconds_total",
    "Seconds polls spent waiting for the provider's rate limit",
    ["provider"],
)
DROPPED = Counter(
    "msgstatus_poller_dropped_total",
    "Messages no longer polled, by reason (final, expired, not_found, bad_request)",
    ["provider", "reason"],
)
STOPPED = Gauge(
    "msgstatus_poller_provider_stopped",
    "1 when polling a provider stopped because it refused our token (401/403)",
    ["provider"],
)
BACKOFF = Gauge(
    "msgstatus_poller_backoff_seconds", "Current pause after 429/5xx answers", ["provider"]
)
STATUS_EVENTS = Counter(
    "msgstatus_poller_status_events_total", "message.status events read by the poller"
)
LAST_POLL = Gauge(
    "msgstatus_poller_last_poll_timestamp_seconds",
    "Unix time the provider last answered a status poll (or the poller started)",
    ["provider"],
)
HEALTH_EVERY = 5.0

# Poll outcomes (label values of msgstatus_poller_polls_total).
PUBLISHED = "published"
UNCHANGED = "unchanged"
UNAUTHORIZED = "unauthorized"
RATE_LIMITED = "rate_limited"
SERVER_ERROR = "server_error"
TRANSPORT_ERROR = "transport_error"
PUBLISH_FAILED = "publish_failed"

MAX_ANSWER_BYTES = 1_048_576
PUBLISH_RETRY_SECONDS = 5.0
GROUP = "msgstatus-poller"


@dataclass(frozen=True, slots=True)
class Target:
    """A poll-only provider with its API configured."""

    name: str
    module: ModuleType
    base_url: str
    token: str
    rate_limit: int


def targets(settings: Settings) -> list[Target]:
    """Every poll-only provider whose API URL and token are set (the others are off)."""
    found: list[Target] = []
    for name, module in MODULES.items():
        url = settings.poll_api_url(name)
        token = settings.secret(module.TOKEN_SETTING)
        if not url and not token:
            continue
        if not url or not token:
            missing = module.URL_SETTING if not url else module.TOKEN_SETTING
            raise ConfigError(f"{name} polling needs MSGSTATUS_{missing} as well")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"MSGSTATUS_{module.URL_SETTING} must be an http(s) URL")
        limit = settings.poller.rate_limits.get(name, module.DEFAULT_RATE_LIMIT)
        found.append(Target(name, module, url, token, limit))
    return found


@dataclass
class ProviderState:
    target: Target
    bucket: TokenBucket
    backoff: Backoff
    slots: asyncio.Semaphore
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    stopped: bool = False
    inflight: int = 0


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After in seconds (the HTTP-date form is rare for APIs: ignored)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


class Poller:
    def __init__(
        self,
        settings: Settings,
        config: PollerConfig,
        configured: list[Target],
        sink: RawSink,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.sink = sink
        self.clock = clock
        self.tracker = Tracker(
            {t.name: t.module.SPEC for t in configured},
            interval=config.interval,
            max_age=config.max_age,
            rng=rng or random.Random(),
        )
        now = clock()
        self.states = {
            t.name: ProviderState(
                target=t,
                bucket=TokenBucket.for_limit(t.rate_limit, now),
                backoff=Backoff(base=config.backoff_base, cap=config.backoff_max),
                slots=asyncio.Semaphore(config.concurrency),
            )
            for t in configured
        }
        self._inflight: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._lag_labels: set[tuple[str, str, str]] = set()
        for name in self.states:
            STOPPED.labels(name).set(0)
            PENDING.labels(name).set(0)
            LAST_POLL.labels(name).set(now)

    # --- running ----------------------------------------------------------------------

    async def run(self, consume: bool = True) -> None:
        """Poll until cancelled; `consume=False` leaves feeding to the caller (`learn`)."""
        timeout = aiohttp.ClientTimeout(total=self.config.request_timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            self._session = session
            tasks = [
                asyncio.create_task(self._housekeeping(), name="poller-housekeeping"),
                asyncio.create_task(self._health(), name="poller-health"),
            ]
            if consume:
                tasks.append(asyncio.create_task(self._consume(), name="poller-consume"))
            tasks += [
                asyncio.create_task(self._provider_loop(state), name=f"poller-{name}")
                for name, state in self.states.items()
            ]
            try:
                await asyncio.gather(*tasks)
            finally:
                for task in [*tasks, *self._inflight]:
                    task.cancel()
                await asyncio.gather(*tasks, *self._inflight, return_exceptions=True)

    async def _consume(self) -> None:
        consumer = AIOKafkaConsumer(
            **kafka_client.client_kwargs(self.settings),
            group_id=self.settings.topic(GROUP),
            auto_offset_reset="earliest",
            enable_auto_commit=False,  # state is rebuilt from the log, never committed
            session_timeout_ms=int(self.settings.session_timeout * 1000),
            heartbeat_interval_ms=int(max(0.5, self.settings.session_timeout / 10) * 1000),
        )
        consumer.subscribe([self.settings.topic(STATUS)], listener=_Rebalance(self, consumer))
        await consumer.start()
        self._consumer = consumer
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
                now = self.clock()
                for records in batch.values():
                    for record in records:
                        self.learn(record.value, record.partition, now)
        finally:
            self._consumer = None
            await consumer.stop()

    def learn(self, value: bytes | None, partition: int, now: float) -> None:
        """Feed one `message.status` record (CloudEvent JSON)."""
        STATUS_EVENTS.inc()
        try:
            data = orjson.loads(value or b"")["data"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return  # not ours to judge: the worker validated what it emitted
        if not isinstance(data, dict):
            return
        seen = self.tracker.observe(data, partition, now)
        provider = data.get("provider")
        if seen.outcome == "added":
            self.states[provider].wake.set()
        elif seen.outcome == "finished":
            DROPPED.labels(provider, FINAL).inc()
        elif seen.outcome == "expired":
            DROPPED.labels(provider, EXPIRED).inc()

    async def _housekeeping(self) -> None:
        while True:
            now = self.clock()
            for key in self.tracker.expire(now):
                DROPPED.labels(key.split(":", 1)[0], EXPIRED).inc()
            for name, state in self.states.items():
                PENDING.labels(name).set(self.tracker.count(name))
                BACKOFF.labels(name).set(round(state.backoff.wait(now), 3))
            await self._export_lag()
            await asyncio.sleep(1.0)

    async def _export_lag(self) -> None:
        """The poller's own lag on `message.status`: it commits no offsets (it rebuilds
        its state from the log), so lag is the log end minus its reading position."""
        consumer = self._consumer
        if consumer is None:
            return
        group = self.settings.topic(GROUP)
        exported = set()
        for tp in consumer.assignment():
            end = consumer.highwater(tp)
            if end is None:
                continue
            try:
                position = await consumer.position(tp)
            except Exception:  # mid-rebalance: next round
                continue
            labels = (group, tp.topic, str(tp.partition))
            CONSUMER_LAG.labels(*labels).set(max(0, end - position))
            exported.add(labels)
        for gone in self._lag_labels - exported:
            CONSUMER_LAG.remove(*gone)
        self._lag_labels = exported

    async def _health(self) -> None:
        while True:
            await dependencies.check({dependencies.KAFKA: self.sink.ready})
            await asyncio.sleep(HEALTH_EVERY)

    async def _provider_loop(self, state: ProviderState) -> None:
        name = state.target.name
        while not state.stopped:
            now = self.clock()
            pause = state.backoff.wait(now)
            if pause > 0:
                await asyncio.sleep(min(pause, 1.0))
                continue
            if state.backoff.probing and state.inflight:
                await asyncio.sleep(0.05)  # after a failure: one probe at a time
                continue
            due = self.tracker.next_due(name)
            if due is None or due > now:
                state.wake.clear()
                wait = 1.0 if due is None else min(1.0, due - now)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(state.wake.wait(), wait)
                continue
            await state.slots.acquire()
            item: Pending | None = None
            try:
                if await self._token(state):
                    item = self.tracker.take(name, self.clock())
                    if item is None:
                        state.bucket.refund(self.clock())
            finally:
                if item is None:
                    state.slots.release()
            if item is not None:
                state.inflight += 1
                task = asyncio.create_task(self._poll(state, item))
                self._inflight.add(task)
                task.add_done_callback(self._done(state))

    def _done(self, state: ProviderState) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            self._inflight.discard(task)
            state.inflight -= 1
            state.slots.release()
            if not task.cancelled() and task.exception() is not None:
                log.error("poll task failed", exc_info=task.exception())

        return done

    async def _token(self, state: ProviderState) -> bool:
        """Wait for a token of the provider's rate limit; False if polling must pause."""
        waited = False
        while True:
            now = self.clock()
            if state.stopped:
                return False
            if state.backoff.wait(now) > 0:
                return False
            delay = state.bucket.try_take(now)
            if delay <= 0:
                return True
            if not waited:
                RATE_WAITS.labels(state.target.name).inc()
                waited = True
            RATE_WAIT_SECONDS.labels(state.target.name).inc(delay)
            await asyncio.sleep(delay)

    # --- one poll ---------------------------------------------------------------------

    async def _poll(self, state: ProviderState, item: Pending) -> None:
        target = state.target
        url, headers = target.module.request(target.base_url, target.token, item)
        assert self._session is not None
        try:
            async with self._session.get(url, headers=headers, allow_redirects=False) as answer:
                body = await answer.content.read(MAX_ANSWER_BYTES)
                code = answer.status
                content_type = answer.headers.get("Content-Type", "application/json")
                retry_after = retry_after_seconds(answer.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._transient(state, item, TRANSPORT_ERROR, None, type(exc).__name__)
            return
        LAST_POLL.labels(target.name).set(self.clock())
        if code == 200:
            state.backoff.success()
            await self._answered(state, item, url, body, content_type)
        elif code in (401, 403):
            POLLS.labels(target.name, UNAUTHORIZED).inc()
            self.tracker.retry(item.key, math.inf)  # kept, never due again
            self._stop(state, code, target.module.error_message(body))
        elif code in (404, 410):
            POLLS.labels(target.name, NOT_FOUND).inc()
            if self.tracker.drop(item.key, NOT_FOUND):
                DROPPED.labels(target.name, NOT_FOUND).inc()
            log.info("%s: %s not found (%s): no longer polled", target.name, item.key, code)
        elif code in (408, 425, 429) or code >= 500 or code < 400:
            outcome = RATE_LIMITED if code == 429 else SERVER_ERROR
            self._transient(state, item, outcome, retry_after, f"HTTP {code}")
        else:
            POLLS.labels(target.name, BAD_REQUEST).inc()
            if self.tracker.drop(item.key, BAD_REQUEST):
                DROPPED.labels(target.name, BAD_REQUEST).inc()
            log.warning(
                "%s answered %s to the status poll of %s (%s): no longer polled",
                target.name,
                code,
                item.key,
                target.module.error_message(body) or "no error message",
            )

    async def _answered(
        self, state: ProviderState, item: Pending, url: str, body: bytes, content_type: str
    ) -> None:
        name = state.target.name
        now = self.clock()
        fingerprint = digest(body)
        if item.published == fingerprint:
            POLLS.labels(name, UNCHANGED).inc()
            self.tracker.polled(item.key, now)
            return
        request = WebhookRequest(
            provider=name,
            method="GET",
            url=url,
            headers={"content-type": content_type},
            body=body,
            received_at=now,
            polled=True,
        )
        parser = providers.get(name)
        if parser is not None:
            try:
                parsed = parser.parse(request)
            except FramingError:
                self._transient(state, item, SERVER_ERROR, None, "answer is not JSON")
                return
            statuses = [event.status for event in parsed.events]
            if not is_news(item.status, statuses, len(parsed.dead)):
                POLLS.labels(name, UNCHANGED).inc()
                self.tracker.polled(item.key, now)
                return
        record = raw.encode(raw_topic(self.settings, name), request, ())
        try:
            await self.sink.publish(record)
        except KafkaUnavailable as exc:
            POLLS.labels(name, PUBLISH_FAILED).inc()
            log.warning("%s: could not write a poll answer to Kafka (%s); retrying", name, exc)
            self.tracker.retry(item.key, now + PUBLISH_RETRY_SECONDS)
            return
        POLLS.labels(name, PUBLISHED).inc()
        self.tracker.polled(item.key, now, published=fingerprint)

    def _transient(
        self,
        state: ProviderState,
        item: Pending,
        outcome: str,
        retry_after: float | None,
        why: str,
    ) -> None:
        name = state.target.name
        POLLS.labels(name, outcome).inc()
        now = self.clock()
        delay = state.backoff.failure(now, retry_after)
        self.tracker.retry(item.key, state.backoff.until)
        log.warning("%s: %s on a status poll; pausing %s polls for %.1fs", name, why, name, delay)

    def _stop(self, state: ProviderState, code: int, message: str | None) -> None:
        if state.stopped:
            return
        state.stopped = True
        target = state.target
        STOPPED.labels(target.name).set(1)
        log.error(
            "POLLING %s STOPPED: its API answered %s (%s) to a status poll: the token in "
            "MSGSTATUS_%s is not accepted. No %s message is polled until the token is fixed "
            "and the poller restarted.",
            target.name.upper(),
            code,
            message or "no error message",
            target.module.TOKEN_SETTING,
            target.name,
        )


class _Rebalance(ConsumerRebalanceListener):
    """Owned partitions are read from their start; revoked ones are forgotten."""

    def __init__(self, poller: Poller, consumer: AIOKafkaConsumer) -> None:
        self.poller = poller
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked) -> None:  # type: ignore[no-untyped-def]
        self.poller.tracker.revoke(tp.partition for tp in revoked)

    async def on_partitions_assigned(self, assigned) -> None:  # type: ignore[no-untyped-def]
        if assigned:
            await self.consumer.seek_to_beginning(*assigned)


# --- process entry point -------------------------------------------------------------------


async def _main(settings: Settings, config: PollerConfig, configured: list[Target]) -> None:
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, main.cancel)
    topics = [settings.topic(STATUS)] + [raw_topic(settings, t.name) for t in configured]
    sink = KafkaRawSink(settings)
    connect: asyncio.Task[None] | None = None
    try:
        await ensure_topics(settings, topics)
        connect = asyncio.create_task(sink.start_when_reachable())
        await Poller(settings, config, configured, sink).run()
    except asyncio.CancelledError:
        log.warning("poller stopping")
    finally:
        if connect is not None:
            connect.cancel()
            await asyncio.gather(connect, return_exceptions=True)
        await sink.stop()


def run(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; 0 after a clean stop, 2 when nothing can be polled."""
    try:
        config = PollerConfig.from_settings(settings)
        configured = targets(settings)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    if not configured:
        names = ", ".join(
            f"MSGSTATUS_{m.URL_SETTING} + MSGSTATUS_{m.TOKEN_SETTING}" for m in MODULES.values()
        )
        log.error("no poll-only provider is configured: set %s", names)
        return 2
    for target in configured:
        if providers.get(target.name) is None:
            log.warning(
                "%s has no parser in processors.providers: its answers are kept in %s "
                "and normalized once one is registered",
                target.name,
                raw_topic(settings, target.name),
            )
    if config.metrics_port:
        start_http_server(config.metrics_port, addr=settings.http_host)
    log.warning(
        "poller started for %s",
        ", ".join(f"{t.name} ({t.rate_limit}/min)" for t in configured),
    )
    asyncio.run(_main(settings, config, configured))
    return 0
