"""Ordering: apply canonical events to per-message state and say what happened.

Pure over a mutable mapping (the Faust table in the worker, a dict in unit tests). Each
receipt remembers the source offset that produced it, so a record redelivered after a
crash repeats exactly what it said before while a true duplicate says nothing new.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import orjson

from processors.model import ENGAGEMENT, CanonicalEvent
from processors.transitions import APPLIED, DUPLICATE, MessageState, Outcome, apply, dedup_key

# receipt = [source offset, outcome kind, index, previous status, implied milestones]
Receipt = list[Any]


def load(raw: bytes | None) -> tuple[MessageState, dict[str, Receipt]]:
    if not raw:
        return MessageState(), {}
    data = orjson.loads(raw)
    receipts: dict[str, Receipt] = data["r"]
    state = MessageState(
        status=data["s"],
        index=data["i"],
        seen=list(receipts),
        applied=data["a"],
        conflicts=data["c"],
    )
    return state, receipts


def dump(state: MessageState, receipts: dict[str, Receipt]) -> bytes:
    return orjson.dumps(
        {
            "s": state.status,
            "i": state.index,
            "a": state.applied,
            "c": state.conflicts,
            "r": receipts,
        }
    )


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


def order_record(
    table: MutableMapping[str, bytes], events: list[dict[str, Any]], src: int
) -> list[dict[str, Any]]:
    """Apply one canonical record (all its events share a partition); return its items."""
    touched: set[str] = set()
    items: list[dict[str, Any]] = []
    for raw_event in events:
        event = CanonicalEvent.from_dict(raw_event)
        key = event.message_key
        state, receipts = load(table.get(key))
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
        table[key] = dump(new_state, receipts)
    return items


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
