"""The emitter's decisions: number applied transitions, derive `delivery_unknown`.

Pure over a mutable mapping (the emitter's Faust table). Everything it decides is a
function of the `status.transitions` log, check records included, so a redelivered
record re-emits the very events it emitted before (same sequence, same CloudEvent id)
and a replayed or duplicated transition emits nothing.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from processors.model import ENGAGEMENT, reports_delivery, rfc3339
from processors.stream import cloudevents, deadlines
from processors.transitions import APPLIED

LAST_CHECK_KEY = "~lastcheck"
FIRED_INDEX_KEY = "~firedidx"
FIRED_KEEP = 64  # checks whose firings can be re-emitted after a crash
DU = "du"


@dataclass(slots=True)
class Output:
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (message_key, event)
    notes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # read-model history
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)  # read-model documents
    fired: int = 0
    repeated: int = 0


@dataclass(slots=True)
class Policy:
    """Which messages get a deadline and how long it is (MSGSTATUS_DELIVERY_UNKNOWN_AFTER)."""

    after: float = 3600.0
    disabled: frozenset[str] = frozenset()  # "provider" or "provider/channel" entries

    def deadline_for(self, meta: dict[str, Any], sent_at: float) -> float | None:
        channel = meta.get("channel")
        if self.after <= 0 or not reports_delivery(channel):
            return None
        provider = meta.get("provider")
        if provider in self.disabled or f"{provider}/{channel}" in self.disabled:
            return None
        return sent_at + self.after


def _load(table: MutableMapping[str, bytes], key: str) -> dict[str, Any] | None:
    raw = table.get(key)
    return orjson.loads(raw) if raw else None


def _meta(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "provider": event["provider"],
        "provider_message_id": event["provider_message_id"],
        "channel": event.get("channel"),
        "account": event.get("account"),
    }


def _event_time(event: dict[str, Any]) -> float:
    occurred = event.get("occurred_at")
    return float(occurred) if occurred is not None else float(event["observed_at"])


def _history(event: dict[str, Any], outcome: str, sequence: int | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "status": event["status"],
        "provider_status": event.get("provider_status"),
        "occurred_at": rfc3339(event.get("occurred_at")),
        "observed_at": rfc3339(event["observed_at"]),
        "outcome": outcome,
        "observed_ts": event["observed_at"],
    }
    if sequence is not None:
        entry["sequence"] = sequence
    return entry


def _unknown_history(ce: dict[str, Any], now: float) -> dict[str, Any]:
    data = ce["data"]
    return {
        "status": "delivery_unknown",
        "provider_status": None,
        "occurred_at": data["occurred_at"],
        "observed_at": data["observed_at"],
        "outcome": APPLIED,
        "observed_ts": now,
        "sequence": data["sequence"],
    }


class Emitter:
    def __init__(
        self, table: MutableMapping[str, bytes], policy: Policy, history: bool = True
    ) -> None:
        self.table = table
        self.policy = policy
        self.history = history  # read-model history entries; off when there is no read model

    def on_transitions(self, items: list[dict[str, Any]], src: int, now: float) -> Output:
        out = Output()
        for it in items:
            event = it["ev"]
            key = f"{event['provider']}:{event['provider_message_id']}"
            if it["o"] != APPLIED:
                if self.history:
                    out.notes.append((key, _history(event, it["o"], None)))
                continue
            state = _load(self.table, key) or {
                "seq": 0,
                "li": 0,
                "told": None,
                "dl": None,
                "m": _meta(event),
                "out": {},
            }
            index = it["i"]
            if index <= state["li"]:
                previous = state["out"].get(str(index))
                if previous is not None and previous[0] == src:
                    out.events.append(
                        (key, self._event(state, event, it, previous[1], previous[2], previous[3]))
                    )
                    out.repeated += 1
                continue
            sequence = state["seq"] + 1
            told = state["told"]
            ce = self._event(state, event, it, sequence, told, now)
            self._schedule(state, key, event, it)
            state["seq"] = sequence
            state["li"] = index
            if not it["g"]:
                state["told"] = event["status"]
            state["out"][str(index)] = [src, sequence, told, now]
            self.table[key] = orjson.dumps(state)
            out.events.append((key, ce))
            if self.history:
                out.notes.append((key, _history(event, APPLIED, sequence)))
                out.docs[key] = self._doc(state, ce)
        return out

    def _schedule(
        self, state: dict[str, Any], key: str, event: dict[str, Any], it: dict[str, Any]
    ) -> None:
        """Set or clear the message's `sent` deadline. Index writes come before the state
        write, so a crash between them can only duplicate an index entry, never lose one."""
        if it["g"]:
            return
        if event["status"] == "sent":
            deadline = self.policy.deadline_for(state["m"], _event_time(event))
            if deadline is not None:
                deadlines.add(self.table, deadline, key)
                deadlines.add_pending(self.table, +1)
                state["dl"] = deadline
        elif state["dl"] is not None:
            deadlines.add_pending(self.table, -1)
            state["dl"] = None

    def on_check(self, now: float, src: int, wall: float) -> Output:
        """A tick: fire `delivery_unknown` for every message whose deadline passed at `now`."""
        out = Output()
        last = self.table.get(LAST_CHECK_KEY)
        if last is not None and src <= int(last):
            return self._repeat_check(src, out)
        fired: list[str] = []
        for key in deadlines.pop_due(self.table, now):
            state = _load(self.table, key)
            if state is None or state["told"] != "sent" or state["dl"] is None or state["dl"] > now:
                continue
            sequence = state["seq"] + 1
            ce = self._unknown_event(state, sequence, state["dl"], now, wall)
            state["seq"] = sequence
            state["told"] = "delivery_unknown"
            state["out"][DU] = [src, sequence, "sent", wall, state["dl"], now]
            state["dl"] = None
            self.table[key] = orjson.dumps(state)
            fired.append(key)
            out.events.append((key, ce))
            if self.history:
                out.notes.append((key, _unknown_history(ce, now)))
                out.docs[key] = self._doc(state, ce)
        if fired:
            deadlines.add_pending(self.table, -len(fired))
            self._remember_fired(src, fired)
            out.fired = len(fired)
        self.table[LAST_CHECK_KEY] = str(src).encode()
        return out

    def _remember_fired(self, src: int, fired: list[str]) -> None:
        raw = self.table.get(FIRED_INDEX_KEY)
        index: list[int] = orjson.loads(raw) if raw else []
        self.table[f"~fired:{src}"] = orjson.dumps(fired)
        index.append(src)
        for old in index[:-FIRED_KEEP]:
            self.table.pop(f"~fired:{old}", None)
        self.table[FIRED_INDEX_KEY] = orjson.dumps(index[-FIRED_KEEP:])

    def _repeat_check(self, src: int, out: Output) -> Output:
        raw = self.table.get(f"~fired:{src}")
        for key in orjson.loads(raw) if raw else []:
            state = _load(self.table, key)
            entry = state and state["out"].get(DU)
            if entry and entry[0] == src:
                _, sequence, _, wall, deadline, now = entry
                out.events.append((key, self._unknown_event(state, sequence, deadline, now, wall)))
                out.repeated += 1
        return out

    @staticmethod
    def _event(
        state: dict[str, Any],
        event: dict[str, Any],
        it: dict[str, Any],
        sequence: int,
        previous: str | None,
        emitted_at: float,
    ) -> dict[str, Any]:
        return cloudevents.build(
            meta=state["m"],
            status=event["status"],
            previous_status=previous,
            implied=it["im"],
            sequence=sequence,
            provider_status=event.get("provider_status"),
            error=event.get("error"),
            occurred_at=event.get("occurred_at"),
            observed_at=event["observed_at"],
            emitted_at=emitted_at,
        )

    @staticmethod
    def _unknown_event(
        state: dict[str, Any], sequence: int, deadline: float, now: float, wall: float
    ) -> dict[str, Any]:
        return cloudevents.build(
            meta=state["m"],
            status="delivery_unknown",
            previous_status="sent",
            implied=[],
            sequence=sequence,
            provider_status=None,
            error=None,
            occurred_at=deadline,
            observed_at=now,
            emitted_at=wall,
        )

    @staticmethod
    def _doc(state: dict[str, Any], ce: dict[str, Any]) -> dict[str, Any]:
        data = ce["data"]
        status = state["told"] if data["status"] in ENGAGEMENT else data["status"]
        return {
            "message_key": data["message_key"],
            "provider": data["provider"],
            "provider_message_id": data["provider_message_id"],
            "channel": data["channel"],
            "account": data["account"],
            "status": status,
            "sequence": state["seq"],
            "error": data["error"],
            "updated_at": data["emitted_at"],
        }
