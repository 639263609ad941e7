"""SMPP receipts over HTTP: receipt text, stat mapping, err categories, Basic or token auth."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.providers import smpp
from processors.providers.base import FramingError, SignatureError

from . import harness as h

USER = "kannel"
PASSWORD = "kannel-dlr-password-0123456789"
TOKEN = "smpp-gateway-token-0123456789"
FORM = "application/x-www-form-urlencoded"

CASES = [
    h.Case("delivered.form", [("smpp:0a1b2c3d4e", "delivered", "DELIVRD", "sms", None)]),
    h.Case(
        "undeliv_unknown_subscriber.form",
        [("smpp:7f8e9d0c1b", "undelivered", "UNDELIV", "sms", "invalid_number")],
    ),
    h.Case("expired.json", [("smpp:5c6d7e8f90", "expired", "EXPIRED", "sms", "expired")]),
    h.Case(
        "jasmin_rejected.json",
        [("smpp:1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9", "rejected", "REJECTD", "sms", "blocked")],
    ),
    h.Case("acceptd.form", [("smpp:9a8b7c6d5e", "sent", "ACCEPTD", "sms", None)]),
    h.Case("unknown.form", [], ignored=1),
    h.Case("unknown_stat.form", [], dead=["unknown SMPP receipt stat 'TELEPRT'"]),
    # issue 16: Jasmin level-1 receipts (the SMSC's answer to submit_sm), POST and GET
    h.Case(
        "jasmin_level1_esme_rok.form",
        [("smpp:16fd2706-8baf-433b-82eb-8c7fada847da", "sent", "ESME_ROK", "sms", None)],
    ),
    h.Case(
        "jasmin_level1_esme_rinvdstadr.query",
        [
            (
                "smpp:5e0c1a7d-3b2f-4c8e-9d61-0a4b7c2e8f13",
                "failed",
                "ESME_RINVDSTADR",
                "sms",
                "invalid_number",
            )
        ],
    ),
    h.Case(
        "jasmin_level3_delivrd.query",
        [("smpp:16fd2706-8baf-433b-82eb-8c7fada847da", "delivered", "DELIVRD", "sms", None)],
    ),
    # issue 16: Kannel's numeric DLR type (`%d`) in a GET dlr-url
    h.Case("kannel_smsc_submit.query", [("smpp:kn-20260428-0002", "sent", "8", "sms", None)]),
    h.Case("kannel_buffered.query", [("smpp:kn-20260428-0002", "sent", "4", "sms", None)]),
    h.Case("kannel_delivered.query", [("smpp:kn-20260428-0002", "delivered", "1", "sms", None)]),
    h.Case(
        "kannel_delivered_with_receipt.query",
        [("smpp:kn-20260428-0001", "delivered", "DELIVRD", "sms", None)],
    ),
    h.Case(
        "kannel_smsc_reject.query",
        [("smpp:kn-20260428-0003", "rejected", "16", "sms", "invalid_number")],
    ),
    h.Case(
        "kannel_failed.query", [("smpp:kn-20260428-0004", "undelivered", "2", "sms", "unknown")]
    ),
    h.Case("kannel_intermediate.query", [], ignored=1),
    h.Case("kannel_unknown_type.query", [], dead=["unknown Kannel DLR type '64'"]),
]


def test_done_date_and_account() -> None:
    result, _ = h.parse_case(smpp, h.Case("delivered.form", []))
    (event,) = result.events
    assert event.occurred_at == dt.datetime(2026, 4, 28, 14, 30, tzinfo=dt.UTC).timestamp()
    assert event.account == "smsc-eu1"
    result, _ = h.parse_case(smpp, h.Case("jasmin_rejected.json", []))
    assert result.events[0].account == "smppc-01"  # Jasmin's connector
    assert result.events[0].error is not None and result.events[0].error.code == "13"


def _receipt(stat: str, err: str = "000", **fields: str) -> bytes:
    text = (
        f"id:abc123 sub:001 dlvrd:001 submit date:2604281429 done date:2604281430 "
        f"stat:{stat} err:{err} text:Hello"
    )
    return h.form([("short_message", text), *fields.items()])


# PROVIDERS.md "SMPP delivery receipt text", plus the SMPP message_state long names.
@pytest.mark.parametrize(
    ("stat", "status"),
    [
        ("DELIVRD", "delivered"),
        ("EXPIRED", "expired"),
        ("DELETED", "canceled"),
        ("UNDELIV", "undelivered"),
        ("ACCEPTD", "sent"),
        ("ENROUTE", "sent"),
        ("REJECTD", "rejected"),
        ("DELIVERED", "delivered"),
        ("UNDELIVERABLE", "undelivered"),
        ("ACCEPTED", "sent"),
        ("REJECTED", "rejected"),
    ],
)
def test_stat_mapping(stat: str, status: str) -> None:
    (event,) = smpp.parse(h.request("smpp", _receipt(stat), content_type=FORM)).events
    assert (event.provider_message_id, event.status, event.provider_status) == (
        "abc123",
        status,
        stat,
    )
    assert (event.error is not None) == (
        status in ("expired", "canceled", "undelivered", "rejected")
    )


@pytest.mark.parametrize(
    ("kind", "status"),
    [("1", "delivered"), ("2", "undelivered"), ("4", "sent"), ("8", "sent"), ("16", "rejected")],
)
@pytest.mark.parametrize("field", ["type", "dlr-type", "dlr_type", "dlr", "status"])
def test_kannel_numeric_types(field: str, kind: str, status: str) -> None:
    """Kannel's user guide: 1 delivery success, 2 failure, 4 buffered, 8 smsc submit,
    16 smsc reject; the number arrives under whatever name the dlr-url gave it."""
    query = f"id=own-42&{field}={kind}".encode()
    (event,) = smpp.parse(h.request("smpp", query, content_type=None, method="GET")).events
    assert (event.provider_message_id, event.status, event.provider_status) == (
        "own-42",
        status,
        kind,
    )
    assert (event.error is not None) == (status in ("undelivered", "rejected"))


@pytest.mark.parametrize(
    ("answer", "code", "category"),
    [
        ("NACK/0x0000000b/Invalid Destination Address", "ESME_RINVDSTADR", "invalid_number"),
        ("NACK/0x58/Throttling error", "ESME_RTHROTTLED", "rate_limited"),
        ("NACK/0x00000045", "ESME_RSUBMITFAIL", "provider_error"),
        ("NACK/0xabcd/What", "0x0000abcd", "unknown"),
        ("NACK/", None, "unknown"),
        ("Some text", None, "unknown"),
    ],
)
def test_kannel_smsc_reject_answer(answer: str, code: str | None, category: str) -> None:
    body = h.form([("id", "own-43"), ("type", "16"), ("answer", answer)])
    (event,) = smpp.parse(h.request("smpp", body, content_type=FORM)).events
    assert event.status == "rejected" and event.error is not None
    assert (event.error.code, event.error.category) == (code, category)


@pytest.mark.parametrize(
    ("name", "category"),
    [
        ("ESME_RINVDSTADR", "invalid_number"),
        ("ESME_RINVDSTTON", "invalid_number"),
        ("ESME_RINVSRCADR", "account_problem"),
        ("ESME_RTHROTTLED", "rate_limited"),
        ("ESME_RMSGQFUL", "rate_limited"),
        ("ESME_RSYSERR", "provider_error"),
        ("ESME_RINVMSGLEN", "content_rejected"),
        ("ESME_RX_R_APPN", "carrier_filtered"),
        ("ESME_RINVNUMDESTS", "provider_error"),
        ("ESME_RSOMETHINGNEW", "unknown"),  # still a refusal, just an unlisted one
        ("esme_rinvdstadr", "invalid_number"),
    ],
)
def test_jasmin_level1_refusals(name: str, category: str) -> None:
    body = h.form([("id", "j-1"), ("message_status", name), ("level", "1")])
    (event,) = smpp.parse(h.request("smpp", body, content_type=FORM)).events
    assert (event.status, event.provider_status) == ("failed", name.upper())
    assert event.error is not None
    assert (event.error.code, event.error.category) == (name.upper(), category)


def test_esme_table_is_consistent() -> None:
    codes = [code for code, _, _ in smpp.ESME_ERRORS.values()]
    assert len(codes) == len(set(codes))
    assert all(name.startswith("ESME_R") for name in smpp.ESME_ERRORS)
    assert smpp.ESME_OK not in smpp.ESME_ERRORS


def test_gateway_declarations() -> None:
    """Jasmin retries until the body is exactly `ACK/Jasmin`; Kannel fetches with GET."""
    assert smpp.SUCCESS_ANSWER == (b"ACK/Jasmin", "text/plain")
    assert smpp.HTTP_METHODS == ("POST", "GET")
    assert smpp.QUERY_CREDENTIALS == ("token",)


def test_unknown_is_no_change() -> None:
    result = smpp.parse(h.request("smpp", _receipt("UNKNOWN"), content_type=FORM))
    assert (result.events, result.ignored, result.dead) == ([], 1, [])


@pytest.mark.parametrize(
    ("err", "code", "category"),
    [
        ("001", "1", "invalid_number"),
        ("005", "5", "invalid_number"),
        ("006", "6", "unreachable"),
        ("009", "9", "blocked"),
        ("011", "11", "blocked"),
        ("013", "13", "blocked"),
        ("027", "27", "unreachable"),
        ("031", "31", "unreachable"),
        ("034", "34", "provider_error"),
        ("0FF", "0FF", "unknown"),
        ("099", "99", "unknown"),
        ("000", None, "unknown"),
    ],
)
def test_err_codes(err: str, code: str | None, category: str) -> None:
    (event,) = smpp.parse(h.request("smpp", _receipt("UNDELIV", err), content_type=FORM)).events
    assert event.error is not None
    assert (event.error.code, event.error.category) == (code, category)


def test_explicit_id_wins_over_the_receipt_id() -> None:
    body = _receipt("DELIVRD", message_id="gateway-42")
    (event,) = smpp.parse(h.request("smpp", body, content_type=FORM)).events
    assert event.provider_message_id == "gateway-42"


@pytest.mark.parametrize(
    "text",
    [
        "id:X1 sub:001 dlvrd:001 submit date:2604281429 done date:260428143055 stat:DELIVRD err:0",
        "ID:X1 SUB:001 DLVRD:001 SUBMIT DATE:2604281429 DONE DATE:2604281430 STAT:DELIVRD ERR:000",
        "id:X1  stat:DELIVRD err:000 text:stat:UNDELIV id:X9",
    ],
)
def test_receipt_variants(text: str) -> None:
    body = json.dumps({"text": text}).encode()
    (event,) = smpp.parse(h.request("smpp", body)).events
    assert (event.provider_message_id, event.status, event.error) == ("X1", "delivered", None)


def test_done_date_with_seconds() -> None:
    expected = dt.datetime(2026, 4, 28, 14, 30, 55, tzinfo=dt.UTC).timestamp()
    assert smpp.receipt_time("260428143055") == expected
    assert smpp.receipt_time("2613281430") is None
    assert smpp.receipt_time("abc") is None


def test_missing_fields_are_dead_items() -> None:
    no_id = smpp.parse(h.request("smpp", b"short_message=stat%3ADELIVRD", content_type=FORM))
    assert [d.reason for d in no_id.dead] == ["receipt without a message id"]
    no_stat = smpp.parse(h.request("smpp", b"id=1&short_message=hello", content_type=FORM))
    assert [d.reason for d in no_stat.dead] == ["receipt without stat"]


@pytest.mark.parametrize(
    ("body", "ctype"),
    [(b"", FORM), (b"%%%", FORM), (b"\xff", FORM), (b"[1]", "application/json"), (b"{", None)],
)
def test_malformed_body_is_a_framing_error(body: bytes, ctype: str | None) -> None:
    with pytest.raises(FramingError):
        smpp.parse(h.request("smpp", body, content_type=ctype))


# --- authentication -------------------------------------------------------------------


def basic_signed(body: bytes, secret: str) -> h.WebhookRequest:
    headers = {"authorization": smpp.calculate_signature(USER, secret)}
    return h.request("smpp", body, headers=headers, content_type=FORM)


def token_signed(body: bytes, secret: str) -> h.WebhookRequest:
    return h.request("smpp", body, headers=smpp.sign(h.URL, body, secret), content_type=None)


BASIC = h.SignatureContract(
    module=smpp,
    secret_name="SMPP_PASSWORD",
    secret=PASSWORD,
    body=h.fixture("smpp", "delivered.form"),
    sign=basic_signed,
    auth_headers=("authorization",),
    body_bound=False,
    extra_settings={"SMPP_USER": USER},
)
TOKENED = h.SignatureContract(
    module=smpp,
    secret_name="SMPP_TOKEN",
    secret=TOKEN,
    body=h.fixture("smpp", "delivered.form"),
    sign=token_signed,
    auth_headers=("token",),
    body_bound=False,
)
CONTRACTS = [BASIC, TOKENED]
VERIFY_FUZZ = [
    (h.settings(SMPP_USER=USER, SMPP_PASSWORD=PASSWORD, SMPP_TOKEN=TOKEN), None),
    (BASIC.settings(), None),
]


def test_token_in_the_dlr_url_query() -> None:
    """A Kannel dlr-url carries no headers: `?token=` authenticates it (GET or POST)."""
    body = h.fixture("smpp", "kannel_delivered.query")
    good = TOKENED.settings()
    for method in ("GET", "POST"):
        ctype = None if method == "GET" else FORM
        url = f"https://status.example.com/webhooks/smpp?token={TOKEN}"
        smpp.verify(h.request("smpp", body, url=url, content_type=ctype, method=method), good)
        wrong = url.replace(TOKEN, TOKEN + "x")
        with pytest.raises(SignatureError):
            smpp.verify(h.request("smpp", body, url=wrong, content_type=ctype, method=method), good)


def test_both_schemes_configured_and_crossed() -> None:
    both = h.settings(SMPP_USER=USER, SMPP_PASSWORD=PASSWORD, SMPP_TOKEN=TOKEN)
    smpp.verify(basic_signed(BASIC.body, PASSWORD), both)
    smpp.verify(token_signed(BASIC.body, TOKEN), both)
    bearer = h.request("smpp", BASIC.body, headers={"authorization": f"Bearer {TOKEN}"})
    smpp.verify(bearer, both)
    with pytest.raises(SignatureError):  # Basic given, only a token configured
        smpp.verify(basic_signed(BASIC.body, PASSWORD), h.settings(SMPP_TOKEN=TOKEN))
    with pytest.raises(SignatureError):  # the token as a Basic password is not the token
        smpp.verify(basic_signed(BASIC.body, TOKEN), both)
    assert not smpp.enabled(h.settings(SMPP_USER=USER))


# --- robustness -------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_random_receipt_text_never_crashes(text: str) -> None:
    body = json.dumps({"id": "1", "short_message": text}).encode()
    h.parse_never_raises(smpp, body, "application/json")


def test_malformed_basic_headers_are_refused() -> None:
    both = h.settings(SMPP_USER=USER, SMPP_PASSWORD=PASSWORD, SMPP_TOKEN=TOKEN)
    for auth in ("Basic !!!", "Basic ", "Basic \u00e9", "Basic " + "A" * 3):
        with pytest.raises(SignatureError):
            smpp.verify(h.request("smpp", b"a=1", headers={"authorization": auth}), both)
