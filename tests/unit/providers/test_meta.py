"""Meta webhooks: WhatsApp batches split per status, Messenger/Instagram receipts, handshake."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.providers import meta
from processors.providers.base import FramingError, SignatureError

from . import harness as h

W1 = "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJDQjZCMzlEQUE4OTJBMTE4RTUA"
W2 = "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI3QTVFNEVBOEFFNjY4ODU0RDgA"
W3 = "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJBMjI3NUY3MTZEQzE5NDQ3NjYA"
PNID = "106540352242922"
SECRET = "meta-app-secret-5f0c1b2a"
VERIFY = "verify-me-please"
IG_MID = (
    "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQxNDAwMDAwMDAwMDAwOjM0MDI4MjM2Njg0MTcxMDMwMTI0"
    "NDI3NjAxNjc2NDg0NjAxNDk5NzI6Njg0NDEwNjgxNjc0MjAwNDQ4MjQ1MDE0NDQ2NjQ5NzY"
)

CASES = [
    h.Case("sent.json", [(f"meta:{W1}", "sent", "sent", "whatsapp", None)]),
    h.Case("delivered.json", [(f"meta:{W1}", "delivered", "delivered", "whatsapp", None)]),
    h.Case("read.json", [(f"meta:{W1}", "read", "read", "whatsapp", None)]),
    h.Case("deleted.json", [(f"meta:{W1}", "deleted", "deleted", "whatsapp", None)]),
    h.Case(
        "failed_131047.json",
        [(f"meta:{W2}", "failed", "failed", "whatsapp", "outside_window")],
    ),
    h.Case(
        "failed_unlisted_code.json",
        [("meta:external_id", "failed", "failed", "whatsapp", "unknown")],
    ),
    h.Case("inbound_message.json", [], ignored=1),
    h.Case("account_error.json", [], ignored=1),
    h.Case("warning_status.json", [], ignored=1),
    h.Case("template_status_update.json", [], ignored=1),
    h.Case(
        "unknown_status.json",
        [
            (f"meta:{W1}", "delivered", "delivered", "whatsapp", None),
            (f"meta:{W3}", "read", "read", "whatsapp", None),
        ],
        dead=["unknown whatsapp status 'teleported'"],
    ),
    h.Case(
        "batch_statuses.json",
        [
            (f"meta:{W1}", "sent", "sent", "whatsapp", None),
            (f"meta:{W1}", "delivered", "delivered", "whatsapp", None),
            (f"meta:{W2}", "read", "read", "whatsapp", None),
            (f"meta:{W3}", "failed", "failed", "whatsapp", "unreachable"),
        ],
        ignored=2,  # one inbound message, one account-level error
    ),
    h.Case(
        "messenger_delivery.json",
        [("meta:mid.1458668856218:ed81099e15d3f4f233", "delivered", "delivery", "messenger", None)],
    ),
    h.Case("messenger_read_watermark.json", []),  # a watermark: see test_meta_messaging.py
    h.Case(
        "messenger_echo.json",
        [("meta:mid.1457764197618:41d102a3e1ae206a38", "sent", "echo", "messenger", None)],
    ),
    h.Case("instagram_read.json", [(f"meta:{IG_MID}", "read", "read", "instagram", None)]),
]


def test_failed_status_details() -> None:
    result, _ = h.parse_case(meta, h.Case("failed_131047.json", []))
    (event,) = result.events
    assert event.account == PNID
    assert event.occurred_at == 1750263790.0
    assert event.error is not None
    assert event.error.code == "131047"
    assert event.error.description is not None
    assert event.error.description.startswith("Re-engagement message: Message failed to send")


def test_batch_accounts_follow_their_change() -> None:
    result, _ = h.parse_case(meta, h.Case("batch_statuses.json", []))
    assert [e.account for e in result.events] == [PNID, PNID, PNID, "106540352242923"]


# PROVIDERS.md Meta statuses: sent, delivered, read, failed, deleted (engagement).
@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("sent", "sent"),
        ("delivered", "delivered"),
        ("read", "read"),
        ("failed", "failed"),
        ("deleted", "deleted"),
    ],
)
def test_status_mapping(word: str, status: str) -> None:
    doc = json.loads(h.fixture("meta", "sent.json"))
    doc["entry"][0]["changes"][0]["value"]["statuses"][0]["status"] = word
    (event,) = meta.parse(h.request("meta", json.dumps(doc).encode())).events
    assert (event.status, event.provider_status) == (status, word)
    if status == "failed":  # a failure without errors[] still says "why: unknown"
        assert event.error is not None and event.error.category == "unknown"


@pytest.mark.parametrize(
    ("code", "category"),
    [
        (131047, "outside_window"),
        (131026, "unreachable"),
        (131049, "carrier_filtered"),
        (131050, "opted_out"),
        (131048, "rate_limited"),
        (131000, "provider_error"),
        (130429, "rate_limited"),
        (131056, "rate_limited"),
        (131031, "account_problem"),
        (131042, "account_problem"),
        (470, "outside_window"),
        (131014, "unknown"),
        ("131026", "unreachable"),  # codes as strings too
    ],
)
def test_error_codes(code: int | str, category: str) -> None:
    doc = json.loads(h.fixture("meta", "failed_131047.json"))
    doc["entry"][0]["changes"][0]["value"]["statuses"][0]["errors"][0]["code"] = code
    (event,) = meta.parse(h.request("meta", json.dumps(doc).encode())).events
    assert event.error is not None
    assert (event.error.code, event.error.category) == (str(code), category)


def test_batch_of_50_statuses_for_20_messages_splits() -> None:
    words = ["sent", "delivered", "read"]
    statuses = [
        {
            "id": f"wamid.m{i % 20:02d}",
            "status": words[(i // 20) % 3],
            "timestamp": str(1750263700 + i),
            "recipient_id": "16505551234",
        }
        for i in range(50)
    ]
    entries = [
        {
            "id": f"waba{e}",
            "changes": [
                {
                    "field": "messages",
                    "value": {
                        "messaging_product": "whatsapp",
                        "metadata": {"phone_number_id": f"pn{e}{c}"},
                        "statuses": statuses[(e * 2 + c) * 5 : (e * 2 + c + 1) * 5],
                    },
                }
                for c in range(2)
            ],
        }
        for e in range(5)
    ]
    body = json.dumps({"object": "whatsapp_business_account", "entry": entries}).encode()
    req = h.request("meta", body)
    result = meta.parse(req)
    h.check_result(meta, result, req)
    assert len(result.events) == 50 and not result.dead and result.ignored == 0
    per_message = Counter(e.message_key for e in result.events)
    assert len(per_message) == 20
    assert sorted(per_message.values()) == [2] * 10 + [3] * 10
    assert [e.occurred_at for e in result.events] == [1750263700.0 + i for i in range(50)]
    assert [e.status for e in result.events] == [s["status"] for s in statuses]
    assert result.events[0].account == "pn00" and result.events[-1].account == "pn41"


def test_bad_items_do_not_sink_the_batch() -> None:
    doc = json.loads(h.fixture("meta", "batch_statuses.json"))
    statuses = doc["entry"][0]["changes"][0]["value"]["statuses"]
    statuses.insert(1, "not an object")
    statuses.insert(2, {"status": "read"})
    statuses.insert(3, {"id": W1})
    result = meta.parse(h.request("meta", json.dumps(doc).encode()))
    assert len(result.events) == 4
    assert [d.reason for d in result.dead] == [
        "whatsapp status is not an object",
        "whatsapp status without an id",
        "whatsapp status without a status value",
    ]


def test_messenger_delivery_with_several_mids() -> None:
    doc = json.loads(h.fixture("meta", "messenger_delivery.json"))
    doc["entry"][0]["messaging"][0]["delivery"]["mids"] = ["mid.a", "mid.b"]
    result = meta.parse(h.request("meta", json.dumps(doc).encode()))
    assert [e.message_key for e in result.events] == ["meta:mid.a", "meta:mid.b"]
    assert {e.account for e in result.events} == {"1234567890"}
    assert result.events[0].occurred_at == 1459991487.97


def test_messenger_delivery_watermark_only_becomes_a_watermark() -> None:
    doc = json.loads(h.fixture("meta", "messenger_delivery.json"))
    del doc["entry"][0]["messaging"][0]["delivery"]["mids"]
    result = meta.parse(h.request("meta", json.dumps(doc).encode()))
    assert (result.events, result.dead) == ([], [])
    marks = [(w.conversation, w.kind) for w in result.watermarks]
    assert marks == [("1234567890:5678", "delivered")]


def test_unknown_object_is_ignored_not_fatal() -> None:
    body = json.dumps({"object": "user", "entry": [{"id": "1", "changes": []}]}).encode()
    result = meta.parse(h.request("meta", body))
    assert (result.events, result.dead, result.ignored) == ([], [], 1)


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[]", b'"x"', b"{}", b'{"object": "page"}', b'{"entry": []}'],
)
def test_wrong_framing(body: bytes) -> None:
    with pytest.raises(FramingError):
        meta.parse(h.request("meta", body))


# --- signature and handshake ------------------------------------------------------------


def signed(body: bytes, secret: str) -> h.WebhookRequest:
    return h.request("meta", body, headers=meta.sign("", body, secret))


CONTRACT = h.SignatureContract(
    module=meta,
    secret_name="META_APP_SECRET",
    secret=SECRET,
    body=h.fixture("meta", "batch_statuses.json"),
    sign=signed,
    auth_headers=("x-hub-signature-256",),
)

MIN_MUTATIONS = 50


def test_signature_format() -> None:
    body = b'{"object":"whatsapp_business_account","entry":[]}'
    signature = meta.calculate_signature(SECRET, body)
    assert signature.startswith("sha256=") and len(signature) == 7 + 64
    upper = h.request("meta", body, headers={"x-hub-signature-256": signature.upper()})
    meta.verify(upper, CONTRACT.settings())  # hex digits are case-insensitive
    sha1 = h.request("meta", body, headers={"x-hub-signature-256": "sha1=" + signature[7:]})
    with pytest.raises(SignatureError):
        meta.verify(sha1, CONTRACT.settings())
    with pytest.raises(SignatureError):
        meta.verify(
            h.request("meta", body, headers={"x-hub-signature-256": "garbage"}),
            CONTRACT.settings(),
        )


def test_verify_token_alone_does_not_enable() -> None:
    assert not meta.enabled(h.settings(META_VERIFY_TOKEN=VERIFY))
    assert meta.enabled(h.settings(META_APP_SECRET=SECRET))


HANDSHAKE = {"hub.mode": "subscribe", "hub.verify_token": VERIFY, "hub.challenge": "1158201444"}


def test_handshake_good_token_echoes_challenge() -> None:
    good = h.settings(META_APP_SECRET=SECRET, META_VERIFY_TOKEN=VERIFY)
    assert meta.handshake(HANDSHAKE, good) == "1158201444"


@pytest.mark.parametrize(
    ("query", "configured"),
    [
        ({**HANDSHAKE, "hub.verify_token": "wrong"}, True),
        ({**HANDSHAKE, "hub.verify_token": ""}, True),
        ({k: v for k, v in HANDSHAKE.items() if k != "hub.verify_token"}, True),
        ({**HANDSHAKE, "hub.mode": "unsubscribe"}, True),
        ({k: v for k, v in HANDSHAKE.items() if k != "hub.challenge"}, True),
        (HANDSHAKE, False),  # no MSGSTATUS_META_VERIFY_TOKEN: never answer
    ],
)
def test_handshake_refused(query: dict[str, str], configured: bool) -> None:
    values = {"META_APP_SECRET": SECRET}
    if configured:
        values["META_VERIFY_TOKEN"] = VERIFY
    assert meta.handshake(query, h.settings(**values)) is None


# --- robustness -------------------------------------------------------------------------


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=30,
)
SHAPED = st.fixed_dictionaries(
    {"object": st.sampled_from(["whatsapp_business_account", "page", "instagram"])},
    optional={
        "entry": st.lists(
            JSON
            | st.fixed_dictionaries(
                {},
                optional={
                    "id": JSON,
                    "changes": st.lists(
                        st.fixed_dictionaries({}, optional={"field": JSON, "value": JSON})
                    ),
                    "messaging": st.lists(JSON),
                },
            ),
            max_size=3,
        )
    },
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(JSON, SHAPED))
def test_random_json_never_crashes(doc: object) -> None:
    h.parse_never_raises(meta, json.dumps(doc).encode(), "application/json")
