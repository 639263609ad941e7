"""processors.transitions: every rule of DESIGN.md section 5, then its promises as properties.

The promises: whatever order or multiplicity a message's events arrive in, the final
status is the same, the applied statuses never regress, and a replay applies nothing.
"""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.model import ENGAGEMENT, FAILURES, PROGRESS, RANK, CanonicalEvent
from processors.transitions import (
    APPLIED,
    CONFLICT,
    DUPLICATE,
    IGNORED,
    STALE,
    MessageState,
    Outcome,
    apply,
    classify,
    dedup_key,
)

T0 = 1_700_000_000.0
DELIVERED = RANK["delivered"]
# Outbound progress an event may carry; delivery_unknown is the emitter's alone.
OUTBOUND_PROGRESS = tuple(p for p in PROGRESS if p != "delivery_unknown")
BELOW_DELIVERED = tuple(p for p in OUTBOUND_PROGRESS if RANK[p] < DELIVERED)
DELIVERED_OR_HIGHER = tuple(p for p in OUTBOUND_PROGRESS if RANK[p] >= DELIVERED)


def ev(status: str, provider_status: str | None = None, **kw) -> CanonicalEvent:
    return CanonicalEvent(
        provider=kw.pop("provider", "twilio"),
        provider_message_id=kw.pop("provider_message_id", "SM1"),
        status=status,
        provider_status=provider_status if provider_status is not None else status,
        channel=kw.pop("channel", "sms"),
        observed_at=kw.pop("observed_at", T0),
        **kw,
    )


def run(*statuses: str | tuple[str, str], state: MessageState | None = None):
    """Apply events (a status, or (status, provider_status)) in order."""
    state = state or MessageState()
    outcomes: list[Outcome] = []
    for item in statuses:
        event = ev(*item) if isinstance(item, tuple) else ev(item)
        state, outcome = apply(state, event)
        outcomes.append(outcome)
    return state, outcomes


def kinds(outcomes: list[Outcome]) -> list[str]:
    return [o.kind for o in outcomes]


# --- rule 1: progress ------------------------------------------------------------------


def test_first_progress_is_applied():
    state, [outcome] = run("queued")
    assert outcome == Outcome(APPLIED, "queued", None, 1, ())
    assert state.status == "queued" and state.index == 1


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        ("accepted", "sent"),
        ("sent", "delivered"),
        ("delivered", "read"),
        ("read", "played"),
        ("accepted", "scheduled"),
        ("queued", "sending"),
    ],
)
def test_progress_forward_applies_backward_is_stale(lower, higher):
    state, outcomes = run(lower, higher)
    assert kinds(outcomes) == [APPLIED, APPLIED]
    assert outcomes[1].previous_status == lower
    assert state.status == higher

    state, outcomes = run(higher, lower)
    assert kinds(outcomes) == [APPLIED, STALE]
    assert outcomes[1].index is None and outcomes[1].previous_status == higher
    assert state.status == higher and state.index == 1


def test_same_status_other_provider_status_is_stale_not_duplicate():
    state, outcomes = run(("delivered", "DELIVRD"), ("delivered", "delivered"))
    assert kinds(outcomes) == [APPLIED, STALE]
    assert state.status == "delivered" and state.index == 1


@pytest.mark.parametrize("failure", sorted(FAILURES))
@pytest.mark.parametrize("progress", BELOW_DELIVERED)
def test_failure_is_not_left_for_progress_below_delivered(failure, progress):
    state, outcomes = run(failure, progress)
    assert kinds(outcomes) == [APPLIED, STALE]
    assert state.status == failure and state.index == 1


@pytest.mark.parametrize("failure", sorted(FAILURES))
@pytest.mark.parametrize("progress", DELIVERED_OR_HIGHER)
def test_failure_recovered_by_delivered_or_higher(failure, progress):
    state, outcomes = run("sent", failure, progress)
    assert kinds(outcomes) == [APPLIED, APPLIED, APPLIED]
    assert outcomes[2].previous_status == failure
    assert state.status == progress and state.index == 3


def test_after_recovery_progress_rules_apply_again():
    state, outcomes = run("failed", "read", "delivered", "played")
    assert kinds(outcomes) == [APPLIED, APPLIED, STALE, APPLIED]
    assert state.status == "played"


# --- rule 2: failures ------------------------------------------------------------------


@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_failure_applied_from_nothing(failure):
    state, [outcome] = run(failure)
    assert outcome == Outcome(APPLIED, failure, None, 1, ())
    assert state.status == failure


