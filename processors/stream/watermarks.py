"""Conversation watermarks: Messenger's "everything before T was delivered/read".

A Messenger `delivery.watermark` / `read.watermark` names no message: it covers every
outbound message of that conversation sent at or before the watermark. This module keeps,
per conversation (`<page_id>:<user_psid>`), a bounded index of the outbound messages it
was told about (registrations: the page's echoes, `/v1/events` reports with a
`conversation`) and the highest watermark of each kind, and expands watermarks into
ordinary canonical events, one per covered message.

Pure over a mutable mapping (the conversation agent's Faust table in the worker, a dict in
unit tests), like ordering.py. Idempotent: each message remembers the highest level it was
expanded to, so a repeated or older watermark says nothing new, and a message registered
after its watermark arrived (an echo processed late) is expanded at once. Each raised
message also remembers the source offset that raised it, so a record redelivered after a
crash repeats exactly what it said before (the ordering agent drops the duplicates).
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import Any

import orjson

from processors.model import CanonicalEvent
from processors.stream import markers, retention
from processors.stream.fasttable import Scannable

MAX_MESSAGES = 500  # newest registered messages kept per conversation
MAX_WITHDRAWN = 100  # mids withdrawn (send-time failures) remembered per conversation
LEVELS: dict[str, int] = {"delivered": 1, "read": 2}
# provider_status of an expanded event: the same words as Meta's per-mid receipts, so a
# message that got both a mid receipt and a watermark is a duplicate, not two statuses.
PROVIDER_STATUS: dict[str, str] = {"delivered": "delivery", "read": "read"}

# entry = [provider, mid, sent_at_ms, account, channel, level, src offset]
P, MID, SENT, ACCOUNT, CHANNEL, LEVEL, SRC = range(7)


def load(raw: bytes | None) -> dict[str, Any]:
    """A conversation's state: `m` entries, `w` withdrawn mids, `d`/`r` watermarks."""
    if not raw:
        return {"m": [], "w": [], "d": None, "r": None}
    return orjson.loads(raw)


def dump(state: dict[str, Any]) -> bytes:
    return orjson.dumps(state)


def _event(entry: list[Any], kind: str, mark: dict[str, Any]) -> dict[str, Any]:
    return CanonicalEvent(
        provider=entry[P],
        provider_message_id=entry[MID],
        status=kind,
        provider_status=PROVIDER_STATUS[kind],
        channel=entry[CHANNEL] or mark.get("channel") or "messenger",
        observed_at=float(mark["observed_at"]),
        occurred_at=None if mark.get("occurred_at") is None else float(mark["occurred_at"]),
        account=entry[ACCOUNT] or mark.get("account"),
        polled=bool(mark.get("polled", False)),
    ).to_dict()


def _mark(item: dict[str, Any]) -> dict[str, Any]:
    """What a state keeps of a watermark (enough to build the events it implies)."""
    return {
        "ms": int(item["watermark_ms"]),
        "observed_at": float(item["observed_at"]),
        "occurred_at": item.get("occurred_at"),
        "account": item.get("account"),
        "channel": item.get("channel"),
        "polled": bool(item.get("polled", False)),
    }


def _raise(entry: list[Any], state: dict[str, Any], src: int) -> str | None:
    """Lift `entry` to the best level its conversation's watermarks cover; the new kind."""
    for kind in ("read", "delivered"):
        mark = state.get(kind[0])
        if mark is not None and entry[SENT] <= mark["ms"] and entry[LEVEL] < LEVELS[kind]:
            entry[LEVEL] = LEVELS[kind]
            entry[SRC] = src
            return kind
    return None


