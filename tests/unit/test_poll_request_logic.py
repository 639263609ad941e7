"""Poll requests ("ask once before delivery_unknown"), the poller's side: what a request
asks, when it is moot, which offsets may be committed. No network: nothing is run."""

from __future__ import annotations

import orjson
import pytest
from aiokafka.structs import TopicPartition

from processors.config import Settings
from processors.ingest.pollers import MODULES, asks
from processors.ingest.pollers.asks import Ask, RequestOffsets, read_request
from processors.ingest.pollers.runner import UNAUTHORIZED, Poller, PollerConfig, targets
from processors.ingest.producer import MemorySink

TP = TopicPartition("p.status.pollrequests", 2)
SPECS = {name: MODULES[name].SPEC for name in ("ryze", "octopods")}
NOW = 1_763_900_000.0


def request(**fields: object) -> bytes:
    body = {
        "message_key": "ryze:3EB0A",
        "provider": "ryze",
        "provider_message_id": "3EB0A",
        "account": "inst-a",
        "channel": "whatsapp",
        "deadline": NOW - 10,
        "asked_at": NOW - 5,
    }
    body.update(fields)
    return orjson.dumps(body)


def test_a_request_becomes_one_poll_of_that_message() -> None:
    found = read_request(request(), SPECS, TP, 41, timeout=120.0, now=NOW)
    assert isinstance(found, Ask)
    assert (found.tp, found.offset, found.expires) == (TP, 41, NOW - 5 + 120.0)
    item = found.item
    assert (item.key, item.provider, item.message_id) == ("ryze:3EB0A", "ryze", "3EB0A")
    assert (item.account, item.channel, item.status) == ("inst-a", "whatsapp", "sent")
    # a channel the provider only has one of is filled in, as for routine polls
    assert read_request(request(channel="api"), SPECS, TP, 1, 120.0, NOW).item.channel == (
        "whatsapp"
    )
    octopods_sms = request(provider="octopods", provider_message_id="O1", channel="sms")
    assert read_request(octopods_sms, SPECS, TP, 1, 120.0, NOW).item.channel == "sms"


@pytest.mark.parametrize(
    ("value", "outcome"),
    [
        (b"not json", asks.UNREADABLE),
        (orjson.dumps({"provider": "ryze"}), asks.UNREADABLE),
        (request(provider_message_id=""), asks.UNREADABLE),
        (request(provider="tracksend"), asks.NOT_CONFIGURED),
        (request(asked_at=NOW - 121), asks.EXPIRED),  # the deadline has fired by now
        (request(account=None), asks.UNPOLLABLE),  # RyzeAPI polls per instance
        (request(channel="sms"), asks.UNPOLLABLE),  # RyzeAPI is WhatsApp only
        (request(provider="octopods", channel="api"), asks.UNPOLLABLE),  # which endpoint?
    ],
)
def test_requests_that_cannot_or_need_not_be_polled(value: bytes, outcome: str) -> None:
    assert read_request(value, SPECS, TP, 0, timeout=120.0, now=NOW) == outcome


def test_offsets_are_committed_up_to_the_oldest_unanswered_request() -> None:
    offsets = RequestOffsets()
    other = TopicPartition(TP.topic, 0)
    for offset in (10, 11, 12):
        offsets.opened(TP, offset)
    offsets.read(TP, 13)
    offsets.read(other, 5)  # read, nothing open: all of it may be committed
    assert offsets.due() == {TP: 10, other: 5}
    offsets.committed({TP: 10, other: 5})
    offsets.answered(TP, 12)  # out of order: 10 still waits
    assert offsets.due() == {}
    offsets.answered(TP, 10)
    assert offsets.due() == {TP: 11}
    offsets.committed({TP: 11})
    offsets.answered(TP, 11)
    assert offsets.due() == {TP: 13}
    offsets.forget([TP])
    assert offsets.due() == {}


def poller(**env: str) -> Poller:
    settings = Settings.from_env(
        {
            "MSGSTATUS_RYZE_API_URL": "http://127.0.0.1:9/",
            "MSGSTATUS_RYZE_API_TOKEN": "t",
            "MSGSTATUS_DELIVERY_UNKNOWN_ASK_TIMEOUT": "60",
            **env,
        }
    )
    return Poller(settings, PollerConfig.from_settings(settings), targets(settings), MemorySink())


def test_the_poller_queues_what_it_can_ask_and_settles_the_rest_at_once() -> None:
    p = poller()
    p.ask(request(), TP, 0, NOW)  # queued
    p.ask(request(provider="octopods"), TP, 1, NOW)  # no Octopods API here
    p.ask(request(asked_at=NOW - 61), TP, 2, NOW)  # moot
    p.ask(b"{}", TP, 3, NOW)
    p.request_offsets.read(TP, 4)
    assert [a.offset for a in p.states["ryze"].asks] == [0]
    assert p.request_offsets.due() == {TP: 0}  # 0 waits for its answer
    # the message is tracked and an answer was written before: the same answer is not news
    p.learn(orjson.dumps({"data": {"provider": "ryze", "provider_message_id": "3EB0B",
                                   "channel": "whatsapp", "account": "inst-a",
                                   "status": "sent"}}), 2, NOW)  # fmt: skip
    p.tracker.pending["ryze:3EB0B"].published = b"digest"
    p.ask(request(provider_message_id="3EB0B", message_key="ryze:3EB0B"), TP, 4, NOW)
    assert p.states["ryze"].asks[-1].item.published == b"digest"


def test_requests_past_their_timeout_are_settled_while_waiting() -> None:
    p = poller()
    state = p.states["ryze"]
    p.ask(request(asked_at=NOW), TP, 0, NOW)
    p.ask(request(asked_at=NOW + 30), TP, 1, NOW + 30)
    p.request_offsets.read(TP, 2)
    entry, _ = p._next_ask(state, NOW + 61)  # the first one's 60 s are over
    assert entry is not None and entry.offset == 1
    assert p.request_offsets.due() == {TP: 1}
    state.asks[0].not_before = NOW + 70  # after a failed attempt
    entry, when = p._next_ask(state, NOW + 65)
    assert entry is None and when == NOW + 70


def test_a_provider_that_refuses_our_token_settles_its_requests() -> None:
    p = poller()
    state = p.states["ryze"]
    for offset in range(3):
        p.ask(request(), TP, offset, NOW)
    p.request_offsets.read(TP, 3)
    p._stop(state, 401, "Invalid token")
    assert state.asks == [] and p.request_offsets.due() == {TP: 3}
    p.ask(request(), TP, 3, NOW)  # later ones too, at once
    p.request_offsets.read(TP, 4)
    assert p.request_offsets.due() == {TP: 4}
    assert UNAUTHORIZED == "unauthorized"
