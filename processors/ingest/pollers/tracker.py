"""Which messages to poll, and when: pure logic, the clock is always passed in.

The tracker is fed the public `message.status` stream (every message registered through
`/v1/events` or seen in a webhook appears there once the worker applied its first
status) and answers "which message of this provider is due now?". Nothing here does I/O,
so the rules (finality per channel, max age, backoff, the rate limit's token bucket)
are tested on a simulated clock (tests/unit/test_poll_tracker.py).
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from processors.model import ENGAGEMENT, FAILURES, INBOUND, RANK, parse_time
from processors.transitions import APPLIED, CONFLICT, MessageState, classify

# Channels whose last receipt is `read` (PROVIDERS.md capability table, poll-only
# providers): WhatsApp. `played` only comes by webhook, so `read` is final enough.
READ_FINAL_CHANNELS: frozenset[str] = frozenset({"whatsapp"})
# The recipient deleted it: nothing more will be reported (Octopods DELETED).
FINAL_ENGAGEMENT: frozenset[str] = frozenset({"deleted"})
_DONE_KEEP = 200_000  # finished keys remembered, so a late event does not restart polling

# Drop reasons (metric label values).
FINAL = "final"
EXPIRED = "expired"
NOT_FOUND = "not_found"
BAD_REQUEST = "bad_request"


def is_final(channel: str | None, status: str | None) -> bool:
    """Nothing left to learn by polling: a failure, or the channel's last receipt."""
    if status is None:
        return False
    if status in FAILURES or status in INBOUND or status in FINAL_ENGAGEMENT:
        return True
    if status not in RANK:
        return False
    last = "read" if channel in READ_FINAL_CHANNELS else "delivered"
    return RANK[status] >= RANK[last]


def is_news(known_status: str | None, statuses: Iterable[str], dead: int = 0) -> bool:
    """Would publishing an answer that parses to `statuses` change or record anything?

    An answer repeating what `message.status` already says (`sent` while `sent`) is not
    published; one the ordering agent would apply, or record as a conflict, is; so is one
    that dead-letters (an operator must see an unknown word).
    """
    if dead:
        return True
    state = MessageState(status=known_status)
    return any(classify(state, status) in (APPLIED, CONFLICT) for status in statuses)


def digest(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=16).digest()


def backoff_delay(failures: int, base: float, cap: float) -> float:
    """Clamped exponential backoff: base, 2 base, 4 base, ... never above cap."""
    if failures <= 0:
        return 0.0
    exponent = min(failures - 1, 62)  # 2**62 * base overflows nothing, then clamps
    return min(cap, base * math.pow(2.0, exponent))


@dataclass(slots=True)
class Backoff:
    """A provider-wide pause after 429, 5xx or transport errors; reset by a success."""

    base: float = 1.0
    cap: float = 300.0
    failures: int = 0
    until: float = 0.0

    def failure(self, now: float, retry_after: float | None = None) -> float:
        """Pause after a failed poll; returns the pause. Answers to polls sent before the
        pause began (in flight together) count as one failure, not one each."""
        if now < self.until:
            if retry_after is not None:
                self.until = max(self.until, now + min(self.cap, retry_after))
            return self.until - now
        self.failures += 1
        delay = backoff_delay(self.failures, self.base, self.cap)
        if retry_after is not None and retry_after > delay:
            delay = min(self.cap, retry_after)  # the provider's word, clamped too
        self.until = max(self.until, now + delay)
        return delay

    def success(self) -> None:
        self.failures = 0

    def wait(self, now: float) -> float:
        return max(0.0, self.until - now)

    @property
    def probing(self) -> bool:
        """After a failure, one request at a time until one succeeds."""
        return self.failures > 0