@pytest.mark.parametrize("failure", sorted(FAILURES))
@pytest.mark.parametrize("progress", BELOW_DELIVERED)
def test_failure_applied_below_delivered_including_sent(failure, progress):
    state, outcomes = run(progress, failure)
    assert kinds(outcomes) == [APPLIED, APPLIED]
    assert outcomes[1].previous_status == progress
    assert outcomes[1].implied == ()
    assert state.status == failure and state.conflicts == 0


def test_failure_applied_after_delivery_unknown():
    # The ordering state never holds delivery_unknown itself, but the rule covers it.
    state = MessageState(status="delivery_unknown", index=2, applied=["sent", "delivery_unknown"])
    assert classify(state, "undelivered") == APPLIED
    assert classify(state, "delivered") == APPLIED
    assert classify(state, "sent") == STALE


@pytest.mark.parametrize("failure", sorted(FAILURES))
@pytest.mark.parametrize("progress", DELIVERED_OR_HIGHER)
def test_failure_at_or_after_delivered_is_a_conflict(failure, progress):
    state, outcomes = run(progress, failure)
    assert kinds(outcomes) == [APPLIED, CONFLICT]
    assert outcomes[1].index is None
    assert state.status == progress and state.index == 1
    assert state.conflicts == 1
    assert dedup_key(ev(failure)) in state.seen  # kept in history


def test_conflicts_are_counted():
    state, outcomes = run("delivered", "failed", ("failed", "30003"), "rejected")
    assert kinds(outcomes) == [APPLIED, CONFLICT, CONFLICT, CONFLICT]
    assert state.conflicts == 3 and state.status == "delivered"


@pytest.mark.parametrize("first", sorted(FAILURES))
@pytest.mark.parametrize("second", sorted(FAILURES))
def test_second_failure_is_stale(first, second):
    provider_status = "other" if first == second else None
    state, outcomes = run("sent", first, (second, provider_status or second))
    assert kinds(outcomes) == [APPLIED, APPLIED, STALE]
    assert state.status == first and state.conflicts == 0


def test_failure_after_recovery_is_a_conflict():
    state, outcomes = run("failed", "delivered", "undelivered")
    assert kinds(outcomes) == [APPLIED, APPLIED, CONFLICT]
    assert state.status == "delivered" and state.conflicts == 1


# --- rule 3: delivery_unknown ----------------------------------------------------------


@pytest.mark.parametrize("before", [(), ("sent",), ("accepted",), ("delivered",), ("failed",)])
def test_delivery_unknown_from_a_provider_is_ignored(before):
    state, outcomes = run(*before, "delivery_unknown")
    assert outcomes[-1].kind == IGNORED
    assert outcomes[-1].index is None
    assert state.status == (before[-1] if before else None)
    assert state.index == len(before)
    assert "delivery_unknown" not in state.applied


def test_unknown_word_is_ignored():
    state, [outcome] = run("bogus")
    assert outcome.kind == IGNORED and state.status is None and state.index == 0


# --- rule 4: exact duplicates ----------------------------------------------------------


@pytest.mark.parametrize("status", ["sent", "delivered", "failed", "clicked", "received"])
def test_exact_duplicate_is_duplicate(status):
    state, outcomes = run((status, "X"), (status, "X"))
    assert kinds(outcomes) == [APPLIED, DUPLICATE]
    assert outcomes[1].index is None
    assert state.index == 1


def test_duplicate_of_stale_event_is_duplicate():
    _, outcomes = run("delivered", "sent", "sent")
    assert kinds(outcomes) == [APPLIED, STALE, DUPLICATE]


def test_duplicate_returns_state_unchanged():
    state, _ = run("sent", "delivered")
    before = copy.deepcopy(state.to_dict())
    after, outcome = apply(state, ev("sent"))
    assert outcome.kind == DUPLICATE and outcome.previous_status == "delivered"
    assert after.to_dict() == before


# --- engagement and inbound ------------------------------------------------------------


@pytest.mark.parametrize("word", sorted(ENGAGEMENT))
@pytest.mark.parametrize("before", [(), ("sent",), ("read",), ("failed",)])
def test_engagement_applied_never_changes_status(word, before):
    state, outcomes = run(*before, word)
    last = outcomes[-1]
    assert last.kind == APPLIED and last.engagement is True
    assert last.implied == ()
    assert last.index == len(before) + 1 == state.index
    expected = before[-1] if before else None
    assert state.status == expected and last.previous_status == expected
    assert word not in state.applied


