"""The emitter's decisions: number applied transitions, derive `delivery_unknown`.

Pure over a mutable mapping (the emitter's Faust table). Everything it decides is a
function of the `status.transitions` log (watermark markers included) and the records'
own timestamps, never of the wall clock, so a redelivered record re-emits the very
events it emitted before (same sequence, same bytes, same CloudEvent id), a restore
from the changelog plus the same input reproduces what was published, and a replayed or
duplicated transition emits nothing.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from processors.model import reports_delivery
from processors.stream import cloudevents, deadlines, markers, retention
from processors.stream.deadlines import DEADLINE
from processors.stream.fasttable import Scannable
from processors.transitions import APPLIED

FIRED_INDEX_KEY = "~firedidx"
FIRED_KEEP = 64  # markers whose firings can be repeated after a crash
MAX_FIRES = 500  # deadlines acted on per marker: bounds one record's table unit
DU = "du"


@dataclass(slots=True)
class Output:
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (message_key, event)
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # poll requests
    fired: int = 0
    asked: int = 0
    repeated: int = 0
    repeats: set[str] = field(default_factory=set)  # ids of events published again
    latencies: list[float] = field(default_factory=list)  # receive -> emit, new events only


@dataclass(slots=True)
class Policy:
    """Which messages get a deadline, how long it is, how sure the watermark must be."""

    after: float = 3600.0  # MSGSTATUS_DELIVERY_UNKNOWN_AFTER
    disabled: frozenset[str] = frozenset()  # "provider" or "provider/channel" entries
    grace: float = 0.0  # MSGSTATUS_DELIVERY_UNKNOWN_GRACE: slack on top of the watermark
    ask: frozenset[str] = frozenset()  # providers to poll once before declaring it
    ask_timeout: float = 120.0  # MSGSTATUS_DELIVERY_UNKNOWN_ASK_TIMEOUT
    retention: float = 30 * 86400.0  # MSGSTATUS_STATE_RETENTION
    marker_retention: float = 365 * 86400.0  # MSGSTATUS_STATE_MARKER_RETENTION

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


def poll_request(key: str, state: dict[str, Any], asked_at: float) -> dict[str, Any]:
    """What the poller needs to ask the provider about one message, once."""
    meta = state["m"]
    return {
        "message_key": key,
        "provider": meta["provider"],
        "provider_message_id": meta["provider_message_id"],
        "account": meta.get("account"),
        "channel": meta.get("channel"),
        "deadline": state["d0"],
        "asked_at": asked_at,
    }


class Emitter:
    def __init__(self, table: Scannable, policy: Policy) -> None:
        self.table = table
        self.policy = policy

    def on_transitions(self, items: list[dict[str, Any]], src: int, ts: float) -> Output:
        """`ts`: the transitions record's own timestamp, the `emitted_at` of its events."""
        out = Output()
        for it in items:
            event = it["ev"]
            key = f"{event['provider']}:{event['provider_message_id']}"
            if it["o"] != APPLIED:
                continue  # told nowhere: the read model's projector reads it from the log
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
                previous = state.get("out", {}).get(str(index))
                if previous is not None and previous[0] == src:
                    again = self._event(state, event, it, previous[1], previous[2], previous[3])
                    out.events.append((key, again))
                    out.repeats.add(again["id"])
                    out.repeated += 1
                continue
            sequence = state["seq"] + 1
            told = state["told"]
            ce = self._event(state, event, it, sequence, told, ts)
            self._schedule(state, key, event, it)
            state["seq"] = sequence
            state["li"] = index
            if not it["g"]:
                state["told"] = event["status"]
            state.setdefault("out", {})[str(index)] = [src, sequence, told, ts]
            retention.touch(
                self.table, state, key, float(event["observed_at"]), self.policy.retention
            )
            self.table[key] = orjson.dumps(state)
            out.events.append((key, ce))
            out.latencies.append(ts - float(event["observed_at"]))
        return out

    def _schedule(
        self, state: dict[str, Any], key: str, event: dict[str, Any], it: dict[str, Any]
    ) -> None:
        """Set or clear the message's `sent` deadline (one index entry, O(1))."""
        if it["g"]:
            return
        if state.get("dl") is not None:
            deadlines.unfile(self.table, DEADLINE, deadlines.bucket_of(DEADLINE, state["dl"]), key)
            deadlines.add_pending(self.table, -1)
            state["dl"] = None
        if event["status"] == "sent":
            deadline = self.policy.deadline_for(state["m"], _event_time(event))
            if deadline is not None:
                deadlines.file(self.table, DEADLINE, deadline, key)
                deadlines.add_pending(self.table, +1)
                state["dl"] = deadline
                state["d0"] = deadline
                state.pop("ask", None)

    def on_marker(self, bound: float, src: int, ts: float) -> Output:
        """A watermark marker: act on every deadline at or before `bound - grace`."""
        out = Output()
        fired_key = f"~fired:{src}"
        if self.table.get(fired_key) is not None:
            return self._repeat(src, fired_key, out)
        raw = self.table.get(markers.STATE_KEY)
        state_wm = orjson.loads(raw) if raw else {}
        if state_wm.get("fwd") is None or bound > state_wm["fwd"]:
            state_wm["fwd"] = bound
            self.table[markers.STATE_KEY] = orjson.dumps(state_wm)
        now = state_wm["fwd"]
        acted: list[str] = []
        for bucket, key in deadlines.due(self.table, DEADLINE, now - self.policy.grace, MAX_FIRES):
            self.table.pop(deadlines.index_key(DEADLINE, bucket, key), None)
            state = _load(self.table, key)
            if (
                state is None
                or state["told"] != "sent"
                or state.get("dl") is None
                or deadlines.bucket_of(DEADLINE, state["dl"]) != bucket
            ):
                continue  # the message moved on, or its deadline moved
            if self._ask(state, key, src, ts, out):
                acted.append(key)
                continue
            self._fire(state, key, src, ts, now, out)
            acted.append(key)
        if acted:
            self._remember(src, fired_key, acted)
        retention.expire(self.table, now, self.policy.marker_retention, _compact)
        return out

    def _ask(self, state: dict[str, Any], key: str, src: int, ts: float, out: Output) -> bool:
        """For a provider that can be polled: ask it once, fire only if nothing newer comes
        back within the ask timeout (the answer goes through the normal pipeline)."""
        if state["m"]["provider"] not in self.policy.ask or state.get("ask") is not None:
            return False
        state["ask"] = [src, ts]
        state["dl"] = state["dl"] + self.policy.ask_timeout
        deadlines.file(self.table, DEADLINE, state["dl"], key)
        self.table[key] = orjson.dumps(state)
        out.requests.append((key, poll_request(key, state, ts)))
        out.asked += 1
        return True

    def _fire(
        self, state: dict[str, Any], key: str, src: int, ts: float, now: float, out: Output
    ) -> None:
        sequence = state["seq"] + 1
        deadline = state.get("d0", state["dl"])
        ce = self._unknown_event(state, sequence, deadline, now, ts)
        state["seq"] = sequence
        state["told"] = "delivery_unknown"
        state.setdefault("out", {})[DU] = [src, sequence, "sent", ts, deadline, now]
        state["dl"] = None
        deadlines.add_pending(self.table, -1)
        self.table[key] = orjson.dumps(state)
        out.events.append((key, ce))
        out.fired += 1

    def _remember(self, src: int, fired_key: str, keys: list[str]) -> None:
        raw = self.table.get(FIRED_INDEX_KEY)
        index: list[int] = orjson.loads(raw) if raw else []
        self.table[fired_key] = orjson.dumps(keys)
        index.append(src)
        for old in index[:-FIRED_KEEP]:
            self.table.pop(f"~fired:{old}", None)
        self.table[FIRED_INDEX_KEY] = orjson.dumps(index[-FIRED_KEEP:])

    def _repeat(self, src: int, fired_key: str, out: Output) -> Output:
        """This marker was processed before a crash: publish exactly what it published."""
        for key in orjson.loads(self.table[fired_key]):
            state = _load(self.table, key)
            if state is None:
                continue
            entry = state.get("out", {}).get(DU)
            if entry and entry[0] == src:
                _, sequence, _, ts, deadline, now = entry
                again = self._unknown_event(state, sequence, deadline, now, ts)
                out.events.append((key, again))
                out.repeats.add(again["id"])
                out.repeated += 1
            asked = state.get("ask")
            if asked and asked[0] == src:
                out.requests.append((key, poll_request(key, state, asked[1])))
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
        state: dict[str, Any], sequence: int, deadline: float, now: float, ts: float
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
            emitted_at=ts,
        )


def _compact(state: dict[str, Any]) -> dict[str, Any] | object | None:
    """An expired message keeps what numbering needs; one with a pending deadline (only
    possible with a retention shorter than the deadline, which config refuses) waits."""
    if state.get("dl") is not None:
        return retention.KEEP
    return {
        "seq": state["seq"],
        "li": state["li"],
        "told": state["told"],
        "dl": None,
        "m": state["m"],
    }
