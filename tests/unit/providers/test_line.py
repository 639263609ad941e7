"""LINE webhooks: X-Line-Signature, every event type ignored (LINE has no receipts)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.providers import line
from processors.providers.base import FramingError

from . import harness as h

SECRET = "line-channel-secret-8d1f"

CASES = [
    h.Case("message_text.json", [], ignored=1),
    h.Case("verify_empty.json", []),  # the console's "Verify" button
    h.Case("mixed_events.json", [], ignored=12),  # every type, a future one, even junk
]


EVENT_TYPES = [
    "message",
    "unsend",
    "follow",
    "unfollow",
    "join",
    "leave",
    "memberJoined",
    "memberLeft",
    "postback",
    "videoPlayComplete",
    "beacon",
    "accountLink",
    "things",
    "membership",
    "module",
    "activated",
    "deactivated",
    "botSuspended",
    "botResumed",
    "brandNewType",
]


@pytest.mark.parametrize("kind", EVENT_TYPES)
def test_every_event_type_is_ignored(kind: str) -> None:
    body = json.dumps({"destination": "U1", "events": [{"type": kind, "timestamp": 1}]}).encode()
    result = line.parse(h.request("line", body))
    assert (result.events, result.dead, result.ignored) == ([], [], 1)
    assert (result.watermarks, result.registrations) == ([], [])


@pytest.mark.parametrize(
    "body", [b"", b"x", b"[]", b"{}", b'{"events": {}}', b'{"destination": "U"}']
)
def test_wrong_framing(body: bytes) -> None:
    with pytest.raises(FramingError):
        line.parse(h.request("line", body))


# --- signature ----------------------------------------------------------------------------


def signed(body: bytes, secret: str) -> h.WebhookRequest:
    return h.request("line", body, headers=line.sign(body, secret))


CONTRACT = h.SignatureContract(
    module=line,
    secret_name="LINE_CHANNEL_SECRET",
    secret=SECRET,
    body=h.fixture("line", "message_text.json"),
    sign=signed,
    auth_headers=("x-line-signature",),
)

MIN_MUTATIONS = 5


def test_signature_is_documented_recipe() -> None:
    body = CONTRACT.body
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).digest()
    assert line.calculate_signature(SECRET, body) == base64.b64encode(digest).decode()


# --- robustness -------------------------------------------------------------------------


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(st.fixed_dictionaries({"events": st.lists(JSON, max_size=5)}) | JSON)
def test_random_json_never_crashes(doc: object) -> None:
    h.parse_never_raises(line, json.dumps(doc).encode(), "application/json")
