"""Who may still write for a partition: ownership tokens and the group lease.

Two ways an old owner's write can land after the new owner's, and what stops each:

- Inside a live process, a rebalance takes a partition away while an agent still holds
  one of its records, or while its writes wait in a queue. Every record is processed
  under an ownership *token* (partition, epoch); a revoke bumps the epoch, and every
  later step (queueing a table unit, handing it to Kafka, applying it to RocksDB)
  checks the token and drops what it no longer owns.
- A process that was frozen (SIGSTOP, a VM pause, a long GC) longer than the session
  timeout has been replaced by the group without knowing it; when it wakes, its Kafka
  client would send whatever it had queued before it hears so. The *lease* is the time
  of the last heartbeat the broker answered positively (its request's send time) plus
  the session timeout, with a margin: past it, the producer hands nothing to the
  broker (processors/stream/patches.py holds its accumulator) until a heartbeat or a
  new join renews it, or the revoke fails what was held.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any


class Fenced(Exception):
    """A write of an owner that lost its partition: dropped on purpose, never an error."""


@dataclass(frozen=True, slots=True)
class Token:
    tp: Any  # faust TP of the input partition
    epoch: int


class Ownership:
    """The input partitions this worker's agents own, each with an epoch."""

    def __init__(self) -> None:
        self._epoch: dict[Any, int] = {}
        self._owned: set[Any] = set()
        self._revoking: set[Any] = set()

    def assign(self, tps: set[Any]) -> None:
        for tp in tps:
            self._epoch[tp] = self._epoch.get(tp, 0) + 1
            self._owned.add(tp)
            self._revoking.discard(tp)

    def start_revoke(self, tps: set[Any]) -> None:
        """No new record of these partitions may start; records in hand may finish."""
        self._revoking |= tps & self._owned

    def revoke(self, tps: set[Any]) -> None:
        for tp in tps:
            self._owned.discard(tp)
            self._revoking.discard(tp)
            self._epoch[tp] = self._epoch.get(tp, 0) + 1

    def token(self, tp: Any) -> Token | None:
        if tp not in self._owned or tp in self._revoking:
            return None
        return Token(tp, self._epoch[tp])

    def live(self, token: Token | None) -> bool:
        """True while the token's partition was not revoked since it was issued."""
        if token is None:
            return True  # writes that belong to no input partition (normalize stage)
        return token.tp in self._owned and self._epoch.get(token.tp) == token.epoch

    @property
    def owned(self) -> set[Any]:
        return set(self._owned)


class Lease:
    """How long the group can still count this worker as a member, as far as it knows."""

    def __init__(self, session_timeout: float, margin: float = 0.8) -> None:
        self.ttl = session_timeout * margin
        self._renewed: float | None = None  # monotonic send time of the last good heartbeat
        self._broken = False

    def renewed(self, sent_at: float) -> None:
        if self._renewed is None or sent_at > self._renewed:
            self._renewed = sent_at
        self._broken = False

    def joined(self) -> None:
        self.renewed(time.monotonic())

    def broken(self) -> None:
        """The broker said this member or generation is gone."""
        self._broken = True

    def valid(self, now: float | None = None) -> bool:
        if self._broken:
            return False
        if self._renewed is None:
            return True  # never joined: nothing owned yet, nothing to protect
        return (time.monotonic() if now is None else now) - self._renewed < self.ttl


# group id -> lease, read by the heartbeat patch (processors/stream/patches.py)
LEASES: dict[str, Lease] = {}


def watch(group_id: str, lease: Lease) -> None:
    LEASES[group_id] = lease