def test_progress_outcomes_are_not_engagement():
    _, outcomes = run("sent", "failed", "delivered")
    assert not any(o.engagement for o in outcomes)


def test_received_only_as_the_first_status():
    state, outcomes = run("received")
    assert kinds(outcomes) == [APPLIED] and state.status == "received"
    state, outcomes = run("sent", "received")
    assert kinds(outcomes) == [APPLIED, STALE] and state.status == "sent"


# --- implied milestones ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("sequence", "implied"),
    [
        (("read",), ("sent", "delivered")),
        (("played",), ("sent", "delivered", "read")),
        (("delivered",), ("sent",)),
        (("queued", "delivered"), ("sent",)),
        (("sent", "read"), ("delivered",)),
        (("sent", "delivered"), ()),
        (("accepted", "sent"), ()),
        (("queued",), ()),
        (("sent",), ()),
        (("failed", "delivered"), ("sent",)),  # never applied: all of them
        (("sent", "undelivered", "delivered"), ()),  # sent was applied before the failure
        (("sent", "failed", "read"), ("delivered",)),
        (("read", "played"), ()),  # sent, delivered were implied already
    ],
)
def test_implied_milestones(sequence, implied):
    state, outcomes = run(*sequence)
    assert outcomes[-1].kind == APPLIED
    assert outcomes[-1].implied == implied
    # the timeline of the state holds the implied milestones before the status
    assert state.applied[-1 - len(implied) : -1] == list(implied)
    assert state.applied[-1] == sequence[-1]


def test_failures_imply_nothing():
    for failure in sorted(FAILURES):
        _, outcomes = run(failure)
        assert outcomes[0].implied == ()


def test_applied_timeline():
    state, _ = run("accepted", "read", "clicked", "sent", "played")
    assert state.applied == ["accepted", "sent", "delivered", "read", "played"]


# --- index and state -------------------------------------------------------------------


def test_index_increments_only_on_applied():
    state, outcomes = run(
        "accepted",
        "accepted",
        "sent",
        "queued",
        "delivery_unknown",
        "clicked",
        "delivered",
        "failed",
        "read",
    )
    assert kinds(outcomes) == [
        APPLIED,
        DUPLICATE,
        APPLIED,
        STALE,
        IGNORED,
        APPLIED,
        APPLIED,
        CONFLICT,
        APPLIED,
    ]
    assert [o.index for o in outcomes] == [1, None, 2, None, None, 3, 4, None, 5]
    assert state.index == 5


def test_every_event_is_remembered():
    state, _ = run("sent", "accepted", "accepted", "delivery_unknown", ("read", "seen"))
    assert state.seen == [
        "sent|sent",
        "accepted|accepted",
        "delivery_unknown|delivery_unknown",
        "read|seen",
    ]


def test_apply_does_not_mutate_its_input():
    state, _ = run("sent", ("clicked", "c1"))
    snapshot = copy.deepcopy(state.to_dict())
    seen, applied = state.seen, state.applied
    for status in (
        "delivered",
        "read",
        "accepted",
        "failed",
        "clicked",
        "delivery_unknown",
        "sent",
        "bogus",
    ):
        new, _ = apply(state, ev(status))
        assert state.to_dict() == snapshot
        assert state.seen is seen and state.applied is applied
        if new is not state:
            assert new.seen is not state.seen
    # nor through a conflict
    delivered, _ = run("delivered")
    snapshot = copy.deepcopy(delivered.to_dict())
    apply(delivered, ev("failed"))
    assert delivered.to_dict() == snapshot


def test_message_state_round_trip():
    state, _ = run("accepted", "read", ("failed", "30003"), "clicked", "sent")
    data = json.loads(json.dumps(state.to_dict()))
    assert set(data) == {"status", "index", "seen", "applied", "conflicts"}
    restored = MessageState.from_dict(data)
    assert restored == state
    # and it carries on exactly as the original would
    assert apply(restored, ev("played")) == apply(state, ev("played"))


def test_message_state_from_nothing():
    assert MessageState.from_dict(None) == MessageState()
    assert MessageState.from_dict({}) == MessageState()
    fresh = MessageState()
    assert fresh.to_dict() == {
        "status": None,
        "index": 0,
        "seen": [],
        "applied": [],
        "conflicts": 0,
    }


def test_default_states_do_not_share_lists():
    a, b = MessageState(), MessageState()
    assert a.seen is not b.seen and a.applied is not b.applied


