"""Vonage Messages API: every status word and error code, the JWT (signature, iat window,
payload_hash, api_key), unsigned callbacks (RetryLater), robustness."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import orjson
import pytest

from processors.config import ConfigError
from processors.providers import jwt_hmac, vonage_messages
from processors.providers.base import FramingError, RetryLater, SignatureError

from . import harness as h

SECRET = "vonage-messages-signature-secret-0123456789"
API_KEY = "abcd1234"
APP = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"
M = vonage_messages


def row(uuid: str, status: str, word: str, channel: str, category: str | None = None) -> h.Row:
    return (f"vonage-messages:{uuid}", status, word, channel, category)


CASES = [
    h.Case(
        "whatsapp_rejected_1000.json",
        [
            row(
                "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
                "rejected",
                "rejected",
                "whatsapp",
                "rate_limited",
            )
        ],
    ),
    h.Case(
        "sms_submitted.json",
        [row("bbbbbbbb-cccc-dddd-eeee-0123456789ab", "sent", "submitted", "sms")],
    ),
    h.Case(
        "sms_delivered.json",
        [row("bbbbbbbb-cccc-dddd-eeee-0123456789ab", "delivered", "delivered", "sms")],
    ),
    h.Case(
        "sms_rejected_1360_expired.json",
        [row("cccccccc-dddd-eeee-ffff-0123456789ab", "expired", "rejected", "sms", "expired")],
    ),
    h.Case(
        "sms_rejected_antispam.json",
        [
            row(
                "dddddddd-eeee-ffff-aaaa-0123456789ab",
                "rejected",
                "rejected",
                "sms",
                "carrier_filtered",
            )
        ],
    ),
    h.Case(
        "whatsapp_read.json",
        [row("eeeeeeee-ffff-aaaa-bbbb-0123456789ab", "read", "read", "whatsapp")],
    ),
    h.Case(
        "whatsapp_outside_window.json",
        [
            row(
                "ffffffff-aaaa-bbbb-cccc-0123456789ab",
                "rejected",
                "rejected",
                "whatsapp",
                "outside_window",
            )
        ],
    ),
    h.Case(
        "viber_delivered.json",
        [row("12345678-aaaa-bbbb-cccc-0123456789ab", "delivered", "delivered", "viber")],
    ),
    h.Case(
        "messenger_undeliverable.json",
        [
            row(
                "23456789-aaaa-bbbb-cccc-0123456789ab",
                "failed",
                "undeliverable",
                "messenger",
                "provider_error",
            )
        ],
    ),
    h.Case("unknown_status.json", [], dead=["unknown vonage-messages status 'teleported'"]),
]


def _status(word: str, error: dict[str, object] | None = None, channel: str = "sms") -> bytes:
    item: dict[str, object] = {
        "message_uuid": "u-1",
        "to": "447700900000",
        "from": "447700900001",
        "timestamp": "2026-04-28T14:00:00.000Z",
        "status": word,
        "channel": channel,
    }
    if error is not None:
        item["error"] = error
    return json.dumps(item).encode()


# PROVIDERS-NEXT.md "Vonage Messages API": every status word.
@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("submitted", "sent"),
        ("delivered", "delivered"),
        ("read", "read"),
        ("rejected", "rejected"),
        ("undeliverable", "failed"),
    ],
)
def test_status_mapping(word: str, status: str) -> None:
    (event,) = M.parse(h.request(M.NAME, _status(word))).events
    assert (event.status, event.provider_status) == (status, word)
    assert (event.error is not None) == (status in ("rejected", "failed"))


@pytest.mark.parametrize(
    ("named", "channel"),
    [
        ("sms", "sms"),
        ("mms", "mms"),
        ("rcs", "rcs"),
        ("whatsapp", "whatsapp"),
        ("messenger", "messenger"),
        ("viber_service", "viber"),
        ("something_new", "api"),
    ],
)
def test_channels(named: str, channel: str) -> None:
    (event,) = M.parse(h.request(M.NAME, _status("delivered", channel=named))).events
    assert event.channel == channel


# Every code of PROVIDERS-NEXT.md's error table, by title (int or string) or type fragment.
ERRORS = {
    "rate_limited": ["1000", "1241"],
    "unknown": ["1010", "1020", "1021", "1130", "1150", "1320", "1330"],
    "content_rejected": ["1022", "1090", "1380", "1381", "1382"],
    "provider_error": ["1030", "1100", "1331"],
    "invalid_number": ["1040", "1170", "1190", "1200", "1300"],
    "blocked": ["1050", "1280", "1290"],
    "account_problem": ["1060", "1070", "1080", "1120", "1140", "1160", "1350", "1370"],
    "unreachable": ["1180", "1220", "1230", "1250", "1260", "1310"],
    "carrier_filtered": ["1210", "1270"],
    "opted_out": ["1240"],
    "outside_window": ["1340"],
    "expired": ["1360"],
}


@pytest.mark.parametrize(
    ("code", "category"), [(c, cat) for cat, codes in ERRORS.items() for c in codes]
)
@pytest.mark.parametrize("form", ["int", "str", "type"])
def test_error_codes(code: str, category: str, form: str) -> None:
    base = "https://developer.nexmo.com/api-errors/messages-olympus"
    error: dict[str, object] = {"detail": "why"}
    if form == "int":
        error["title"] = int(code)
    elif form == "str":
        error["title"] = code
    else:
        error.update(type=f"{base}#{code}", title="Some words")
    (event,) = M.parse(h.request(M.NAME, _status("rejected", error))).events
    assert event.error is not None
    assert (event.error.code, event.error.category, event.error.description) == (
        code,
        category,
        "why",
    )
    assert event.status == ("expired" if code == "1360" else "rejected")


def test_error_table_is_the_documented_one() -> None:
    documented = {code for codes in ERRORS.values() for code in codes}
    assert set(M.ERROR_CODES) == documented


def test_unlisted_code_and_no_code() -> None:
    (event,) = M.parse(h.request(M.NAME, _status("rejected", {"title": 4242}))).events
    assert event.error is not None and (event.error.code, event.error.category) == (
        "4242",
        "unknown",
    )
    (event,) = M.parse(h.request(M.NAME, _status("rejected"))).events
    assert event.error is not None and (event.error.code, event.error.category) == (
        None,
        "unknown",
    )


def test_time_and_account_from_the_kept_token() -> None:
    body = h.fixture(M.NAME, "sms_delivered.json")
    headers = M.sign(body, SECRET, api_key=API_KEY, issued_at=h.RECEIVED_AT, application_id=APP)
    (event,) = M.parse(h.request(M.NAME, body, headers=headers)).events
    assert event.occurred_at == 1682949605.0  # 2023-05-01T14:00:05Z
    assert event.account == f"{API_KEY}:{APP}"
    no_app = M.sign(body, SECRET, api_key=API_KEY, issued_at=h.RECEIVED_AT)
    assert M.parse(h.request(M.NAME, body, headers=no_app)).events[0].account == API_KEY
    assert M.parse(h.request(M.NAME, body)).events[0].account is None


@pytest.mark.parametrize("body", [b"", b"[]", b"[{}]", b"nope", b'"x"'])
def test_not_an_object_is_a_framing_error(body: bytes) -> None:
    with pytest.raises(FramingError):
        M.parse(h.request(M.NAME, body))


def test_missing_fields_are_dead_items() -> None:
    result = M.parse(h.request(M.NAME, b'{"status": "delivered"}'))
    assert [d.reason for d in result.dead] == ["status without message_uuid"]
    result = M.parse(h.request(M.NAME, b'{"message_uuid": "u"}'))
    assert [d.reason for d in result.dead] == ["status without status"]


# --- signature ----------------------------------------------------------------------------


def signed(body: bytes, secret: str, **claims: object) -> h.WebhookRequest:
    at = float(claims.pop("issued_at", h.RECEIVED_AT))  # type: ignore[arg-type]
    api_key = str(claims.pop("api_key", API_KEY))
    return h.request(M.NAME, body, headers=M.sign(body, secret, api_key=api_key, issued_at=at))


CONTRACT = h.SignatureContract(
    module=M,
    secret_name="VONAGE_MESSAGES_SIGNATURE_SECRET",
    secret=SECRET,
    body=h.fixture(M.NAME, "sms_delivered.json"),
    sign=signed,
    auth_headers=("authorization",),
    # the contract checks the window it configures; the default (a day) is tested below
    extra_settings={"VONAGE_MESSAGES_API_KEY": API_KEY, "VONAGE_MESSAGES_MAX_AGE": "300"},
    wrong_account=lambda body: signed(body, SECRET, api_key="otherkey"),
    sign_at=lambda body, secret, at: signed(body, secret, issued_at=at),
)

CHECKS = h.FULL_SIGNATURE_CHECKS
MIN_MUTATIONS = 20


def test_the_token_is_a_standard_hs256_jwt() -> None:
    """Written out independently: base64url(header).base64url(claims).HMAC-SHA256."""
    body = b'{"message_uuid": "u", "status": "read"}'
    token = M.calculate_signature(SECRET, body, api_key=API_KEY, issued_at=1_700_000_000, jti="j")
    header, claims, mac = token.split(".")
    assert orjson.loads(base64.urlsafe_b64decode(header + "==")) == {"alg": "HS256", "typ": "JWT"}
    assert orjson.loads(base64.urlsafe_b64decode(claims + "==")) == {
        "iat": 1_700_000_000,
        "jti": "j",
        "iss": "Vonage",
        "payload_hash": hashlib.sha256(body).hexdigest(),
        "api_key": API_KEY,
    }
    want = hmac.new(SECRET.encode(), f"{header}.{claims}".encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(mac + "=" * (-len(mac) % 4)) == want


def test_payload_hash_binds_the_exact_bytes() -> None:
    """Vonage hashes what it sends; a re-serialization (spaces) must not pass."""
    body = h.fixture(M.NAME, "sms_delivered.json")
    req = signed(body, SECRET)
    respaced = orjson.dumps(orjson.loads(body))  # same JSON, other bytes
    assert respaced != body
    with pytest.raises(SignatureError, match="payload_hash"):
        M.verify(h.with_changes(req, body=respaced), CONTRACT.settings())


@pytest.mark.parametrize(
    "claims",
    [
        {"iss": "Someone"},
        {"payload_hash": None},
        {"iat": None},
        {"iat": "1777400000"},  # a string is not a NumericDate
        {"exp": h.RECEIVED_AT - 60},
    ],
)
def test_bad_claims_are_refused(claims: dict[str, object]) -> None:
    body = CONTRACT.body
    base: dict[str, object] = {
        "iat": int(h.RECEIVED_AT),
        "jti": "j",
        "iss": "Vonage",
        "payload_hash": M.payload_hash(body),
        "api_key": API_KEY,
    }
    base.update(claims)
    token = jwt_hmac.encode({k: v for k, v in base.items() if v is not None}, SECRET)
    req = h.request(M.NAME, body, headers={"authorization": f"Bearer {token}"})
    with pytest.raises(SignatureError):
        M.verify(req, CONTRACT.settings())


@pytest.mark.parametrize("alg", ["none", "HS512", "RS256"])
def test_only_hs256_is_accepted(alg: str) -> None:
    body = CONTRACT.body
    claims = {"iat": int(h.RECEIVED_AT), "payload_hash": M.payload_hash(body), "api_key": API_KEY}
    if alg == "HS512":
        token = jwt_hmac.encode(claims, SECRET, "HS512")
    else:
        header = jwt_hmac.b64url(orjson.dumps({"alg": alg, "typ": "JWT"}))
        payload = jwt_hmac.b64url(orjson.dumps(claims))
        token = f"{header}.{payload}." + (
            "" if alg == "none" else jwt_hmac.calculate_signature(SECRET, b"x")
        )
    req = h.request(M.NAME, body, headers={"authorization": f"Bearer {token}"})
    with pytest.raises(SignatureError):
        M.verify(req, CONTRACT.settings())


def test_fallback_secret_max_age_and_api_key_optional() -> None:
    body = CONTRACT.body
    fallback = h.settings(VONAGE_SIGNATURE_SECRET=SECRET)
    assert M.enabled(fallback)
    M.verify(signed(body, SECRET, api_key="any-key"), fallback)  # no api_key configured
    day_old = signed(body, SECRET, issued_at=h.RECEIVED_AT - 80_000)
    M.verify(day_old, fallback)  # by default a day: Vonage's retries reuse the token
    with pytest.raises(SignatureError, match="window"):
        M.verify(signed(body, SECRET, issued_at=h.RECEIVED_AT - 90_000), fallback)
    with pytest.raises(SignatureError, match="window"):
        M.verify(day_old, h.settings(VONAGE_SIGNATURE_SECRET=SECRET, VONAGE_MESSAGES_MAX_AGE="300"))
    ahead = signed(body, SECRET, issued_at=h.RECEIVED_AT + 3600)
    with pytest.raises(SignatureError, match="future"):  # MAX_AGE never widens the future
        M.verify(ahead, h.settings(VONAGE_SIGNATURE_SECRET=SECRET, VONAGE_MESSAGES_MAX_AGE="86400"))
    with pytest.raises(ConfigError, match="MSGSTATUS_VONAGE_MESSAGES_MAX_AGE"):  # at start
        h.settings(VONAGE_SIGNATURE_SECRET=SECRET, VONAGE_MESSAGES_MAX_AGE="x")


def test_not_bearer_is_a_signature_error_not_retry() -> None:
    body = CONTRACT.body
    for auth in ("Basic abc", "Bearer", "token-without-scheme"):
        req = h.request(M.NAME, body, headers={"authorization": auth})
        with pytest.raises(SignatureError) as info:
            M.verify(req, CONTRACT.settings())
        assert not isinstance(info.value, RetryLater)


# --- robustness ---------------------------------------------------------------------------


def test_malformed_tokens_are_refused() -> None:
    for token in ("a.b.c", "..", "é.é.é", "a" * 9000, "eyJ9.eyJ9.x", "e30.e30.e30"):
        req = h.request(M.NAME, b"{}", headers={"authorization": f"Bearer {token}"})
        with pytest.raises(SignatureError):
            M.verify(req, CONTRACT.settings())


def test_an_unsigned_callback_is_retried_later() -> None:
    """No token at all: Vonage resends it signed, so the gateway answers 503."""
    bare = h.with_changes(
        signed(CONTRACT.body, SECRET), headers={"content-type": "application/json"}
    )
    with pytest.raises(RetryLater):
        M.verify(bare, CONTRACT.settings())
