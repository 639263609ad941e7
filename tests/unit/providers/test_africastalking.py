"""Africa's Talking: every status word and failureReason, the token in the callback URL."""

from __future__ import annotations

import pytest

from processors.providers import africastalking
from processors.providers.base import FramingError

from . import harness as h

TOKEN = "africastalking-callback-token-0123456789"
FORM = "application/x-www-form-urlencoded"
M = africastalking


def row(key: str, status: str, word: str, category: str | None = None) -> h.Row:
    return (f"africastalking:ATXid_{key}", status, word, "sms", category)


CASES = [
    h.Case("success.form", [row("3f5e2a1b0c9d8e7f6a5b4c3d2e1f0a9b", "delivered", "Success")]),
    h.Case("submitted.form", [row("4a6f3b2c1d0e9f8a7b6c5d4e3f2a1b0c", "sent", "Submitted")]),
    h.Case("buffered.form", [row("4a6f3b2c1d0e9f8a7b6c5d4e3f2a1b0c", "sent", "Buffered")]),
    h.Case(
        "failed_user_inactive.form",
        [row("5b7a4c3d2e1f0a9b8c7d6e5f4a3b2c1d", "undelivered", "Failed", "unreachable")],
    ),
    h.Case(
        "rejected_blacklist.form",
        [row("6c8b5d4e3f2a1b0c9d8e7f6a5b4c3d2e", "rejected", "Rejected", "opted_out")],
    ),
    h.Case(
        "failed_no_reason.form",
        [row("7d9c6e5f4a3b2c1d0e9f8a7b6c5d4e3f", "undelivered", "Failed", "unknown")],
    ),
    h.Case("unknown_status.form", [], dead=["unknown africastalking status 'Teleported'"]),
]


def _report(status: str, reason: str | None = None) -> bytes:
    pairs = [("id", "ATXid_1"), ("status", status), ("phoneNumber", "+2348030000001")]
    if reason is not None:
        pairs.append(("failureReason", reason))
    return h.form(pairs)


# PROVIDERS-NEXT.md "Africa's Talking": every status word.
@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("Sent", "sent"),
        ("Submitted", "sent"),
        ("Buffered", "sent"),
        ("Success", "delivered"),
        ("Rejected", "rejected"),
        ("Failed", "undelivered"),
    ],
)
def test_status_mapping(word: str, status: str) -> None:
    (event,) = M.parse(h.request(M.NAME, _report(word), content_type=FORM)).events
    assert (event.status, event.provider_status) == (status, word)
    assert (event.error is not None) == (status in ("rejected", "undelivered"))


@pytest.mark.parametrize(
    ("reason", "category"),
    [
        ("InsufficientCredit", "blocked"),
        ("InvalidLinkId", "account_problem"),
        ("UserIsInactive", "unreachable"),
        ("UserInBlackList", "opted_out"),
        ("UserAccountSuspended", "blocked"),
        ("NotNetworkSubcriber", "invalid_number"),  # sic, as Africa's Talking spells it
        ("UserNotSubscribedToProduct", "opted_out"),
        ("UserDoesNotExist", "invalid_number"),
        ("DeliveryFailure", "unknown"),
        ("SomethingNew", "unknown"),
    ],
)
def test_failure_reasons(reason: str, category: str) -> None:
    (event,) = M.parse(h.request(M.NAME, _report("Failed", reason), content_type=FORM)).events
    assert event.error is not None
    assert (event.error.code, event.error.category) == (reason, category)


def test_json_body_is_read_too() -> None:
    body = b'{"id": "ATXid_2", "status": "Success", "networkCode": 62130}'
    (event,) = M.parse(h.request(M.NAME, body)).events
    assert (event.provider_message_id, event.status) == ("ATXid_2", "delivered")


def test_missing_fields_are_dead_items() -> None:
    no_id = M.parse(h.request(M.NAME, b"status=Success", content_type=FORM))
    assert [d.reason for d in no_id.dead] == ["delivery report without id"]
    no_status = M.parse(h.request(M.NAME, b"id=ATXid_1", content_type=FORM))
    assert [d.reason for d in no_status.dead] == ["delivery report without status"]


@pytest.mark.parametrize(
    ("body", "ctype"), [(b"", FORM), (b"%%%", FORM), (b"[1]", "application/json")]
)
def test_malformed_body_is_a_framing_error(body: bytes, ctype: str) -> None:
    with pytest.raises(FramingError):
        M.parse(h.request(M.NAME, body, content_type=ctype))


# --- authentication -----------------------------------------------------------------------


def in_url(body: bytes, secret: str) -> h.WebhookRequest:
    url = M.sign("https://status.example.com/webhooks/africastalking", secret)
    return h.request(M.NAME, body, url=url, content_type=FORM)


CONTRACT = h.SignatureContract(
    module=M,
    secret_name="AFRICASTALKING_TOKEN",
    secret=TOKEN,
    body=h.fixture(M.NAME, "success.form"),
    sign=in_url,
    auth_headers=(),  # the token is in the URL: the check below removes it there
    body_bound=False,
    extra_settings={"BREVO_TOKEN": "brevo-token"},
    wrong_account=lambda body: in_url(body, "brevo-token"),
    unsigned=lambda body: h.request(M.NAME, body, content_type=FORM),
)

CHECKS = h.FULL_SIGNATURE_CHECKS


def test_token_header_and_bearer_work_too() -> None:
    good = CONTRACT.settings()
    M.verify(h.request(M.NAME, CONTRACT.body, headers={"token": TOKEN}, content_type=FORM), good)
    bearer = {"authorization": f"Bearer {TOKEN}"}
    M.verify(h.request(M.NAME, CONTRACT.body, headers=bearer, content_type=FORM), good)
    assert M.sign("https://x.example/cb?a=1", "t") == "https://x.example/cb?a=1&token=t"
