"""The monotonic transition rules of DESIGN.md section 5, as one pure function.

The ordering agent owns a `MessageState` per message and feeds it every canonical
event; whatever order or multiplicity the events arrive in, the applied statuses
never regress and the final status is the same. No I/O here, so the rules are tested
exhaustively (tests/unit/test_transitions.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from processors.model import (
    ENGAGEMENT,
    FAILURES,
    INBOUND,
    MILESTONES,
    RANK,
    CanonicalEvent,
)

APPLIED = "applied"
STALE = "stale"
DUPLICATE = "duplicate"
CONFLICT = "conflict"
IGNORED = "ignored"

_DELIVERED = RANK["delivered"]


@dataclass(slots=True)
class MessageState:
    """What the ordering agent knows of one message; stored whole, one write per event."""

    status: str | None = None
    index: int = 0  # applied transitions so far; the emitter dedups on it
    seen: list[str] = field(default_factory=list)  # "status|provider_status" pairs
    applied: list[str] = field(default_factory=list)  # statuses applied, in order
    conflicts: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "index": self.index,
            "seen": self.seen,
            "applied": self.applied,
            "conflicts": self.conflicts,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> MessageState:
        if not data:
            return cls()
        return cls(
            status=data.get("status"),
            index=int(data.get("index", 0)),
            seen=list(data.get("seen", ())),
            applied=list(data.get("applied", ())),
            conflicts=int(data.get("conflicts", 0)),
        )


@dataclass(slots=True, frozen=True)
class Outcome:
    kind: str  # applied | stale | duplicate | conflict | ignored
    status: str
    previous_status: str | None
    index: int | None = None  # set when applied
    implied: tuple[str, ...] = ()
    engagement: bool = False


def dedup_key(event: CanonicalEvent) -> str:
    return f"{event.status}|{event.provider_status}"


def _rank(status: str | None) -> int:
    return RANK.get(status, -1) if status else -1


def classify(state: MessageState, status: str) -> str:
    """The rule that decides whether `status` may follow the current state."""
    current = state.status
    if status in ENGAGEMENT:
        return APPLIED
    if status == "delivery_unknown":
        return IGNORED  # only the emitter's timer may derive it (rule 3)
    if status in INBOUND:
        return APPLIED if current is None else STALE
    if status in RANK:
        if current in FAILURES:
            return APPLIED if RANK[status] >= _DELIVERED else STALE  # "recovered"
        return APPLIED if RANK[status] > _rank(current) else STALE
    if status in FAILURES:
        if current in FAILURES:
            return STALE  # a second failure is dropped
        if current is None or current in INBOUND or _rank(current) < _DELIVERED:
            return APPLIED
        return CONFLICT
    return IGNORED  # not a canonical word: the normalizer should have dead-lettered it


def implied_milestones(state: MessageState, status: str) -> tuple[str, ...]:
    if status not in RANK:
        return ()
    rank = RANK[status]
    return tuple(m for m in MILESTONES if RANK[m] < rank and m not in state.applied)


def apply(state: MessageState, event: CanonicalEvent) -> tuple[MessageState, Outcome]:
    """Apply one event; returns the new state (the input is not changed) and what happened."""
    key = dedup_key(event)
    previous = state.status
    if key in state.seen:
        return state, Outcome(DUPLICATE, event.status, previous)
    kind = classify(state, event.status)
    new = MessageState(
        status=state.status,
        index=state.index,
        seen=[*state.seen, key],
        applied=state.applied,
        conflicts=state.conflicts + (kind == CONFLICT),
    )
    if kind != APPLIED:
        return new, Outcome(kind, event.status, previous)
    new.index += 1
    if event.status in ENGAGEMENT:
        return new, Outcome(APPLIED, event.status, previous, new.index, (), engagement=True)
    implied = implied_milestones(state, event.status)
    new.status = event.status
    new.applied = [*state.applied, *implied, event.status]
    return new, Outcome(APPLIED, event.status, previous, new.index, implied)
