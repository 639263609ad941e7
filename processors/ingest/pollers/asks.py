"""Poll requests: "ask the provider once before this message is declared delivery_unknown".

When a deadline of a pollable provider is due, the worker's emitter writes a request to
`status.pollrequests` (processors/stream/emission.py `poll_request`) and waits
MSGSTATUS_DELIVERY_UNKNOWN_ASK_TIMEOUT before it fires. The poller reads those requests
(group `<prefix>msgstatus-poller-requests`), polls each message once, ahead of its
routine polls but within the same rate limit, and writes a new answer to
`raw.<provider>` like any poll. The answer takes the normal path through the stream; one
that says nothing newer than `sent` is not written, and the deadline fires.

Pure logic here (what a request asks, when it is too late, which offsets may be
committed); the I/O is in runner.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import orjson
from aiokafka.structs import TopicPartition

from processors.ingest.pollers.tracker import Pending, PollSpec

GROUP = "msgstatus-poller-requests"
MAX_WAITING = 10_000  # requests queued per poller before it stops reading more

# Outcomes of a request (label values of msgstatus_poller_asked_total), besides the poll
# outcomes it shares with routine polls (published, unchanged, not_found, ...).
EXPIRED = "expired"  # no answer before the ask timeout: the deadline fires anyway
UNPOLLABLE = "unpollable"  # no instance (RyzeAPI), a channel the provider cannot answer
NOT_CONFIGURED = "not_configured"  # this poller has no API settings for the provider
UNREADABLE = "unreadable"  # not a poll request


@dataclass(slots=True)
class Ask:
    """One poll request in the poller's hands."""

    item: Pending  # what to poll (not in the tracker: a request never changes its schedule)
    tp: TopicPartition
    offset: int
    expires: float  # wall clock after which the emitter has fired: asking is moot
    not_before: float = 0.0  # after a failed attempt: when to try again


def read_request(
    value: bytes | None,
    specs: Mapping[str, PollSpec],
    tp: TopicPartition,
    offset: int,
    timeout: float,
    now: float,
) -> Ask | str:
    """The Ask a `status.pollrequests` record makes, or why there is nothing to poll."""
    try:
        request = orjson.loads(value or b"")
        provider = request["provider"]
        message_id = request["provider_message_id"]
        asked_at = float(request["asked_at"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return UNREADABLE
    if not isinstance(provider, str) or not isinstance(message_id, str) or not message_id:
        return UNREADABLE
    spec = specs.get(provider)
    if spec is None:
        return NOT_CONFIGURED
    expires = asked_at + timeout
    if now >= expires:
        return EXPIRED
    channel = request.get("channel")
    if channel in (None, "api") and spec.default_channel:
        channel = spec.default_channel
    account = request.get("account") if isinstance(request.get("account"), str) else None
    if channel not in spec.channels or (spec.needs_account and not account):
        return UNPOLLABLE
    item = Pending(
        key=f"{provider}:{message_id}",
        provider=provider,
        message_id=message_id,
        channel=channel,
        account=account,
        partition=tp.partition,
        first_seen=now,
        status="sent",  # asked only while `sent` is the last status told
        due=now,
        in_flight=True,
    )
    return Ask(item=item, tp=tp, offset=offset, expires=expires)


class RequestOffsets:
    """What may be committed: per partition, up to the oldest request still unanswered.

    Requests are answered out of order (several in flight, retries), so a partition's
    commit point is the lowest open offset, or the end of what was read when none is open.
    """

    def __init__(self) -> None:
        self._open: dict[TopicPartition, set[int]] = {}
        self._read: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}

    def opened(self, tp: TopicPartition, offset: int) -> None:
        self._open.setdefault(tp, set()).add(offset)

    def read(self, tp: TopicPartition, next_offset: int) -> None:
        self._read[tp] = max(next_offset, self._read.get(tp, 0))

    def answered(self, tp: TopicPartition, offset: int) -> None:
        waiting = self._open.get(tp)
        if waiting is not None:
            waiting.discard(offset)

    def due(self) -> dict[TopicPartition, int]:
        """Offsets to commit now (only those that moved since the last commit)."""
        out: dict[TopicPartition, int] = {}
        for tp, end in self._read.items():
            waiting = self._open.get(tp)
            point = min(waiting) if waiting else end
            if point > self._committed.get(tp, -1):
                out[tp] = point
        return out

    def committed(self, offsets: Mapping[TopicPartition, int]) -> None:
        self._committed.update(offsets)

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        for tp in tps:
            self._open.pop(tp, None)
            self._read.pop(tp, None)
            self._committed.pop(tp, None)

    def owns(self, tp: TopicPartition) -> bool:
        return tp in self._read or tp in self._open
