"""The poller's pure logic on a simulated clock: what is due, finality, age, backoff, rate."""

from __future__ import annotations

import random
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.config import ConfigError, PollerConfig, Settings
from processors.ingest.pollers import MODULES
from processors.ingest.pollers.runner import retry_after_seconds, targets
from processors.ingest.pollers.tracker import (
    Backoff,
    TokenBucket,
    Tracker,
    backoff_delay,
    is_final,
    is_news,
)

T0 = 1_800_000_000.0
SPECS = {name: client.SPEC for name, client in MODULES.items()}
ryze, octopods = MODULES["ryze"], MODULES["octopods"]


def status_event(
    message_id: str,
    status: str = "sent",
    *,
    provider: str = "ryze",
    channel: str | None = "whatsapp",
    account: str | None = "inst-1",
    observed_at: float = T0,
) -> dict:
    return {
        "provider": provider,
        "provider_message_id": message_id,
        "channel": channel,
        "account": account,
        "status": status,
        "observed_at": observed_at,
    }


def tracker(**kwargs) -> Tracker:
    return Tracker(SPECS, rng=random.Random(1), **{"interval": 15.0, **kwargs})


# --- finality ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("channel", "status", "final"),
    [
        ("whatsapp", "sent", False),
        ("whatsapp", "delivery_unknown", False),
        ("whatsapp", "delivered", False),  # read may still come
        ("whatsapp", "read", True),
        ("whatsapp", "played", True),
        ("whatsapp", "failed", True),
        ("whatsapp", "deleted", True),  # recipient deleted it: nothing more to learn
        ("sms", "sent", False),
        ("sms", "delivered", True),
        ("sms", "undelivered", True),
        ("viber", "delivered", True),
        ("viber", "queued", False),
        ("sms", "rejected", True),
        ("sms", "expired", True),
        ("sms", None, False),
    ],
)
def test_finality_per_channel(channel: str, status: str | None, final: bool) -> None:
    assert is_final(channel, status) is final


def test_final_message_leaves_and_never_comes_back() -> None:
    t = tracker()
    assert t.observe(status_event("A"), 0, T0).outcome == "added"
    assert t.observe(status_event("A", "delivered"), 0, T0 + 1).outcome == "updated"
    assert t.pending["ryze:A"].status == "delivered"
    assert t.observe(status_event("A", "read"), 0, T0 + 2).outcome == "finished"
    assert "ryze:A" not in t.pending
    # a late (replayed) event for it does not restart polling
    assert t.observe(status_event("A", "sent"), 0, T0 + 3).outcome == "ignored"
    assert t.count("ryze") == 0


def test_sms_is_final_at_delivered_whatsapp_at_read() -> None:
    t = tracker()
    t.observe(status_event("S", provider="octopods", channel="sms", account=None), 0, T0)
    t.observe(status_event("W", provider="octopods", channel="whatsapp", account=None), 0, T0)
    sms = status_event("S", "delivered", provider="octopods", channel="sms")
    wa = status_event("W", "delivered", provider="octopods", channel="whatsapp")
    assert t.observe(sms, 0, T0).outcome == "finished"
    assert t.observe(wa, 0, T0).outcome == "updated"
    assert list(t.pending) == ["octopods:W"]


def test_what_is_not_tracked() -> None:
    t = tracker()
    assert t.observe(status_event("X", provider="twilio"), 0, T0).outcome == "ignored"
    assert t.observe(status_event("X", account=None), 0, T0).outcome == "ignored"  # no instance
    viber = status_event("V", provider="octopods", channel="viber")
    assert t.observe(viber, 0, T0).outcome == "ignored"  # no documented endpoint
    assert t.observe(status_event("F", "failed"), 0, T0).outcome == "final"
    assert t.observe({"provider": "ryze"}, 0, T0).outcome == "ignored"
    assert t.observe(status_event("E", "clicked"), 0, T0).outcome == "ignored"
    assert not t.pending


