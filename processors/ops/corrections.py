"""What a rebuild changes for one message: comparison, correction events, new states.

Pure (no I/O), so every rule here is unit-tested. The inputs are what the rebuild reads
back from Kafka: the message's events on the live `message.status` and on the shadow
generation's, and the table states (changelog values) of both generations.

Comparing. Two histories of one message can differ only in the path (raw partitions
read in another interleaving give `delivered` with `sent` implied instead of `sent`
then `delivered`; a `delivery_unknown` fired a moment earlier or later) while telling
consumers the same thing. So a message is *changed* when its outcome differs: the last
status told (`delivery_unknown` counts as `sent`: it is a timer's judgement, and the
live emitter fires it itself for a message still in `sent`), that status's error and
the engagement events seen.

Correcting (DESIGN.md section 11: a sequence number never carries two different
events). Nothing already published is replaced in place: a changed message gets NEW
events continuing its live sequence, each with `data.correction = {"rebuild": n,
"replaces_sequence": r}`. The events are the rebuilt history after the longest prefix
it shares with the live one (those published events stand, with their ids); `r` is the
first live sequence that prefix does not cover (every event from `r` up to the
correction is withdrawn), or null when nothing published is withdrawn. When the
rebuilt history ends inside the shared prefix (the fix removed statuses), its final
status is restated, so a consumer that simply keeps the latest event ends right too.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from processors.model import ENGAGEMENT, rfc3339
from processors.stream import cloudevents, deadlines
from processors.stream.deadlines import DEADLINE, EXPIRY, MARKER_EXPIRY

CORRECTION = "correction"
UNKNOWN = "delivery_unknown"
UNBOUND = -1  # a receipt/output source offset no record of the live topics can have

# verdict kinds
UNCHANGED = "unchanged"
CHANGED = "changed"
NEW = "new"  # known to the rebuild only (e.g. its records were dead letters before)
MISSING = "missing"  # known to the live state only: left as it is
INCOMPLETE = "incomplete"  # live history or raw records partly gone (retention): left


def timestamp(text: str | None) -> float | None:
    if not text:
        return None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True, slots=True)
class Told:
    """One published event, as far as comparing needs it."""

    sequence: int
    status: str
    error: tuple[Any, Any] | None  # (code, category)
    implied: tuple[str, ...]
    engagement: bool
    observed_at: float | None
    rebuild: str | None = None  # set on correction events
    replaces: int | None = None

    @property
    def same(self) -> tuple[Any, ...]:
        """What makes two events tell the same (ids differ with the sequence)."""
        return (self.status, self.error, self.engagement)


def told(event: dict[str, Any]) -> Told:
    data = event["data"]
    error = data.get("error")
    fix = data.get(CORRECTION) or {}
    return Told(
        sequence=int(data["sequence"]),
        status=data["status"],
        error=None if not error else (error.get("code"), error.get("category")),
        implied=tuple(data.get("implied") or ()),
        engagement=data["status"] in ENGAGEMENT,
        observed_at=timestamp(data.get("observed_at")),
        rebuild=None if not fix else str(fix.get("rebuild")),
        replaces=None if not fix else fix.get("replaces_sequence"),
    )


@dataclass(slots=True)
class Published:
    """One message's events as found on a `message.status` topic, one per sequence."""

    events: dict[int, dict[str, Any]] = field(default_factory=dict)
    conflicting: set[int] = field(default_factory=set)  # two different ids, one sequence

    def add(self, event: dict[str, Any]) -> None:
        sequence = int(event["data"]["sequence"])
        seen = self.events.get(sequence)
        if seen is None:
            self.events[sequence] = event
        elif seen["id"] != event["id"]:
            self.conflicting.add(sequence)

    @property
    def last(self) -> int:
        return max(self.events, default=0)

    @property
    def complete(self) -> bool:
        """Sequences 1..last all there (nothing lost to retention), none contradicted."""
        return not self.conflicting and len(self.events) == self.last

    def ordered(self) -> list[dict[str, Any]]:
        return [self.events[s] for s in sorted(self.events)]

    def entries(self) -> list[Told]:
        return [told(e) for e in self.ordered()]


def published(events: Iterable[dict[str, Any]]) -> Published:
    found = Published()
    for event in events:
        found.add(event)
    return found