def _register(state: dict[str, Any], reg: dict[str, Any], src: int) -> list[dict[str, Any]]:
    mid = reg["provider_message_id"]
    provider = reg.get("provider") or "meta"
    entries: list[list[Any]] = state["m"]
    if reg.get("withdrawn"):
        state["m"] = [e for e in entries if not (e[MID] == mid and e[P] == provider)]
        withdrawn = [w for w in state["w"] if w != [provider, mid]] + [[provider, mid]]
        state["w"] = withdrawn[-MAX_WITHDRAWN:]
        return []
    if [provider, mid] in state["w"]:
        return []  # failed at send time: no watermark may turn it into a delivery
    if any(e[MID] == mid and e[P] == provider for e in entries):
        return []  # known already (echo and /v1/events both report it)
    entry = [
        provider,
        mid,
        int(reg["sent_at_ms"]),
        reg.get("account"),
        reg.get("channel") or "messenger",
        0,
        src,
    ]
    entries.append(entry)
    if len(entries) > MAX_MESSAGES:
        entries.sort(key=lambda e: e[SENT])
        del entries[: len(entries) - MAX_MESSAGES]
    kind = _raise(entry, state, src)  # its watermark may have come first
    return [_event(entry, kind, state[kind[0]])] if kind else []


def _watermark(state: dict[str, Any], item: dict[str, Any], src: int) -> list[dict[str, Any]]:
    kind = item["kind"]
    if kind not in LEVELS:
        return []
    mark = _mark(item)
    current = state.get(kind[0])
    if current is None or mark["ms"] > current["ms"]:
        state[kind[0]] = mark
    out = []
    for entry in state["m"]:
        if entry[SENT] <= mark["ms"] and entry[LEVEL] < LEVELS[kind]:
            entry[LEVEL] = LEVELS[kind]
            entry[SRC] = src
            out.append(_event(entry, kind, mark))
    return out


def _repeat(state: dict[str, Any], src: int) -> list[dict[str, Any]]:
    """What this record said the first time (it is being redelivered after a crash)."""
    out = []
    for entry in state["m"]:
        if entry[SRC] == src and entry[LEVEL] > 0:
            kind = "read" if entry[LEVEL] >= LEVELS["read"] else "delivered"
            mark = state.get(kind[0])
            if mark is not None:
                out.append(_event(entry, kind, mark))
    return out


def expand_record(
    table: MutableMapping[str, bytes],
    registrations: Iterable[dict[str, Any]],
    watermarks: Iterable[dict[str, Any]],
    src: int,
    keep: float = 30 * 86400.0,
) -> list[dict[str, Any]]:
    """Apply one `status.conversations` record; return the canonical events it implies.

    Registrations go first, so a record holding an echo and the watermark covering it
    expands the echo's message at once.
    """
    grouped: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
    for reg in registrations:
        grouped.setdefault(reg["conversation"], ([], []))[0].append(reg)
    for mark in watermarks:
        grouped.setdefault(mark["conversation"], ([], []))[1].append(mark)
    out: list[dict[str, Any]] = []
    for conversation, (regs, marks) in grouped.items():
        raw = table.get(conversation)
        state = load(raw)
        # Offsets only grow, so an entry already marked with `src` was raised by this very
        # record before a crash: say it again (nothing else will raise it a second time).
        produced = _repeat(state, src)
        for reg in regs:
            produced += _register(state, reg, src)
        for mark in marks:
            produced += _watermark(state, mark, src)
        seen = [r["sent_at_ms"] / 1000.0 for r in regs] + [float(m["observed_at"]) for m in marks]
        if seen:
            retention.touch(table, state, conversation, max(seen), keep)
        new = dump(state)
        if new != raw:
            table[conversation] = new
        out += produced
    return out


def on_marker(table: Scannable, mark: dict[str, Any], keep: float = 30 * 86400.0) -> float | None:
    """Fold a normalize marker in; the bound to forward to every canonical partition (all
    raw partitions complete up to it, and every event this partition expanded from them
    already written), if it advanced. Conversations idle for `keep` are removed."""
    raw = table.get(markers.STATE_KEY)
    state = markers.merge(orjson.loads(raw) if raw else None, mark)
    bound = markers.raw_bound(state)
    send = markers.advance(state, bound)
    table[markers.STATE_KEY] = orjson.dumps(state)
    if state.get("fwd") is not None and keep > 0:
        retention.expire(table, state["fwd"], 0.0, lambda _: None)
    return bound if send else None