def test_ryze_messages_registered_without_channel_are_whatsapp() -> None:
    t = tracker()
    assert t.observe(status_event("A", channel="api"), 0, T0).outcome == "added"
    assert t.pending["ryze:A"].channel == "whatsapp"


# --- what is due ------------------------------------------------------------------------


def test_first_poll_one_interval_after_the_message_was_told() -> None:
    t = tracker()
    t.observe(status_event("A", observed_at=T0), 0, T0)
    due = t.next_due("ryze")
    assert due is not None and T0 + 15 * 0.8 <= due <= T0 + 15 * 1.2
    assert t.take("ryze", T0 + 5) is None
    item = t.take("ryze", due)
    assert item is not None and item.key == "ryze:A" and item.in_flight
    assert t.take("ryze", due + 100) is None  # in flight: not handed out twice


def test_old_messages_are_due_at_once() -> None:
    t = tracker()
    t.observe(status_event("A", observed_at=T0 - 3600), 0, T0)
    assert t.next_due("ryze") == T0


def test_most_overdue_first_and_providers_apart() -> None:
    t = tracker()
    for i, age in enumerate((100, 300, 200)):
        t.observe(status_event(f"M{i}", observed_at=T0 - age), 0, T0 - age + 20)
    t.observe(status_event("O", provider="octopods", account=None, observed_at=T0 - 999), 0, T0)
    order = [t.take("ryze", T0).message_id for _ in range(3)]
    assert order == ["M1", "M2", "M0"]
    assert t.take("ryze", T0) is None
    assert t.take("octopods", T0).message_id == "O"


def test_polled_reschedules_with_jitter_within_the_providers_range() -> None:
    t = tracker()
    t.observe(status_event("A", observed_at=T0 - 100), 0, T0)
    t.observe(status_event("O", provider="octopods", account=None, observed_at=T0 - 100), 0, T0)
    gaps = {"ryze": [], "octopods": []}
    now = T0
    for _ in range(200):
        for provider in gaps:
            item = t.take(provider, now + 1000)
            t.polled(item.key, now)
            gaps[provider].append(t.pending[item.key].due - now)
    assert min(gaps["ryze"]) >= 12.0 and max(gaps["ryze"]) <= 18.0
    assert min(gaps["octopods"]) >= 10.0 and max(gaps["octopods"]) <= 30.0
    assert max(gaps["octopods"]) - min(gaps["octopods"]) > 10  # really spread


def test_retry_and_drop() -> None:
    t = tracker()
    t.observe(status_event("A", observed_at=T0 - 100), 0, T0)
    item = t.take("ryze", T0)
    t.retry(item.key, T0 + 42)
    assert t.next_due("ryze") == T0 + 42
    assert t.drop("ryze:A", "not_found")
    assert t.done["ryze:A"] == "not_found"
    assert t.next_due("ryze") is None
    assert not t.drop("ryze:A", "not_found")
    t.polled("ryze:A", T0)  # an answer arriving after the drop is ignored


def test_revoked_partitions_are_forgotten() -> None:
    t = tracker()
    t.observe(status_event("A"), 0, T0)
    t.observe(status_event("B"), 1, T0)
    assert t.revoke([0]) == 1
    assert list(t.pending) == ["ryze:B"]


# --- max age ----------------------------------------------------------------------------


def test_max_age_counts_from_when_the_message_was_first_seen() -> None:
    t = tracker(max_age=3600.0)
    t.observe(status_event("A", observed_at=T0), 0, T0)
    t.observe(status_event("B", observed_at=T0 + 1800), 0, T0 + 1800)
    assert t.expire(T0 + 3599) == []
    assert t.expire(T0 + 3601) == ["ryze:A"]
    assert list(t.pending) == ["ryze:B"]
    assert t.done["ryze:A"] == "expired"
    # a later event (delivery_unknown, say) does not make it young again
    assert t.observe(status_event("A", "delivery_unknown"), 0, T0 + 4000).outcome == "ignored"


