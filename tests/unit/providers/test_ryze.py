"""RyzeAPI: push and poll shapes, string/number statuses, token auth."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from processors.providers import ryze
from processors.providers.base import FramingError, SignatureError

from . import harness as h

ID = "3EB08FCF27E532F1B0F5"
KEY = f"ryze:{ID}"
TOKEN = "a1b2c3d4-ryze-token"
POLL_URL = f"https://ryzeapi.cloud/api/chat/status/acme-support?messageId={ID}"

CASES = [
    h.Case("push_read.json", [(KEY, "read", "read", "whatsapp", None)]),
    h.Case("push_pending.json", [(KEY, "queued", "pending", "whatsapp", None)]),
    h.Case("push_sent.json", [(KEY, "sent", "sent", "whatsapp", None)]),
    h.Case("push_delivered_code_only.json", [(KEY, "delivered", "2", "whatsapp", None)]),
    h.Case(
        "push_received.json",
        [("ryze:3EB0A1B2C3D4E5F60718", "received", "received", "whatsapp", None)],
    ),
    h.Case("push_played.json", [(KEY, "played", "played", "whatsapp", None)]),
    h.Case("push_error.json", [(KEY, "failed", "error", "whatsapp", "unknown")]),
    h.Case("push_string_wins.json", [(KEY, "delivered", "delivered", "whatsapp", None)]),
    h.Case("push_unknown_status.json", [], dead=["unknown ryze status 'vanished'"]),
    h.Case("push_other_event.json", [], ignored=1),
    h.Case("poll_read.json", [(KEY, "read", "read", "whatsapp", None)], url=POLL_URL, polled=True),
    h.Case(
        "poll_delivered.json",
        [(KEY, "delivered", "delivered", "whatsapp", None)],
        url=POLL_URL,
        polled=True,
    ),
    h.Case("poll_not_found.json", [], ignored=1, url=POLL_URL, polled=True),
    h.Case(
        "push_batch_mixed.json",
        [(KEY, "sent", "sent", "whatsapp", None), (KEY, "read", "read", "whatsapp", None)],
        ignored=1,
        dead=["missing message_id"],
    ),
]


def test_push_account_and_times() -> None:
    result, _ = h.parse_case(ryze, h.Case("push_read.json", []))
    (event,) = result.events
    assert event.account == "acme-support"
    assert event.occurred_at == 1777386600.0
    result, _ = h.parse_case(ryze, h.Case("push_delivered_code_only.json", []))
    assert result.events[0].occurred_at == 1777386598.0  # milliseconds
    result, _ = h.parse_case(ryze, h.Case("push_played.json", []))
    assert (
        result.events[0].occurred_at == dt.datetime(2026, 4, 28, 14, 31, tzinfo=dt.UTC).timestamp()
    )


def test_poll_answer_takes_instance_from_the_poll_url() -> None:
    result, _ = h.parse_case(ryze, h.Case("poll_read.json", [], url=POLL_URL, polled=True))
    (event,) = result.events
    assert event.account == "acme-support" and event.polled
    assert event.occurred_at == dt.datetime(2026, 4, 28, 14, 30, tzinfo=dt.UTC).timestamp()
    result, _ = h.parse_case(ryze, h.Case("poll_read.json", []))
    assert result.events[0].account is None  # not a poll URL: unknown instance


def test_error_description_is_kept() -> None:
    result, _ = h.parse_case(ryze, h.Case("push_error.json", []))
    error = result.events[0].error
    assert error is not None
    assert (error.code, error.category) == (None, "unknown")
    assert error.description == "recipient is not on WhatsApp"


def _push(**data: object) -> bytes:
    body = {"event": "message.status", "instance": "i1", "data": {"message_id": ID, **data}}
    return json.dumps(body).encode()


# PROVIDERS.md: string / code -> canonical, either field accepted.
MAPPING = [
    ("pending", 0, "queued"),
    ("sent", 1, "sent"),
    ("delivered", 2, "delivered"),
    ("received", 3, "received"),
    ("read", 4, "read"),
    ("played", 5, "played"),
    ("error", -1, "failed"),
]


@pytest.mark.parametrize(("word", "code", "status"), MAPPING)
def test_status_by_string(word: str, code: int, status: str) -> None:
    (event,) = ryze.parse(h.request("ryze", _push(status=word))).events
    assert (event.status, event.provider_status) == (status, word)
    assert (event.error is not None) == (status == "failed")


@pytest.mark.parametrize(("word", "code", "status"), MAPPING)
@pytest.mark.parametrize("as_text", [False, True])
def test_status_by_code(word: str, code: int, status: str, as_text: bool) -> None:
    value: int | str = str(code) if as_text else code
    (event,) = ryze.parse(h.request("ryze", _push(status_code=value))).events
    assert (event.status, event.provider_status) == (status, str(code))


def test_numeric_status_field_and_case() -> None:
    (event,) = ryze.parse(h.request("ryze", _push(status=4))).events
    assert event.status == "read"
    (event,) = ryze.parse(h.request("ryze", _push(status="DELIVERED"))).events
    assert (event.status, event.provider_status) == ("delivered", "DELIVERED")


def test_unknown_word_with_known_code_uses_the_code() -> None:
    (event,) = ryze.parse(h.request("ryze", _push(status="acked", status_code=1))).events
    assert (event.status, event.provider_status) == ("sent", "1")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"status_code": 9}, "unknown ryze status '9'"),
        ({}, "missing status and status_code"),
        ({"status": None, "status_code": None}, "missing status and status_code"),
    ],
)
def test_bad_statuses_are_dead(data: dict[str, object], reason: str) -> None:
    result = ryze.parse(h.request("ryze", _push(**data)))
    assert [d.reason for d in result.dead] == [reason]


def test_push_without_data_or_unknown_shape() -> None:
    no_data = json.dumps({"event": "message.status", "instance": "i1"}).encode()
    assert ryze.parse(h.request("ryze", no_data)).dead[0].reason.startswith("message.status")
    other = json.dumps({"hello": "world"}).encode()
    assert ryze.parse(h.request("ryze", other)).dead[0].reason.startswith("neither")


@pytest.mark.parametrize("body", [b"", b"nope", b"42", b'"x"', b"null"])
def test_wrong_framing(body: bytes) -> None:
    with pytest.raises(FramingError):
        ryze.parse(h.request("ryze", body))


# --- authentication ---------------------------------------------------------------------


def signed(body: bytes, secret: str) -> h.WebhookRequest:
    return h.request("ryze", body, headers=ryze.sign("", body, secret))


CONTRACT = h.SignatureContract(
    module=ryze,
    secret_name="RYZE_TOKEN",
    secret=TOKEN,
    body=h.fixture("ryze", "push_read.json"),
    sign=signed,
    auth_headers=("token", "authorization"),
    body_bound=False,  # RyzeAPI sends a token, it signs nothing
)


def test_bearer_is_accepted_too() -> None:
    body = h.fixture("ryze", "push_read.json")
    good = h.request("ryze", body, headers={"authorization": f"Bearer {TOKEN}"})
    ryze.verify(good, CONTRACT.settings())
    for bad in ({"authorization": "Bearer nope"}, {"authorization": f"Basic {TOKEN}"}):
        with pytest.raises(SignatureError):
            ryze.verify(h.request("ryze", body, headers=bad), CONTRACT.settings())


def test_token_is_not_kept_on_the_raw_record() -> None:
    assert ryze.SIGNATURE_HEADERS == ()
