"""The pure parts of `msgstatus replay` and `msgstatus redrive`."""

from __future__ import annotations

import pytest
from aiokafka import TopicPartition

from processors.config import Settings
from processors.ops import redrive, replay

REGISTRY = {"twilio": object(), "meta": object()}
SETTINGS = Settings(kafka_bootstrap="127.0.0.1:1", topic_prefix="p.")


def test_selection_names_raw_topics():
    chosen = replay.selection(SETTINGS, REGISTRY, ["twilio", "twilio"], False, None, None, None)
    assert chosen.topics == ["p.raw.twilio"]
    everything = replay.selection(SETTINGS, REGISTRY, None, True, None, None, 7)
    assert everything.topics == ["p.raw.meta", "p.raw.twilio"] and everything.from_offset == 7


@pytest.mark.parametrize(
    "provider, everything, since, until, offset",
    [
        (None, False, None, None, None),
        (["twilio"], True, None, None, None),
        (["nope"], False, None, None, None),
        (["twilio"], False, "yesterday", None, None),
        (["twilio"], False, "2026-01-01T00:00:00", None, None),  # no zone
        (["twilio"], False, "2026-01-02T00:00:00Z", "2026-01-01T00:00:00Z", None),
        (["twilio"], False, "2026-01-01T00:00:00Z", None, 5),
        (["twilio"], False, None, None, -1),
    ],
)
def test_selection_refuses_bad_flags(provider, everything, since, until, offset):
    with pytest.raises(replay.UsageError):
        replay.selection(SETTINGS, REGISTRY, provider, everything, since, until, offset)


def test_window_is_since_inclusive_until_exclusive():
    start = replay.parse_instant("2026-11-20T00:00:00Z")
    assert replay.parse_instant("2026-11-20T01:00:00+01:00") == start
    wider = replay.Selection([], since=start, until=start + 60)
    assert wider.wants(int(start * 1000)) and wider.wants(int((start + 59.9) * 1000))
    assert not wider.wants(int((start - 0.001) * 1000)) and not wider.wants(
        int((start + 60) * 1000)
    )


def test_empty_window_is_refused():
    with pytest.raises(replay.UsageError):
        replay.selection(
            SETTINGS,
            REGISTRY,
            ["meta"],
            False,
            "2026-11-20T00:00:00Z",
            "2026-11-20T01:00:00+01:00",
            None,
        )


def test_redrive_plan_folds_letters_of_one_record_and_reports_the_rest():
    letters = [
        {"id": "a", "source": "p.raw.events:0:42"},
        {"id": "b", "source": "p.raw.events:0:42"},
        {"id": "c", "source": "p.raw.meta:3:7"},
        {"id": "d", "source": None},
        {"id": "e", "source": "garbage"},
    ]
    everything = redrive.plan(letters, None)
    assert everything.sources == {
        TopicPartition("p.raw.events", 0): {42},
        TopicPartition("p.raw.meta", 3): {7},
    }
    assert everything.unsourced == ["d", "e"] and not everything.missing_ids
    some = redrive.plan(letters, ["c", "zzz"])
    assert [x["id"] for x in some.letters] == ["c"] and some.missing_ids == ["zzz"]
    assert some.sources == {TopicPartition("p.raw.meta", 3): {7}}