# --- properties ------------------------------------------------------------------------

PROVIDER_STATUSES = st.sampled_from(["", "a", "b"])


@st.composite
def message_events(draw) -> list[CanonicalEvent]:
    """A multiset of outbound events of one message, at most one distinct failure status."""
    failure = draw(st.sampled_from(sorted(FAILURES)))
    words = st.sampled_from([*OUTBOUND_PROGRESS, failure, *sorted(ENGAGEMENT)])
    pairs = draw(st.lists(st.tuples(words, PROVIDER_STATUSES), min_size=1, max_size=12))
    return [ev(status, status + suffix) for status, suffix in pairs]


@st.composite
def arrivals(draw) -> tuple[list[CanonicalEvent], list[CanonicalEvent], list[CanonicalEvent]]:
    """(the events, one arrival order with duplicates, another arrival order with duplicates)"""
    events = draw(message_events())
    orders = []
    for _ in range(2):
        dups = draw(st.lists(st.sampled_from(events), max_size=6))
        orders.append(draw(st.permutations(events + dups)))
    return events, orders[0], orders[1]


def feed(events, state=None) -> tuple[MessageState, list[Outcome]]:
    state = state or MessageState()
    outcomes = []
    for event in events:
        state, outcome = apply(state, event)
        outcomes.append(outcome)
    return state, outcomes


def expected_final(events: list[CanonicalEvent]) -> str | None:
    """The final status the rules promise, computed without any ordering."""
    statuses = {e.status for e in events}
    progress = [RANK[s] for s in statuses if s in RANK]
    failures = statuses & FAILURES
    if progress and max(progress) >= DELIVERED:
        return PROGRESS[max(progress)]
    if failures:
        (failure,) = failures
        return failure
    return PROGRESS[max(progress)] if progress else None


FAST = settings(max_examples=150, deadline=None)


@FAST
@given(arrivals())
def test_final_status_is_independent_of_order_and_duplication(case):
    events, first, second = case
    in_order, _ = feed(events)
    assert feed(first)[0].status == feed(second)[0].status == in_order.status
    assert in_order.status == expected_final(events)


@FAST
@given(arrivals())
def test_applied_statuses_never_regress(case):
    _, order, _ = case
    state, outcomes = feed(order)
    last_progress = -1
    in_failure = False
    told = []
    for outcome in outcomes:
        if outcome.kind != APPLIED or outcome.engagement:
            continue
        told.append(outcome.status)
        if outcome.status in FAILURES:
            assert not in_failure, "a second failure was applied"
            assert last_progress < DELIVERED, "a failure applied over a delivery"
            in_failure = True
        else:
            rank = RANK[outcome.status]
            assert rank > last_progress
            if in_failure:
                assert rank >= DELIVERED, "a failure was left for less than delivered"
            last_progress, in_failure = rank, False
    assert (told[-1] if told else None) == state.status
    # the timeline has every milestone below each applied progress status
    for i, status in enumerate(state.applied):
        if status in RANK:
            below = [m for m in ("sent", "delivered", "read") if RANK[m] < RANK[status]]
            assert set(below) <= set(state.applied[:i])
    assert len(state.applied) == len(set(state.applied))


@FAST
@given(arrivals(), st.randoms(use_true_random=False))
def test_replay_applies_nothing(case, rnd):
    _, order, _ = case
    state, _ = feed(order)
    replay = list(order)
    rnd.shuffle(replay)
    after, outcomes = feed(replay, state)
    assert {o.kind for o in outcomes} == {DUPLICATE}
    assert after.status == state.status and after.index == state.index
    assert after.conflicts == state.conflicts


@FAST
@given(arrivals())
def test_index_counts_applied_outcomes(case):
    _, order, _ = case
    state, outcomes = feed(order)
    applied = [o for o in outcomes if o.kind == APPLIED]
    assert state.index == len(applied)
    assert [o.index for o in applied] == list(range(1, len(applied) + 1))
    assert all(o.index is None for o in outcomes if o.kind != APPLIED)
    assert state.conflicts == sum(o.kind == CONFLICT for o in outcomes)
    assert len(state.seen) == len({dedup_key(e) for e in order})


@FAST
@given(arrivals())
def test_state_survives_a_round_trip_at_any_point(case):
    _, order, _ = case
    cut = len(order) // 2
    state, _ = feed(order[:cut])
    restored = MessageState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert feed(order[cut:], restored)[0] == feed(order)[0]
