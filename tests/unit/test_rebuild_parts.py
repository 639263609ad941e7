"""The other pure parts of `msgstatus rebuild` and the shared progress line: flags,
naming of the shadow generation, the raw-topic prefix, lag arithmetic, the summary."""

from __future__ import annotations

import io

import pytest
from aiokafka import TopicPartition

from processors.config import Settings
from processors.kafka.topics import CANONICAL, all_topics, changelog_topic, raw_topic
from processors.ops import corrections as c
from processors.ops import journal, rebuild, shadow
from processors.ops.progress import Progress, clock, render
from processors.ops.switch import Scope, Tally

LIVE = Settings(kafka_bootstrap="127.0.0.1:1", topic_prefix="p.", data_dir="/srv/msgstatus")


# --- progress ---------------------------------------------------------------------------


def test_render_with_total_shows_bar_rate_and_eta():
    line = render("replay", 250, 1000, 50.0)
    assert line == "replay [######------------------] 250/1,000 records  25% 50/s ETA 0:15"


def test_render_without_total_or_rate():
    assert render("reading", 12, None, None) == "reading 12 records"
    assert render("x", 5, 5, 10.0).endswith("100% 10/s")  # no ETA when done


def test_clock():
    assert (clock(65), clock(3725), clock(-3)) == ("1:05", "1:02:05", "0:00")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_off_a_terminal_writes_a_line_every_few_seconds():
    out, now = io.StringIO(), Clock()
    bar = Progress("replay", 100, stream=out, now=now)
    for step in range(1, 101):
        now.now = step * 0.1  # 10 s in all
        bar.update(step)
    bar.finish("done")
    lines = out.getvalue().splitlines()
    assert 2 <= len(lines) <= 5, lines  # not one per record
    assert lines[-1].startswith("replay [####") and lines[-1].endswith("-- in 0:10, done")
    assert "100/100 records 100%" in lines[-1]


def test_progress_rate_counts_from_the_first_move():
    out, now = io.StringIO(), Clock()
    bar = Progress("rebuild", 1000, stream=out, now=now)
    now.now = 30.0  # a slow start-up (a consumer joining) is not slow progress
    bar.update(0)
    bar.update(10)
    now.now = 32.0
    bar.update(210)
    assert bar.rate() == pytest.approx(100.0)


# --- flags ------------------------------------------------------------------------------


def test_request_defaults_to_every_provider():
    req = rebuild.request(None, False)
    assert req.scope.providers is None and not req.dry_run
    assert rebuild.request(None, True).scope == req.scope
    named = rebuild.request(["twilio", "crm", "twilio"], False, dry_run=True, examples=3)
    assert named.scope.providers == frozenset({"twilio", "crm"}) and named.examples == 3


@pytest.mark.parametrize(
    "names, everything, examples, timeout",
    [
        (["twilio"], True, 20, 10.0),
        (["Twilio"], False, 20, 10.0),
        (["a:b"], False, 20, 10.0),
        (None, False, -1, 10.0),
        (None, False, 20, -1.0),
    ],
)
def test_request_refuses_bad_flags(names, everything, examples, timeout):
    with pytest.raises(rebuild.UsageError):
        rebuild.request(names, everything, examples=examples, stop_timeout=timeout)


def test_scope_matches_the_provider_part_of_the_key():
    scope = Scope(frozenset({"twilio"}))
    assert scope.wants("twilio:SM1") and not scope.wants("twilio2:SM1")
    assert not scope.wants("crm:twilio:1") and Scope().wants("anything:1")


# --- the shadow generation --------------------------------------------------------------


def test_shadow_reads_live_raw_topics_and_writes_its_own():
    gen = shadow.Shadow(LIVE, "7")
    s = gen.settings
    assert gen.prefix == "p.rebuild-7."
    assert raw_topic(s, "twilio") == raw_topic(LIVE, "twilio") == "p.raw.twilio"
    assert s.topic(CANONICAL) == "p.rebuild-7.status.canonical"
    assert changelog_topic(s, "ordering") == "p.rebuild-7.msgstatus-ordering-changelog"
    assert shadow.app_group(s) == "p.rebuild-7.msgstatus"
    assert shadow.normalize_group(s) == "p.rebuild-7.msgstatus-normalize"
    assert str(gen.data_dir) == "/srv/msgstatus/rebuild-7" and s.metrics_port == 0
    env = gen.env({"MSGSTATUS_TOPIC_PREFIX": "p.", "MSGSTATUS_TWILIO_AUTH_TOKEN": "x"})
    assert env["MSGSTATUS_TOPIC_PREFIX"] == "p.rebuild-7."
    assert env["MSGSTATUS_RAW_TOPIC_PREFIX"] == "p."
    assert env["MSGSTATUS_TWILIO_AUTH_TOKEN"] == "x"  # the live configuration otherwise
    assert Settings.from_env(env).raw_prefix == "p."
    # every topic the shadow worker creates is its own, except the live raw topics
    own = [t for t in all_topics(s, ["twilio"]) if not t.startswith("p.rebuild-7.")]
    assert own == ["p.raw.twilio"]


def test_empty_live_prefix_is_kept_for_the_raw_topics():
    gen = shadow.Shadow(Settings(kafka_bootstrap="127.0.0.1:1"), "2")
    assert raw_topic(gen.settings, "meta") == "raw.meta"
    assert Settings.from_env(gen.env({})).raw_prefix == ""
    assert Settings.from_env({}).raw_prefix == ""  # unset: the topic prefix


def test_behind_counts_from_the_log_start_without_a_commit():
    a, b = TopicPartition("r", 0), TopicPartition("r", 1)
    targets, starts = {a: 100, b: 50}, {a: 10, b: 0}
    assert shadow.behind(targets, starts, {}) == 140
    assert shadow.behind(targets, starts, {a: 60, b: 70}) == 40
    assert shadow.behind(targets, starts, {a: 5}) == 140  # below the log start


def test_journal_numbers_rebuilds():
    assert journal.next_number({}) == 1 and journal.latest({}) is None
    entries = {1: {"phase": "done"}, 3: {"phase": "failed"}}
    assert journal.next_number(entries) == 4 and journal.latest(entries) == {"phase": "failed"}


# --- the summary ------------------------------------------------------------------------


def test_tally_counts_by_provider_and_final_statuses():
    tally = Tally(examples_limit=1)
    changed = c.Verdict("twilio:A", c.CHANGED, ["sent", "delivered"], ["sent", "undelivered"])
    changed.events = [{"data": {"sequence": 3, "status": "undelivered"}}]
    new = c.Verdict("crm:B", c.NEW, [], ["sent", "clicked"])
    tally.add(changed)
    tally.add(new)
    tally.add(c.Verdict("twilio:C", c.UNCHANGED, ["sent"], ["sent"]))
    summary = tally.to_dict()
    assert summary["messages"] == {
        "compared": 3,
        "unchanged": 1,
        "changed": 1,
        "new": 1,
        "missing": 0,
        "incomplete": 0,
    }
    assert summary["changed"] == {
        "crm": {"(none) -> sent": 1},
        "twilio": {"delivered -> undelivered": 1},
    }
    assert summary["corrections"] == {"events": 1, "by_status": {"undelivered": 1}}
    assert summary["examples"] == [
        {
            "message_key": "twilio:A",
            "kind": "changed",
            "live": ["sent", "delivered"],
            "rebuilt": ["sent", "undelivered"],
            "corrections": [[3, "undelivered"]],
        }
    ]