def test_too_old_when_first_read_is_never_tracked() -> None:
    t = tracker(max_age=3600.0)
    old = status_event("A", observed_at=T0 - 7200)
    assert t.observe(old, 0, T0).outcome == "expired"
    assert not t.pending


def test_a_poll_after_max_age_ends_polling() -> None:
    t = tracker(max_age=60.0)
    t.observe(status_event("A", observed_at=T0), 0, T0)
    item = t.take("ryze", T0 + 30)
    t.polled(item.key, T0 + 61)
    assert "ryze:A" not in t.pending


# --- is the answer news? ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("known", "statuses", "dead", "news"),
    [
        ("sent", ["sent"], 0, False),
        ("sent", ["delivered"], 0, True),
        ("delivery_unknown", ["delivered"], 0, True),
        ("delivered", ["delivered"], 0, False),
        ("delivered", ["sent"], 0, False),
        ("sent", [], 0, False),  # Octopods UNKNOWN
        ("sent", [], 1, True),  # an unknown word must reach the dead-letter topic
        ("sent", ["failed"], 0, True),
        ("delivered", ["failed"], 0, True),  # a conflict is recorded in history
        ("delivered", ["delivered", "deleted"], 0, True),  # engagement
    ],
)
def test_is_news(known: str, statuses: list[str], dead: int, news: bool) -> None:
    assert is_news(known, statuses, dead) is news


# --- backoff ----------------------------------------------------------------------------


def test_backoff_is_exponential_and_clamped() -> None:
    assert [backoff_delay(n, 1.0, 60.0) for n in range(9)] == [0, 1, 2, 4, 8, 16, 32, 60, 60]
    assert backoff_delay(10_000, 0.5, 300.0) == 300.0  # no overflow for long outages


def test_backoff_state_honours_retry_after_but_clamps_it() -> None:
    b = Backoff(base=1.0, cap=120.0)
    assert b.failure(T0) == 1.0 and b.wait(T0) == 1.0 and b.probing
    now = T0 + 1
    assert b.failure(now) == 2.0
    now += 2
    assert b.failure(now, retry_after=30.0) == 30.0
    now += 30
    assert b.failure(now, retry_after=10_000.0) == 120.0
    assert b.wait(now + 100) == pytest.approx(20.0)
    b.success()
    assert b.failures == 0 and not b.probing
    assert b.failure(now + 200) == 1.0


def test_failures_answered_during_a_pause_count_once() -> None:
    """Four polls in flight all get 429: one step of backoff, not four."""
    b = Backoff(base=1.0, cap=60.0)
    assert [b.failure(T0 + i * 0.01) for i in range(4)] == pytest.approx([1.0, 0.99, 0.98, 0.97])
    assert b.failures == 1
    assert b.failure(T0 + 0.5, retry_after=10.0) == pytest.approx(10.0)  # the provider's word
    assert b.failures == 1


def test_retry_after_parsing() -> None:
    assert retry_after_seconds("30") == 30.0
    assert retry_after_seconds(" 1.5 ") == 1.5
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert retry_after_seconds("-1") is None
    assert retry_after_seconds(None) is None


# --- the rate limit ---------------------------------------------------------------------


def max_in_window(times: list[float], window: float) -> int:
    best = 0
    recent: deque[float] = deque()
    for t in times:
        recent.append(t)
        while recent[0] <= t - window:
            recent.popleft()
        best = max(best, len(recent))
    return best


@pytest.mark.parametrize("limit", [1, 5, 60, 100, 1000])
def test_token_bucket_never_exceeds_the_limit_in_any_minute(limit: int) -> None:
    """A greedy taker over a simulated five minutes: no 60 s window holds more than the
    limit, even one stretched by 5 s of network jitter, and the limit is well used."""
    start = T0
    bucket = TokenBucket.for_limit(limit, start)
    now, taken = start, []
    rng = random.Random(limit)
    while now < start + 300:
        wait = bucket.try_take(now)
        if wait == 0:
            taken.append(now)
        else:
            now += wait * rng.choice((0.5, 1.0, 1.0, 1.5))  # wake early, on time or late
        now += rng.choice((0.0, 0.0, 0.01))
    assert max_in_window(taken, 60.0) <= limit
    assert max_in_window(taken, 65.0) <= limit
    per_minute = len(taken) / 5
    assert per_minute >= 0.8 * limit if limit >= 20 else per_minute >= 0.5 * limit