@dataclass(slots=True)
class TokenBucket:
    """Requests allowed by a provider's rate limit, shared by every message.

    Over any window of T seconds at most `capacity + rate * T` tokens can be taken, so
    `for_limit` sizes both so that any window of `period + slack` seconds stays within
    the limit: the slack absorbs network jitter between our clock and the provider's.
    """

    rate: float  # tokens per second
    capacity: float
    tokens: float
    last: float

    @classmethod
    def for_limit(
        cls, limit: int, now: float, period: float = 60.0, slack: float = 5.0
    ) -> TokenBucket:
        if limit < 1:
            raise ValueError("a rate limit must allow at least one request per period")
        capacity = float(max(1, limit // 20))  # a small burst, then polls are spread
        rate = (limit - capacity) / (period + slack) if limit > capacity else 0.0
        if rate <= 0.0:
            capacity, rate = 1.0, 1.0 / (period + slack)  # a limit of one per period
        return cls(rate=rate, capacity=capacity, tokens=capacity, last=now)

    def _refill(self, now: float) -> None:
        if now > self.last:
            self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
            self.last = now

    def try_take(self, now: float) -> float:
        """0.0 when a token was taken, else the seconds until one will be there."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate

    def refund(self, now: float) -> None:
        """Give back a token taken for nothing (no message was due after all)."""
        self._refill(now)
        self.tokens = min(self.capacity, self.tokens + 1.0)


@dataclass(frozen=True, slots=True)
class PollSpec:
    """What the tracker must know of a poll-only provider."""

    provider: str
    channels: frozenset[str]  # channels it can be asked about
    default_channel: str | None = None  # used when a message's channel is `api` or unset
    needs_account: bool = False  # RyzeAPI polls per instance: no account, no poll
    jitter: tuple[float, float] = (0.8, 1.2)  # interval multiplier range


@dataclass(slots=True)
class Pending:
    key: str
    provider: str
    message_id: str
    channel: str
    account: str | None
    partition: int
    first_seen: float
    status: str | None
    due: float
    polls: int = 0
    in_flight: bool = False
    published: bytes | None = None  # digest of the last answer published for it


@dataclass(slots=True)
class Observed:
    """What observe() did with one message.status event (for tests and metrics)."""

    # added | updated | finished (was pending, now final) | final | expired | ignored
    outcome: str
    key: str | None = None


@dataclass
class Tracker:
    specs: Mapping[str, PollSpec]
    interval: float = 15.0
    max_age: float = 72 * 3600.0
    rng: random.Random = field(default_factory=random.Random)
    pending: dict[str, Pending] = field(default_factory=dict)
    done: OrderedDict[str, str] = field(default_factory=OrderedDict)  # key -> why
    _heaps: dict[str, list[tuple[float, int, str]]] = field(default_factory=dict)
    _seq: int = 0

    # --- learning ---------------------------------------------------------------------

    def observe(self, data: Mapping[str, Any], partition: int, now: float) -> Observed:
        """Feed one `message.status` event's `data`."""
        provider = data.get("provider")
        spec = self.specs.get(provider) if isinstance(provider, str) else None
        message_id = data.get("provider_message_id")
        if spec is None or not isinstance(message_id, str) or not message_id:
            return Observed("ignored")
        key = f"{provider}:{message_id}"
        if key in self.done:
            return Observed("ignored", key)
        status = data.get("status")
        channel = data.get("channel")
        if channel in (None, "api") and spec.default_channel:
            channel = spec.default_channel
        current = self.pending.get(key)
        if status in ENGAGEMENT and status not in FINAL_ENGAGEMENT:
            return Observed("ignored", key)
        if is_final(channel, status):
            if current is not None:
                self._finish(key, FINAL)
                return Observed("finished", key)
            self._remember(key, FINAL)
            return Observed("final", key)
        if current is not None:
            if isinstance(status, str):
                current.status = status  # message.status never regresses
            return Observed("updated", key)
        account = data.get("account") if isinstance(data.get("account"), str) else None
        if channel not in spec.channels or (spec.needs_account and not account):
            return Observed("ignored", key)
        seen = _event_time(data, now)
        if now - seen > self.max_age:
            self._remember(key, EXPIRED)
            return Observed("expired", key)
        # First poll one interval after the message was told, at once for old ones.
        due = max(now, seen + self._pause(spec))
        self.pending[key] = Pending(
            key=key,
            provider=spec.provider,
            message_id=message_id,
            channel=channel,
            account=account,
            partition=partition,
            first_seen=seen,
            status=status if isinstance(status, str) else None,
            due=due,
        )
        self._push(spec.provider, due, key)
        return Observed("added", key)

    def revoke(self, partitions: Iterable[int]) -> int:
        """Forget the pending messages of partitions this poller no longer owns."""
        gone = set(partitions)
        keys = [k for k, p in self.pending.items() if p.partition in gone]
        for key in keys:
            del self.pending[key]
        return len(keys)

    # --- scheduling -------------------------------------------------------------------

    def next_due(self, provider: str) -> float | None:
        """When the provider's earliest waiting message is due (None: nothing waits)."""
        heap = self._heaps.get(provider)
        while heap:
            due, _, key = heap[0]
            item = self.pending.get(key)
            if item is None or item.in_flight or item.due != due:
                heapq.heappop(heap)  # stale entry
                continue
            return due
        return None

    def take(self, provider: str, now: float) -> Pending | None:
        """The provider's most overdue message, marked in flight; None if none is due."""
        due = self.next_due(provider)
        if due is None or due > now:
            return None
        _, _, key = heapq.heappop(self._heaps[provider])
        item = self.pending[key]
        item.in_flight = True
        return item

    def polled(self, key: str, now: float, published: bytes | None = None) -> None:
        """A poll of `key` was answered; schedule the next one (or let it age out)."""
        item = self.pending.get(key)
        if item is None:
            return
        item.in_flight = False
        item.polls += 1
        if published is not None:
            item.published = published
        if now - item.first_seen > self.max_age:
            self._finish(key, EXPIRED)
            return
        self._schedule(item, now + self._pause(self.specs[item.provider]))

    def retry(self, key: str, at: float) -> None:
        """Poll `key` again at `at` (after a backoff, or when publishing failed)."""
        item = self.pending.get(key)
        if item is not None:
            item.in_flight = False
            self._schedule(item, at)

    def drop(self, key: str, reason: str) -> bool:
        if key not in self.pending:
            return False
        self._finish(key, reason)
        return True

    def expire(self, now: float) -> list[str]:
        """Stop polling messages first seen more than max_age ago."""
        old = [k for k, p in self.pending.items() if now - p.first_seen > self.max_age]
        for key in old:
            self._finish(key, EXPIRED)
        return old

    def count(self, provider: str) -> int:
        return sum(1 for p in self.pending.values() if p.provider == provider)

    # --- internals --------------------------------------------------------------------

    def _pause(self, spec: PollSpec) -> float:
        low, high = spec.jitter
        return self.interval * self.rng.uniform(low, high)

    def _schedule(self, item: Pending, due: float) -> None:
        item.due = due
        self._push(item.provider, due, item.key)

    def _push(self, provider: str, due: float, key: str) -> None:
        self._seq += 1
        heapq.heappush(self._heaps.setdefault(provider, []), (due, self._seq, key))

    def _finish(self, key: str, reason: str) -> None:
        self.pending.pop(key, None)
        self._remember(key, reason)

    def _remember(self, key: str, reason: str) -> None:
        self.done[key] = reason
        self.done.move_to_end(key)
        while len(self.done) > _DONE_KEEP:
            self.done.popitem(last=False)


def _event_time(data: Mapping[str, Any], now: float) -> float:
    """When msgstatus first heard of the message (its first event), never in the future."""
    for name in ("observed_at", "emitted_at", "occurred_at"):
        try:
            value = parse_time(data.get(name))
        except (TypeError, ValueError, OverflowError):
            value = None
        if value is not None and math.isfinite(value):
            return min(value, now)
    return now
