"""`msgstatus poller`: learn pending messages from `message.status`, poll, write raw records.

One consumer (group `<prefix>msgstatus-poller`) reads `message.status` from the start of
every partition it is assigned, so the set of pending messages is rebuilt from the log on
each start and nothing needs storing elsewhere; with several pollers each polls the
messages of its own partitions (each with the whole rate limit: run one per provider
account). Per provider one loop takes the most overdue message, waits for a token of the
provider's rate limit (shared by all messages), and polls; answers that say something new
go to `raw.<provider>` exactly like a webhook, marked as polled (DESIGN.md section 1).

It also answers the worker's poll requests (`status.pollrequests`, asks.py): a message
about to be declared `delivery_unknown` is polled once, ahead of the routine polls and
within the same rate limit, and the request is committed once its answer is written.

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
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition
from prometheus_client import Counter, Gauge, start_http_server

from processors import dependencies, providers
from processors.config import ConfigError, PollerConfig, Settings
from processors.ingest.pollers import MODULES, asks
from processors.ingest.pollers.asks import Ask, RequestOffsets
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
from processors.kafka.topics import POLL_REQUESTS, STATUS, ensure_topics, raw_topic
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
ASKED = Counter(
    "msgstatus_poller_asked_total",
    "Poll requests before delivery_unknown, by provider and outcome",
    ["provider", "outcome"],
)
ASKS_WAITING = Gauge(
    "msgstatus_poller_asks_waiting", "Poll requests not answered yet", ["provider"]
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
RETRIED = frozenset({RATE_LIMITED, SERVER_ERROR, TRANSPORT_ERROR, PUBLISH_FAILED})
KAFKA_RETRY_SECONDS = 2.0


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
    asks: list[Ask] = field(default_factory=list)  # poll requests waiting, oldest first


@dataclass(frozen=True, slots=True)
class Result:
    """How one poll went: the outcome, when to try again, the digest of what was written."""

    outcome: str
    retry_at: float = 0.0
    published: bytes | None = None


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
        self.request_offsets = RequestOffsets()
        self._lag_labels: set[tuple[str, str, str]] = set()
        for name in self.states:
            STOPPED.labels(name).set(0)
            PENDING.labels(name).set(0)
            LAST_POLL.labels(name).set(now)
            ASKS_WAITING.labels(name).set(0)

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
                tasks.append(asyncio.create_task(self._requests(), name="poller-requests"))
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

    def _new_consumer(self, group: str) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            **kafka_client.client_kwargs(self.settings),
            group_id=self.settings.topic(group),
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=int(self.settings.session_timeout * 1000),
            heartbeat_interval_ms=int(max(0.5, self.settings.session_timeout / 10) * 1000),
        )

    async def _started(self, group: str, topic: str, listener: Callable) -> AIOKafkaConsumer:
        """A started consumer of `topic`; waits (retrying) while Kafka is unreachable."""
        while True:
            consumer = self._new_consumer(group)
            consumer.subscribe([self.settings.topic(topic)], listener=listener(consumer))
            try:
                await consumer.start()
                return consumer
            except (KafkaError, OSError) as exc:
                log.warning("Kafka not reachable (%s); retrying", type(exc).__name__)
                await consumer.stop()
                await asyncio.sleep(KAFKA_RETRY_SECONDS)

    async def _consume(self) -> None:
        # state is rebuilt from the log on every start: offsets are never committed
        consumer = await self._started(GROUP, STATUS, lambda c: _Rebalance(self, c))
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

    # --- poll requests (asks.py) --------------------------------------------------------

    async def _requests(self) -> None:
        """Read `status.pollrequests`, commit each partition up to its oldest open request."""
        consumer = await self._started(
            asks.GROUP, POLL_REQUESTS, lambda c: _RequestsRebalance(self, c)
        )
        paused = False
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=1000, max_records=500)
                now = self.clock()
                for tp, records in batch.items():
                    for record in records:
                        self.ask(record.value, tp, record.offset, now)
                    self.request_offsets.read(tp, records[-1].offset + 1)
                await self.commit_requests(consumer)
                waiting = sum(len(state.asks) for state in self.states.values())
                if not paused and waiting >= asks.MAX_WAITING:
                    consumer.pause(*consumer.assignment())
                    paused = True
                elif paused and waiting < asks.MAX_WAITING // 2:
                    consumer.resume(*consumer.assignment())
                    paused = False
        finally:
            await consumer.stop()

    async def commit_requests(self, consumer: AIOKafkaConsumer) -> None:
        due = {tp: o for tp, o in self.request_offsets.due().items() if tp in consumer.assignment()}
        if not due:
            return
        try:
            await consumer.commit(due)
        except KafkaError as exc:  # Kafka away or a rebalance: the next round commits
            log.info("committing poll requests failed (%r); retrying", exc)
            return
        self.request_offsets.committed(due)

    def ask(self, value: bytes | None, tp: TopicPartition, offset: int, now: float) -> None:
        """Take one `status.pollrequests` record: queue its poll, or settle it at once."""
        self.request_offsets.opened(tp, offset)
        specs = {name: state.target.module.SPEC for name, state in self.states.items()}
        timeout = self.settings.delivery_unknown_ask_timeout
        found = asks.read_request(value, specs, tp, offset, timeout, now)
        if isinstance(found, str):
            provider = _provider_of(value)
            self._settle_ask(provider, tp, offset, found)
            return
        state = self.states[found.item.provider]
        if state.stopped:
            self._settle_ask(found.item.provider, tp, offset, UNAUTHORIZED)
            return
        tracked = self.tracker.pending.get(found.item.key)
        if tracked is not None:
            found.item.published = tracked.published  # an answer written before is not news
        state.asks.append(found)
        state.wake.set()

    def _settle_ask(self, provider: str, tp: TopicPartition, offset: int, outcome: str) -> None:
        ASKED.labels(provider, outcome).inc()
        self.request_offsets.answered(tp, offset)

    def _next_ask(self, state: ProviderState, now: float) -> tuple[Ask | None, float | None]:
        """The oldest request that may be polled now, else when the next one may be;
        requests past their timeout are settled as expired on the way."""
        soonest: float | None = None
        keep: list[Ask] = []
        chosen: Ask | None = None
        for entry in state.asks:
            if now >= entry.expires:
                self._settle_ask(state.target.name, entry.tp, entry.offset, asks.EXPIRED)
            elif chosen is None and entry.not_before <= now:
                chosen = entry
            else:
                keep.append(entry)
                soonest = entry.not_before if soonest is None else min(soonest, entry.not_before)
        state.asks = keep
        if chosen is not None:
            state.asks.insert(0, chosen)
        return chosen, soonest

    async def _poll_ask(self, state: ProviderState, entry: Ask) -> None:
        result = await self._poll(state, entry.item)
        outcome = result.outcome
        if outcome in RETRIED:
            if result.retry_at < entry.expires and not state.stopped:
                entry.not_before = result.retry_at
                state.asks.insert(0, entry)
                return
            outcome = asks.EXPIRED
        if result.published is not None:
            tracked = self.tracker.pending.get(entry.item.key)
            if tracked is not None:
                tracked.published = result.published
        self._settle_ask(state.target.name, entry.tp, entry.offset, outcome)

    def forget_requests(self, tps: list[TopicPartition]) -> None:
        """Partitions of `status.pollrequests` taken away: their new owner asks again."""
        gone = set(tps)
        for state in self.states.values():
            state.asks = [entry for entry in state.asks if entry.tp not in gone]
        self.request_offsets.forget(gone)

    # --- housekeeping -------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        while True:
            now = self.clock()
            for key in self.tracker.expire(now):
                DROPPED.labels(key.split(":", 1)[0], EXPIRED).inc()
            for name, state in self.states.items():
                PENDING.labels(name).set(self.tracker.count(name))
                ASKS_WAITING.labels(name).set(len(state.asks))
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
            entry, ask_at = self._next_ask(state, now)  # poll requests go first
            due = self.tracker.next_due(name)
            if entry is None and (due is None or due > now):
                state.wake.clear()
                soonest = min(t for t in (due, ask_at, now + 1.0) if t is not None)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(state.wake.wait(), max(0.0, soonest - now))
                continue
            await state.slots.acquire()
            job: Any = None
            try:
                if await self._token(state):
                    job = self._take(state, self.clock())
                    if job is None:
                        state.bucket.refund(self.clock())
            finally:
                if job is None:
                    state.slots.release()
            if job is not None:
                state.inflight += 1
                task = asyncio.create_task(job)
                self._inflight.add(task)
                task.add_done_callback(self._done(state))

    def _take(self, state: ProviderState, now: float) -> Any:
        """The next poll to run (a coroutine), a request first; None if nothing is due."""
        entry, _ = self._next_ask(state, now)
        if entry is not None:
            state.asks.remove(entry)
            return self._poll_ask(state, entry)
        item = self.tracker.take(state.target.name, now)
        return None if item is None else self._poll_tracked(state, item)

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

    async def _poll_tracked(self, state: ProviderState, item: Pending) -> None:
        """A routine poll: its result schedules the message's next one (or ends it)."""
        result = await self._poll(state, item)
        now = self.clock()
        outcome = result.outcome
        if outcome in (PUBLISHED, UNCHANGED):
            self.tracker.polled(item.key, now, published=result.published)
        elif outcome == UNAUTHORIZED:
            self.tracker.retry(item.key, math.inf)  # kept, never due again
        elif outcome in (NOT_FOUND, BAD_REQUEST):
            if self.tracker.drop(item.key, outcome):
                DROPPED.labels(item.provider, outcome).inc()
        else:
            self.tracker.retry(item.key, result.retry_at)

    async def _poll(self, state: ProviderState, item: Pending) -> Result:
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
            return self._transient(state, TRANSPORT_ERROR, None, type(exc).__name__)
        LAST_POLL.labels(target.name).set(self.clock())
        if code == 200:
            state.backoff.success()
            return await self._answered(state, item, url, body, content_type)
        if code in (401, 403):
            POLLS.labels(target.name, UNAUTHORIZED).inc()
            self._stop(state, code, target.module.error_message(body))
            return Result(UNAUTHORIZED)
        if code in (404, 410):
            POLLS.labels(target.name, NOT_FOUND).inc()
            log.info("%s: %s not found (%s): no longer polled", target.name, item.key, code)
            return Result(NOT_FOUND)
        if code in (408, 425, 429) or code >= 500 or code < 400:
            outcome = RATE_LIMITED if code == 429 else SERVER_ERROR
            return self._transient(state, outcome, retry_after, f"HTTP {code}")
        POLLS.labels(target.name, BAD_REQUEST).inc()
        log.warning(
            "%s answered %s to the status poll of %s (%s): no longer polled",
            target.name,
            code,
            item.key,
            target.module.error_message(body) or "no error message",
        )
        return Result(BAD_REQUEST)

    async def _answered(
        self, state: ProviderState, item: Pending, url: str, body: bytes, content_type: str
    ) -> Result:
        name = state.target.name
        now = self.clock()
        fingerprint = digest(body)
        if item.published == fingerprint:
            POLLS.labels(name, UNCHANGED).inc()
            return Result(UNCHANGED)
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
                return self._transient(state, SERVER_ERROR, None, "answer is not JSON")
            statuses = [event.status for event in parsed.events]
            if not is_news(item.status, statuses, len(parsed.dead)):
                POLLS.labels(name, UNCHANGED).inc()
                return Result(UNCHANGED)
        record = raw.encode(raw_topic(self.settings, name), request, ())
        try:
            await self.sink.publish(record)
        except KafkaUnavailable as exc:
            POLLS.labels(name, PUBLISH_FAILED).inc()
            log.warning("%s: could not write a poll answer to Kafka (%s); retrying", name, exc)
            return Result(PUBLISH_FAILED, retry_at=now + PUBLISH_RETRY_SECONDS)
        POLLS.labels(name, PUBLISHED).inc()
        return Result(PUBLISHED, published=fingerprint)

    def _transient(
        self, state: ProviderState, outcome: str, retry_after: float | None, why: str
    ) -> Result:
        """A failure that pauses the whole provider (429, 5xx, transport): backoff."""
        name = state.target.name
        POLLS.labels(name, outcome).inc()
        delay = state.backoff.failure(self.clock(), retry_after)
        log.warning("%s: %s on a status poll; pausing %s polls for %.1fs", name, why, name, delay)
        return Result(outcome, retry_at=state.backoff.until)

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
        waiting, state.asks = state.asks, []
        for entry in waiting:  # nobody can answer them: the deadlines fire after the timeout
            self._settle_ask(target.name, entry.tp, entry.offset, UNAUTHORIZED)


