"""Credentials a provider sends once (nonces, tokens, webhook ids), remembered briefly.

A scheme that signs a nonce or an id lets the gateway tell a replayed request from a
new one. One `SeenCache` per provider and gateway process holds each credential it
accepted, with a digest of the body it came with, for as long as the replay window
could still let the same credential through:

- the same credential with the same body is a provider's retry of a request already
  stored: answered 200 without writing it again;
- the same credential with another body is refused (401): for Mailgun, whose signature
  does not cover the events, this is what binds the events to the signature;
- a credential whose first request is still waiting for Kafka is answered 503 (retry).

Memory is bounded (`max_entries`, oldest forgotten first). The cache is per process:
docs/security.md says what that means for several gateways behind one address.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

# Outcomes of SeenCache.claim()
NEW, DUPLICATE, PENDING, CONFLICT = "new", "duplicate", "pending", "conflict"
MAX_ENTRIES = 100_000
MAX_KEY_CHARS = 256


@dataclass(frozen=True, slots=True)
class ReplayKey:
    """What a provider's `replay_key()` returns for a verified request."""

    key: str
    ttl: float  # seconds the credential must be remembered


def window_ttl(window: float, floor: float = 0.0) -> float:
    """How long to remember a credential signed with a timestamp checked against
    `window`: it passes while its timestamp is within the window on either side of the
    receive time, i.e. up to 2 x window after it was first seen (plus clock slack)."""
    return max(2 * window + 60.0, floor) if window > 0 else max(3600.0, floor)


def usable_key(value: object) -> str | None:
    """A nonce/token/id worth remembering: printable ASCII of bounded length, else None
    (the caller refuses the request: a scheme that has one always sends a sane one)."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not value or len(value) > MAX_KEY_CHARS or not (value.isascii() and value.isprintable()):
        return None
    return value


class SeenCache:
    def __init__(
        self, max_entries: int = MAX_ENTRIES, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._max = max_entries
        self._clock = clock
        # key -> (body digest, expires at, still pending); insertion order ~ expiry order
        self._entries: OrderedDict[str, tuple[bytes, float, bool]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _evict(self, now: float) -> None:
        entries = self._entries
        while entries:
            _, expires, _ = next(iter(entries.values()))
            if expires > now and len(entries) < self._max:
                return
            entries.popitem(last=False)

    def claim(self, key: str, body: bytes, ttl: float) -> str:
        """NEW (now pending: call stored() or release()), DUPLICATE, PENDING or CONFLICT."""
        now = self._clock()
        self._evict(now)
        digest = hashlib.sha256(body).digest()
        found = self._entries.get(key)
        if found is not None and found[1] > now:
            if found[0] != digest:
                return CONFLICT
            return PENDING if found[2] else DUPLICATE
        self._entries.pop(key, None)
        self._entries[key] = (digest, now + ttl, True)
        return NEW

    def stored(self, key: str) -> None:
        """The claimed request is in Kafka: later copies are duplicates."""
        found = self._entries.get(key)
        if found is not None:
            self._entries[key] = (found[0], found[1], False)

    def release(self, key: str) -> None:
        """The claimed request was not stored: the provider's retry must pass."""
        found = self._entries.get(key)
        if found is not None and found[2]:
            del self._entries[key]