@settings(max_examples=150, deadline=None)
@given(
    limit=st.integers(min_value=1, max_value=600),
    steps=st.lists(st.floats(min_value=0.0, max_value=5.0), min_size=1, max_size=400),
)
def test_token_bucket_any_schedule(limit: int, steps: list[float]) -> None:
    bucket = TokenBucket.for_limit(limit, T0)
    now, taken = T0, []
    for step in steps:
        now += step
        while bucket.try_take(now) == 0:
            taken.append(now)
    assert max_in_window(taken, 60.0) <= limit


def test_refund_gives_a_token_back_without_exceeding_capacity() -> None:
    bucket = TokenBucket.for_limit(100, T0)
    assert bucket.try_take(T0) == 0
    bucket.refund(T0)
    assert bucket.tokens == bucket.capacity
    bucket.refund(T0)
    assert bucket.tokens == bucket.capacity


def test_token_bucket_spreads_polls() -> None:
    bucket = TokenBucket.for_limit(100, T0)
    burst = 0
    while bucket.try_take(T0) == 0:
        burst += 1
    assert burst == 5  # a small burst, then the refill rate spreads the rest
    assert bucket.try_take(T0) == pytest.approx(1 / bucket.rate)


# --- settings ---------------------------------------------------------------------------


def test_poller_settings_and_targets() -> None:
    s = Settings.from_env(
        {
            "MSGSTATUS_RYZE_API_URL": "https://ryze.example",
            "MSGSTATUS_RYZE_API_TOKEN": "t",
            "MSGSTATUS_RYZE_RATE_LIMIT": "60",
            "MSGSTATUS_POLL_INTERVAL": "2.5",
        }
    )
    config = PollerConfig.from_settings(s)
    assert config.interval == 2.5 and config.max_age == 72 * 3600
    [target] = targets(s)
    assert (target.name, target.rate_limit, target.base_url) == ("ryze", 60, "https://ryze.example")
    assert targets(Settings()) == []


@pytest.mark.parametrize(
    "env",
    [
        {"MSGSTATUS_POLL_INTERVAL": "soon"},
        {"MSGSTATUS_POLL_INTERVAL": "0"},
        {"MSGSTATUS_RYZE_API_URL": "https://ryze.example"},  # token missing
        {"MSGSTATUS_RYZE_API_URL": "ryze.example", "MSGSTATUS_RYZE_API_TOKEN": "t"},
        {
            "MSGSTATUS_RYZE_API_URL": "https://r",
            "MSGSTATUS_RYZE_API_TOKEN": "t",
            "MSGSTATUS_RYZE_RATE_LIMIT": "0",
        },
    ],
)
def test_bad_poller_settings_are_config_errors(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="MSGSTATUS_"):  # at start, or when the poller starts
        targets(Settings.from_env(env))


def test_poll_requests() -> None:
    t = tracker()
    t.observe(status_event("3EB0/x y", account="inst 1"), 0, T0)
    t.observe(status_event("oct-1", provider="octopods", channel="sms", account=None), 0, T0)
    item = t.pending["ryze:3EB0/x y"]
    url, headers = ryze.request("https://ryze.example/", "tok", item)
    assert url == "https://ryze.example/api/chat/status/inst%201?messageId=3EB0%2Fx+y"
    assert headers["token"] == "tok"
    url, headers = octopods.request("https://oct.example", "tok", t.pending["octopods:oct-1"])
    assert url == "https://oct.example/api/v1/sms/messages/oct-1"
    assert headers["authorization"] == "Bearer tok"
    assert ryze.error_message(b'{"success":false,"error":{"message":"Message not found"}}') == (
        "Message not found"
    )
    assert octopods.error_message(b"<html>") is None