def _provider_of(value: bytes | None) -> str:
    """The provider a request names, for metric labels (bounded: known names or "-")."""
    try:
        provider = orjson.loads(value or b"").get("provider")
    except (orjson.JSONDecodeError, AttributeError):
        return "-"
    return provider if isinstance(provider, str) and provider in providers.REGISTRY else "-"


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


class _RequestsRebalance(ConsumerRebalanceListener):
    """Before poll requests move: commit what is answered; the new owner asks the rest."""

    def __init__(self, poller: Poller, consumer: AIOKafkaConsumer) -> None:
        self.poller = poller
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked) -> None:  # type: ignore[no-untyped-def]
        await self.poller.commit_requests(self.consumer)
        self.poller.forget_requests(list(revoked))

    async def on_partitions_assigned(self, assigned) -> None:  # type: ignore[no-untyped-def]
        return None


# --- process entry point -------------------------------------------------------------------


async def _main(settings: Settings, config: PollerConfig, configured: list[Target]) -> None:
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    stopping: list[int] = []

    def stop() -> None:
        # once: the supervisor forwards a signal the process group may have sent too, and
        # a second cancel would cut the clean-up short
        if not stopping:
            stopping.append(1)
            main.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    topics = [settings.topic(STATUS), settings.topic(POLL_REQUESTS)]
    topics += [raw_topic(settings, t.name) for t in configured]
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
