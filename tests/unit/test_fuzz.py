"""Hostile-input fuzzing in `make test` (tests/unit/fuzzing.py says what holds).

Thousands of generated cases per registered provider: its `parse` and `normalize` on
mutated and random bodies, and the real gateway (in-memory sink) on signed and unsigned
requests with hostile headers. `make fuzz` runs the same properties for longer
(tests/fuzz.py). Every input a fuzz run ever found is kept in REGRESSIONS below.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from fuzzing import (
    PROVIDERS,
    GatewayCase,
    GatewayHarness,
    bodies,
    check_parse_variants,
    gateway_cases,
)
from hypothesis import HealthCheck, given, settings

# Examples per provider; each parse example is three cases (its content type, none, the
# other framing), each gateway example one request (and a normalize when accepted).
PARSE_EXAMPLES = int(os.environ.get("MSGSTATUS_FUZZ_PARSE_EXAMPLES", "1000"))
GATEWAY_EXAMPLES = int(os.environ.get("MSGSTATUS_FUZZ_GATEWAY_EXAMPLES", "1000"))
QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_parse_and_normalize_fuzz(provider: str) -> None:
    @settings(max_examples=PARSE_EXAMPLES, deadline=None, suppress_health_check=QUIET)
    @given(bodies(provider))
    def run(case: tuple[bytes, str]) -> None:
        check_parse_variants(provider, *case)

    run()


@pytest.fixture(scope="module")
def harness() -> Iterator[GatewayHarness]:
    h = GatewayHarness()
    try:
        yield h
    finally:
        h.close()


@pytest.mark.parametrize("provider", PROVIDERS)
def test_gateway_fuzz(harness: GatewayHarness, provider: str) -> None:
    @settings(max_examples=GATEWAY_EXAMPLES, deadline=None, suppress_health_check=QUIET)
    @given(gateway_cases(provider))
    def run(case: GatewayCase) -> None:
        harness.run(case)

    run()


# --- every input a fuzz run found, kept --------------------------------------------------------
# Gateway requests first found by probing the gateway (issue 12) and by these fuzzers
# (with the fix reverted: `make fuzz` finds the first within a second).


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"1" + b"]" * depth


GATEWAY_REGRESSIONS = [
    # non-UTF-8 auth header bytes: UnicodeEncodeError in constant_time_equal -> 500
    GatewayCase("360dialog", b"{}", "application/json", False, [(b"D360-API-KEY", b"\x80")]),
    GatewayCase(
        "line", b'{"events": []}', "application/json", False, [(b"X-Line-Signature", b"\xff")]
    ),
    GatewayCase(
        "twilio",
        b"a=1",
        "application/x-www-form-urlencoded",
        False,
        [(b"X-Twilio-Signature", b"\xc3(")],
    ),
    GatewayCase(
        "plivo",
        b"a=1",
        "application/x-www-form-urlencoded",
        False,
        [(b"X-Plivo-Signature-V3", b"x"), (b"X-Plivo-Signature-V3-Nonce", b"\xff")],
    ),
    # a signed body nested too deep: the worker stopped on its dead letter
    GatewayCase("ryze", _deep(300), "application/json", True),
    GatewayCase("mailgun", b'{"event-data": ' + _deep(300) + b"}", "application/json", True),
    GatewayCase(
        "vonage",
        b'{"messageId": "1", "status": "sent", "x": ' + _deep(900) + b"}",
        "application/json",
        True,
    ),
    # non-string SNS fields: TypeError (unhashable) in ses.verify -> 500
    GatewayCase("ses", b'{"Type": ["Notification"], "TopicArn": {}}', "text/plain", False),
    # a Host that is no host name: ValueError in str(request.url) -> 500
    GatewayCase("ryze", b"{}", "application/json", True, host=b"x:99999"),
    GatewayCase("ryze", b"{}", "application/json", True, host=b"\xff\xfe"),
    # a key with control characters and one too long
    GatewayCase(
        "events",
        b'{"provider": "crm", "provider_message_id": "a\\u0000b", "status": "sent"}',
        "application/json",
        True,
    ),
    GatewayCase(
        "twilio",
        b"MessageSid=" + b"S" * 1000 + b"&MessageStatus=sent",
        "application/x-www-form-urlencoded",
        True,
    ),
]


@pytest.mark.parametrize("case", GATEWAY_REGRESSIONS, ids=lambda c: c.provider)
def test_gateway_regressions(harness: GatewayHarness, case: GatewayCase) -> None:
    harness.run(case)


PARSE_REGRESSIONS = [
    ("sendgrid", b"[" + _deep(1000) + b"]", "application/json"),
    ("meta", b'{"object": "page", "entry": [' + _deep(600) + b"]}", "application/json"),
    ("ses", b'{"Type": "Notification", "Message": "' + b"[" * 900 + b'"}', "text/plain"),
    (
        "events",
        b'{"provider": "crm", "provider_message_id": "x\\n", "status": "sent"}',
        "application/json",
    ),
    ("twilio", b"MessageSid=SM%00&MessageStatus=delivered", "application/x-www-form-urlencoded"),
]


@pytest.mark.parametrize(("provider", "body", "content_type"), PARSE_REGRESSIONS)
def test_parse_regressions(provider: str, body: bytes, content_type: str) -> None:
    check_parse_variants(provider, body, content_type)