def effective(entries: list[Told]) -> list[Told]:
    """The history consumers should hold: earlier corrections applied (a correction of
    rebuild n with `replaces_sequence` r withdraws every event from r on that is not part
    of rebuild n's own correction)."""
    out: list[Told] = []
    for entry in entries:
        if entry.rebuild is not None and entry.replaces is not None:
            out = [e for e in out if e.sequence < entry.replaces or e.rebuild == entry.rebuild]
        out.append(entry)
    return out


def final_status(entries: list[Told]) -> str | None:
    statuses = [e.status for e in entries if not e.engagement]
    return statuses[-1] if statuses else None


def final_status_of(statuses: list[str]) -> str | None:
    told = [s for s in statuses if s not in ENGAGEMENT]
    return told[-1] if told else None


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str | None
    error: tuple[Any, Any] | None
    engaged: frozenset[str]


def outcome(entries: list[Told]) -> Outcome:
    """What a history tells in the end. The milestones on the way are left out: which
    of them were told depends on the order records arrived in (a failure read before its
    `sent` makes the `sent` stale), not on the mapping."""
    statuses = [e for e in entries if not e.engagement]
    last = statuses[-1] if statuses else None
    return Outcome(
        status=None if last is None else _as_sent(last.status),
        error=None if last is None else last.error,
        engaged=frozenset(e.status for e in entries if e.engagement),
    )


def _as_sent(status: str | None) -> str | None:
    return "sent" if status == UNKNOWN else status


def shared_prefix(live: list[Told], rebuilt: list[Told]) -> int:
    count = 0
    for a, b in zip(live, rebuilt, strict=False):
        if a.same != b.same:
            break
        count += 1
    return count


def correction_events(
    key: str,
    live: list[Told],
    told_now: str | None,
    rebuilt: list[dict[str, Any]],
    base: int,
    rebuild: str,
    emitted_at: float,
) -> list[dict[str, Any]]:
    """The events that move consumers from the live (effective) history to the rebuilt
    one, numbered base+1, base+2, ...; `told_now` is the last status on the wire."""
    entries = [told(e) for e in rebuilt]
    keep = shared_prefix(live, entries)
    replaces = live[keep].sequence if keep < len(live) else None
    picked: list[tuple[dict[str, Any], bool]] = [(e, False) for e in rebuilt[keep:]]
    final = next((e for e in reversed(rebuilt) if e["data"]["status"] not in ENGAGEMENT), None)
    restate = False
    if final is not None and all(e["data"]["status"] in ENGAGEMENT for e, _ in picked):
        # No status among the new events: consumers keep what they had (told_now), or
        # what the shared prefix says once they withdraw the replaced events.
        rolled_back = final_status(entries[:keep])
        status = _as_sent(final["data"]["status"])
        restate = _as_sent(told_now) != status or (
            replaces is not None and _as_sent(rolled_back) != status
        )
    if restate or (not picked and replaces is not None):
        # also when only withdrawn events differ: the withdrawal needs an event to travel
        picked.insert(0, (final if final is not None else rebuilt[-1], True))
    out: list[dict[str, Any]] = []
    previous = told_now
    sequence = base
    for source, restated in picked:
        sequence += 1
        event = corrected(source, sequence, previous, rebuild, replaces, emitted_at, restated)
        out.append(event)
        if event["data"]["status"] not in ENGAGEMENT:
            previous = event["data"]["status"]
    return out


def corrected(
    source: dict[str, Any],
    sequence: int,
    previous: str | None,
    rebuild: str,
    replaces: int | None,
    emitted_at: float,
    restated: bool = False,
) -> dict[str, Any]:
    """A rebuilt event re-numbered into the live sequence, marked as a correction."""
    data = dict(source["data"])
    key = data["message_key"]
    stamp = rfc3339(emitted_at)
    data.update(
        sequence=sequence,
        previous_status=previous,
        emitted_at=stamp,
        implied=[] if restated else list(data.get("implied") or []),
    )
    data[CORRECTION] = {"rebuild": rebuild, "replaces_sequence": replaces}
    event = dict(source)
    event.update(id=cloudevents.event_id(key, sequence, data["status"]), time=stamp, data=data)
    return event


@dataclass(slots=True)
class Verdict:
    key: str
    kind: str
    live: list[str] = field(default_factory=list)  # effective live statuses
    rebuilt: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # corrections to publish
    sequence: int = 0  # the message's last live sequence after the corrections


