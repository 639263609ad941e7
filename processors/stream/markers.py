"""In-band watermark markers: how far in receive time the input is complete.

`delivery_unknown` may fire only when everything received before its deadline has
passed the ordering stage. Completeness is a property of the raw partitions, and the
canonical records of one partition mix many raw partitions read at different speeds,
by different workers. So completeness travels *in* the log, behind the data it covers:

1. Each normalize consumer, after handing a batch's outputs to the producer (and every
   interval when idle), writes a marker into every partition of `status.canonical` and
   `status.conversations`: "raw partition p of topic t is complete up to receive time
   T" for each raw partition it owns, plus how many partitions each raw topic has. Data
   and marker go through one producer, so in each partition the marker follows the data.
2. The conversation agent of partition c merges those marks and forwards its own bound
   B_c (min over all raw partitions) to every canonical partition, behind the events it
   expanded.
3. The ordering agent of canonical partition q merges the raw marks and the conversation
   bounds and forwards min(all raw partitions, all conversation partitions) to
   `status.transitions` q, behind the transitions it wrote.
4. The emitter of q fires deadlines up to that bound (minus the grace setting).

Every mark is a claim about data already written, so merging takes the maximum: marks
from an old owner of a raw partition, repeated or late markers, and markers of a
re-read batch can never move a bound backwards. A raw partition or conversation
partition never heard from holds the bound back. Markers are records of the pipeline,
not events: they never reach `message.status`.
"""

from __future__ import annotations

from typing import Any

KEY = b"~wm"
STATE_KEY = "~wm"


def raw_marker(marks: dict[str, float], topics: dict[str, int], conversations: int) -> dict:
    return {"wm": {"raw": marks, "topics": topics, "nconv": conversations}}


def conversation_marker(partition: int, bound: float) -> dict:
    return {"wm": {"conv": partition, "bound": bound}}


def bound_marker(bound: float) -> dict:
    return {"wm": {"bound": bound}}


def is_marker(key: bytes | None) -> bool:
    return key == KEY


def merge(state: dict[str, Any] | None, mark: dict[str, Any]) -> dict[str, Any]:
    """Fold one marker into a stage's watermark state (a new dict; max per source)."""
    out: dict[str, Any] = {
        "raw": dict((state or {}).get("raw", {})),
        "topics": dict((state or {}).get("topics", {})),
        "conv": dict((state or {}).get("conv", {})),
        "nconv": (state or {}).get("nconv"),
        "fwd": (state or {}).get("fwd"),
    }
    for name, moment in mark.get("raw", {}).items():
        if moment is not None and moment > out["raw"].get(name, float("-inf")):
            out["raw"][name] = float(moment)
    for topic, count in mark.get("topics", {}).items():
        out["topics"][topic] = max(int(count), out["topics"].get(topic, 0))
    if mark.get("nconv") is not None:
        out["nconv"] = max(int(mark["nconv"]), out["nconv"] or 0)
    if "conv" in mark:
        name = str(int(mark["conv"]))
        if mark["bound"] > out["conv"].get(name, float("-inf")):
            out["conv"][name] = float(mark["bound"])
    return out


def raw_bound(state: dict[str, Any]) -> float | None:
    """Min over every partition of every raw topic; None while one was never heard of."""
    topics = state.get("topics") or {}
    if not topics:
        return None
    raw = state.get("raw") or {}
    low = float("inf")
    for topic, count in topics.items():
        for partition in range(count):
            moment = raw.get(f"{topic}:{partition}")
            if moment is None:
                return None
            low = min(low, moment)
    return low


def full_bound(state: dict[str, Any]) -> float | None:
    """The raw bound, also held back by every conversation partition's forwarded bound."""
    low = raw_bound(state)
    count = state.get("nconv")
    if low is None or not count:
        return None
    conv = state.get("conv") or {}
    for partition in range(count):
        moment = conv.get(str(partition))
        if moment is None:
            return None
        low = min(low, moment)
    return low


def advance(state: dict[str, Any], bound: float | None) -> bool:
    """Record `bound` as forwarded if it moves forward; True if it should be sent."""
    if bound is None or (state.get("fwd") is not None and bound <= state["fwd"]):
        return False
    state["fwd"] = bound
    return True
