"""360dialog: Cloud API and on-premise shapes through meta's WhatsApp parser; token auth."""

from __future__ import annotations

import json

import pytest

from processors.providers import dialog360, meta
from processors.providers.base import FramingError, SignatureError

from . import harness as h

TOKEN = "d360-api-key-0123456789abcdef"
WAMID = "360dialog:wamid.HBgNNDkxNTE1NTU1MjUyNhUCABEYEj"

CASES = [
    h.Case(
        "cloud_delivered.json",
        [(f"{WAMID}AzRjVFRDg0RDY0QkFBMjk3MQA=", "delivered", "delivered", "whatsapp", None)],
    ),
    h.Case(
        "cloud_batch.json",
        [
            (f"{WAMID}AzRjVFRDg0RDY0QkFBMjk3MQA=", "sent", "sent", "whatsapp", None),
            (f"{WAMID}AzRjVFRDg0RDY0QkFBMjk3MQA=", "read", "read", "whatsapp", None),
            (
                f"{WAMID}BCMTIzNDU2Nzg5MEFCQ0RFRgA=",
                "failed",
                "failed",
                "whatsapp",
                "outside_window",
            ),
        ],
        dead=["unknown whatsapp status 'teleported'"],
    ),
    h.Case(
        "onpremise_read.json",
        [("360dialog:gBEGSRURUwNmAgk3R-UFNF8fNNg", "read", "read", "whatsapp", None)],
    ),
    h.Case(
        "onpremise_failed_470.json",
        [
            (
                "360dialog:gBEGSRURUwNmAgkvtjL_nNsYBn0",
                "failed",
                "failed",
                "whatsapp",
                "outside_window",
            )
        ],
    ),
    h.Case("onpremise_inbound.json", [], ignored=1),
]


def test_cloud_account_and_time() -> None:
    result, _ = h.parse_case(dialog360, h.Case("cloud_delivered.json", []))
    (event,) = result.events
    assert (event.account, event.occurred_at) == ("106540352242922", 1666251430.0)
    result, _ = h.parse_case(dialog360, h.Case("onpremise_read.json", []))
    assert result.events[0].account is None


def _onprem(word: str) -> bytes:
    status = {"id": "gBEG1", "recipient_id": "4915123456789", "status": word, "timestamp": "1"}
    return json.dumps({"statuses": [status]}).encode()


# The mapping is Meta's WhatsApp table (PROVIDERS.md "Meta ... (and 360dialog)").
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
def test_status_mapping_is_metas(word: str, status: str) -> None:
    (event,) = dialog360.parse(h.request("360dialog", _onprem(word))).events
    assert (event.provider, event.status, event.provider_status) == ("360dialog", status, word)
    assert (event.error is not None) == (status == "failed")


def test_ignored_words_are_metas() -> None:
    result = dialog360.parse(h.request("360dialog", _onprem("warning")))
    assert (result.events, result.ignored, result.dead) == ([], 1, [])
    assert dialog360.STATUSES is meta.STATUSES and dialog360.ERROR_CODES is meta.ERROR_CODES


def test_meta_itself_still_names_its_events_meta() -> None:
    body = h.fixture("360dialog", "cloud_delivered.json")
    (event,) = meta.parse(h.request("meta", body)).events
    assert event.provider == "meta"


def test_other_cloud_subscriptions_are_ignored() -> None:
    body = json.dumps({"object": "page", "entry": [{"id": "1"}, {"id": "2"}]}).encode()
    result = dialog360.parse(h.request("360dialog", body))
    assert (result.events, result.ignored) == ([], 2)


@pytest.mark.parametrize(
    "body",
    [b"", b"[]", b"[{}]", b"{}", b'{"object": "whatsapp_business_account"}', b'{"hello": 1}', b"x"],
)
def test_malformed_body_is_a_framing_error(body: bytes) -> None:
    with pytest.raises(FramingError):
        dialog360.parse(h.request("360dialog", body))


# --- authentication -------------------------------------------------------------------


def signed(body: bytes, secret: str) -> h.WebhookRequest:
    return h.request("360dialog", body, headers=dialog360.sign(h.URL, body, secret))


CONTRACT = h.SignatureContract(
    module=dialog360,
    secret_name="360DIALOG_TOKEN",
    secret=TOKEN,
    body=h.fixture("360dialog", "cloud_delivered.json"),
    sign=signed,
    auth_headers=("d360-api-key",),
    body_bound=False,
)


@pytest.mark.parametrize(
    "headers",
    [{"D360-API-KEY": TOKEN}, {"token": TOKEN}, {"Authorization": f"Bearer {TOKEN}"}],
)
def test_accepted_token_headers(headers: dict[str, str]) -> None:
    dialog360.verify(h.request("360dialog", CONTRACT.body, headers=headers), CONTRACT.settings())


def test_wrong_key_in_the_360dialog_header_wins_over_a_good_bearer() -> None:
    headers = {"D360-API-KEY": "nope", "Authorization": f"Bearer {TOKEN}"}
    with pytest.raises(SignatureError):
        dialog360.verify(
            h.request("360dialog", CONTRACT.body, headers=headers), CONTRACT.settings()
        )


# --- robustness -------------------------------------------------------------------------


def test_a_non_ascii_api_key_is_refused() -> None:
    junk = {"d360-api-key": "\u00e9"}
    with pytest.raises(SignatureError):
        dialog360.verify(h.request("360dialog", b"{}", headers=junk), CONTRACT.settings())
