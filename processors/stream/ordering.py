"""Ordering: apply canonical events to per-message state and say what happened.

Pure over a mutable mapping (the Faust table in the worker, a dict in unit tests). Each
receipt remembers the source offset that produced it, so a record redelivered after a
crash repeats exactly what it said before while a true duplicate says nothing new.
Everything decided here is a function of the state and the record (offsets, receive
times, watermark markers), never of the wall clock: a restore plus the same input gives
the same output.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson

from processors.model import ENGAGEMENT, CanonicalEvent
from processors.stream import markers, retention
from processors.stream.fasttable import Scannable
from processors.transitions import (
    APPLIED,
    DUPLICATE,
    IGNORED,
    MessageState,
    Outcome,
    apply,
    dedup_key,
)

# receipt = [source offset, outcome kind, index, previous status, implied milestones]
Receipt = list[Any]
# Distinct `status|provider_status` pairs remembered per message. Real messages see a
# handful; the cap keeps one message's state (and so one record's table unit) bounded
# whatever a sender invents. Beyond it a new pair is `ignored`.
MAX_RECEIPTS = 64


@dataclass(frozen=True, slots=True)
class Rules:
    retention: float = 30 * 86400.0  # MSGSTATUS_STATE_RETENTION
    marker_retention: float = 365 * 86400.0  # MSGSTATUS_STATE_MARKER_RETENTION


def load(raw: bytes | None) -> tuple[MessageState, dict[str, Receipt], dict[str, Any]]:
    if not raw:
        return MessageState(), {}, {}
    data = orjson.loads(raw)
    receipts: dict[str, Receipt] = data["r"]
    state = MessageState(
        status=data["s"],
        index=data["i"],
        seen=list(receipts),
        applied=data["a"],
        conflicts=data["c"],
    )
    return state, receipts, data


def dump(state: MessageState, receipts: dict[str, Receipt], extra: dict[str, Any]) -> bytes:
    data = {
        "s": state.status,
        "i": state.index,
        "a": state.applied,
        "c": state.conflicts,
        "r": receipts,
    }
    for name in ("x", "y"):
        if extra.get(name) is not None:
            data[name] = extra[name]
    return orjson.dumps(data)


def item(
    event: dict[str, Any],
    kind: str,
    index: int,
    previous: str | None,
    implied: list[str],
    engagement: bool,
) -> dict[str, Any]:
    """One entry of a `status.transitions` record."""
    return {"o": kind, "ev": event, "i": index, "p": previous, "im": implied, "g": engagement}


def watermark(table: MutableMapping[str, bytes]) -> float | None:
    """The bound this partition last forwarded (its clock for retention)."""
    raw = table.get(markers.STATE_KEY)
    return orjson.loads(raw).get("fwd") if raw else None


def order_record(
    table: MutableMapping[str, bytes],
    events: list[dict[str, Any]],
    src: int,
    rules: Rules = Rules(),
) -> list[dict[str, Any]]:
    """Apply one canonical record (all its events share a partition); return its items."""
    touched: set[str] = set()
    items: list[dict[str, Any]] = []
    now: float | None = None
    for raw_event in events:
        event = CanonicalEvent.from_dict(raw_event)
        key = event.message_key
        raw = table.get(key)
        state, receipts, extra = load(raw)
        dkey = dedup_key(event)
        receipt = receipts.get(dkey)
        if receipt is not None and receipt[0] == src and key not in touched:
            # This very record was processed before a crash: say the same again.
            items.append(
                item(
                    raw_event,
                    receipt[1],
                    receipt[2],
                    receipt[3],
                    receipt[4],
                    _engaged(receipt, event),
                )
            )
            continue
        if receipt is None and len(receipts) >= MAX_RECEIPTS:
            items.append(item(raw_event, IGNORED, 0, state.status, [], False))
            continue
        if raw is None and event.occurred_at is not None:
            if now is None:
                now = watermark(table) or 0.0
            if now - event.occurred_at > rules.marker_retention > 0:
                items.append(item(raw_event, IGNORED, 0, None, [], False))  # a relic
                continue
        new_state, outcome = apply(state, event)
        touched.add(key)
        items.append(_item(raw_event, outcome))
        if outcome.kind == DUPLICATE:
            continue  # nothing changed: no write
        receipts[dkey] = [
            src,
            outcome.kind,
            outcome.index or 0,
            outcome.previous_status,
            list(outcome.implied),
        ]
        retention.touch(table, extra, key, event.observed_at, rules.retention)
        table[key] = dump(new_state, receipts, extra)
    return items


def on_marker(table: Scannable, mark: dict[str, Any], rules: Rules = Rules()) -> float | None:
    """Fold a watermark marker in; the bound to forward to `status.transitions`, if it
    advanced. Retention runs on the same clock."""
    raw = table.get(markers.STATE_KEY)
    state = markers.merge(orjson.loads(raw) if raw else None, mark)
    forward = markers.full_bound(state)
    send = markers.advance(state, forward)
    table[markers.STATE_KEY] = orjson.dumps(state)
    if state.get("fwd") is not None:
        retention.expire(table, state["fwd"], rules.marker_retention, _compact)
    return forward if send else None


def _compact(data: dict[str, Any]) -> dict[str, Any]:
    """What the rules still need of an expired message: no receipts."""
    return {"s": data["s"], "i": data["i"], "a": data["a"], "c": data["c"], "r": {}}


def _engaged(receipt: Receipt, event: CanonicalEvent) -> bool:
    return receipt[1] == APPLIED and event.status in ENGAGEMENT


def _item(event: dict[str, Any], outcome: Outcome) -> dict[str, Any]:
    return item(
        event,
        outcome.kind,
        outcome.index or 0,
        outcome.previous_status,
        list(outcome.implied),
        outcome.engagement,
    )