def judge(
    key: str,
    live: Published,
    live_seq: int,
    rebuilt: Published,
    horizon: float | None,
    rebuild: str,
    emitted_at: float,
) -> Verdict:
    """Compare one message's two generations; `live_seq` is the live emitter's sequence
    (0 without a state), `horizon` the receive time before which raw records may be gone."""
    base = max(live.last, live_seq)
    shadow = rebuilt.entries()
    verdict = Verdict(key, UNCHANGED, rebuilt=[e.status for e in shadow], sequence=base)
    if not shadow:
        verdict.kind = MISSING if base else UNCHANGED
        verdict.live = [e.status for e in effective(live.entries())]
        return verdict
    if base == 0:
        verdict.kind = NEW
        verdict.events = correction_events(key, [], None, rebuilt.ordered(), 0, rebuild, emitted_at)
        verdict.sequence = len(verdict.events)
        return verdict
    entries = live.entries()
    verdict.live = [e.status for e in effective(entries)]
    first = min((e.observed_at for e in entries if e.observed_at is not None), default=None)
    if (
        not live.complete
        or live.last < base
        or (horizon is not None and (first is None or first < horizon))
    ):
        verdict.kind = INCOMPLETE
        return verdict
    now = effective(entries)
    if outcome(now) == outcome(shadow):
        return verdict
    wire = final_status(entries)  # what the last status event on the topic said
    verdict.kind = CHANGED
    verdict.events = correction_events(key, now, wire, rebuilt.ordered(), base, rebuild, emitted_at)
    verdict.sequence = base + len(verdict.events)
    return verdict


# --- the live table values after the switch ----------------------------------------


def _index(prefix: str, bucket: Any, key: str) -> list[str]:
    return [] if bucket is None else [deadlines.index_key(prefix, int(bucket), key)]


def ordering_value(
    key: str, rebuilt: bytes, live: bytes | None, live_emitter: dict[str, Any] | None
) -> tuple[bytes, int, list[str]]:
    """The rebuilt ordering state for the live table: receipts no longer name shadow
    offsets (a live record with the same offset would pass for a redelivery), and the
    transition index continues above both generations' (transitions the live ordering
    agent numbered before the switch must not be taken for new ones). Returns the value,
    the index and the time-index keys to file."""
    state = orjson.loads(rebuilt)
    index = max(
        int(state.get("i", 0)),
        int(orjson.loads(live).get("i", 0)) if live else 0,
        int((live_emitter or {}).get("li", 0)),
    )
    state["i"] = index
    state["r"] = {k: [UNBOUND, *v[1:]] for k, v in (state.get("r") or {}).items()}
    keys = _index(EXPIRY, state.get("x"), key) + _index(MARKER_EXPIRY, state.get("y"), key)
    return orjson.dumps(state), index, keys


def emitter_value(
    key: str, rebuilt: dict[str, Any], sequence: int, index: int
) -> tuple[bytes, list[str]]:
    """The rebuilt emitter state for a corrected message: the live sequence after the
    corrections, the ordering index it now follows, no output records and no poll-request
    offset (they name shadow offsets). Returns the value and the time-index keys to file
    (deadline, expiry)."""
    state = dict(rebuilt)
    state.update(seq=sequence, li=index, out={})
    if state.get("ask"):  # [marker offset, time]: the offset is the shadow's
        state["ask"] = [UNBOUND, *state["ask"][1:]]
    keys = []
    if state.get("dl") is not None:
        bucket = deadlines.bucket_of(DEADLINE, float(state["dl"]))
        keys.append(deadlines.index_key(DEADLINE, bucket, key))
    keys += _index(EXPIRY, state.get("x"), key) + _index(MARKER_EXPIRY, state.get("y"), key)
    return orjson.dumps(state), keys


def read_model_doc(state: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, Any]:
    """The Redis document of a corrected message after its correction `events` (what the
    emitter writes after an event: the status told and that status's error)."""
    last = events[-1]["data"]
    told = [e["data"] for e in events if e["data"]["status"] not in ENGAGEMENT]
    return {
        "message_key": last["message_key"],
        "provider": last["provider"],
        "provider_message_id": last["provider_message_id"],
        "channel": last["channel"],
        "account": last["account"],
        "status": state.get("told"),
        "sequence": state["seq"],
        "error": told[-1]["error"] if told else None,
        "updated_at": last["emitted_at"],
    }


def read_model_note(event: dict[str, Any]) -> dict[str, Any]:
    data = event["data"]
    return {
        "status": data["status"],
        "provider_status": data.get("provider_status"),
        "occurred_at": data.get("occurred_at"),
        "observed_at": data["observed_at"],
        "outcome": "applied",
        "observed_ts": timestamp(data["emitted_at"]),
        "sequence": data["sequence"],
    }
