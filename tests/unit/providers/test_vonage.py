"""Vonage SMS DLRs: statuses, err-code categories, scts, signed webhooks (every method)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from urllib.parse import parse_qsl

import pytest

from processors.config import ConfigError
from processors.providers import vonage
from processors.providers.base import FramingError, SignatureError

from . import harness as h

SECRET = "vonage-signature-secret-0123456789"

CASES = [
    h.Case("delivered.json", [("vonage:0A0000001234567B", "delivered", "delivered", "sms", None)]),
    h.Case(
        "failed_antispam.form",
        [("vonage:0A0000001234567C", "undelivered", "failed", "sms", "carrier_filtered")],
    ),
    h.Case("accepted.form", [("vonage:0A0000001234567D", "sent", "accepted", "sms", None)]),
    h.Case("buffered.form", [("vonage:0A00000012345681", "sent", "buffered", "sms", None)]),
    h.Case("expired.form", [("vonage:0A0000001234567E", "expired", "expired", "sms", "expired")]),
    h.Case(
        "rejected_consent.form",
        [("vonage:0A0000001234567F", "rejected", "rejected", "sms", "opted_out")],
    ),
    h.Case("unknown.form", [], ignored=1),
    # issue 16: Vonage's default DLR method is GET, the receipt in the query string
    h.Case("delivered.query", [("vonage:0A00000012345690", "delivered", "delivered", "sms", None)]),
]


def test_scts_is_the_event_time_and_api_key_the_account() -> None:
    result, _ = h.parse_case(vonage, h.Case("delivered.json", []))
    (event,) = result.events
    assert event.occurred_at == dt.datetime(2026, 4, 28, 14, 30, tzinfo=dt.UTC).timestamp()
    assert event.account == "abcd1234"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2604281430", dt.datetime(2026, 4, 28, 14, 30, tzinfo=dt.UTC).timestamp()),
        ("2613281430", None),
        ("26042814", None),
        ("", None),
        (None, None),
    ],
)
def test_scts_time(raw: str | None, expected: float | None) -> None:
    assert vonage.scts_time(raw) == expected


def _dlr(status: str, err: str = "0") -> bytes:
    return h.form([("messageId", "0A00"), ("status", status), ("err-code", err)])


# PROVIDERS.md "Vonage SMS DLR".
@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("accepted", "sent"),
        ("buffered", "sent"),
        ("delivered", "delivered"),
        ("expired", "expired"),
        ("failed", "undelivered"),
        ("rejected", "rejected"),
    ],
)
def test_status_mapping(word: str, status: str) -> None:
    req = h.request("vonage", _dlr(word), content_type="application/x-www-form-urlencoded")
    (event,) = vonage.parse(req).events
    assert (event.status, event.provider_status) == (status, word)
    assert (event.error is not None) == (status in ("expired", "undelivered", "rejected"))


def test_unknown_is_no_change_not_dead() -> None:
    req = h.request("vonage", _dlr("unknown"), content_type="application/x-www-form-urlencoded")
    result = vonage.parse(req)
    assert (result.events, result.ignored, result.dead) == ([], 1, [])


@pytest.mark.parametrize(
    ("err", "code", "category"),
    [
        ("1", "1", "unknown"),
        ("2", "2", "unreachable"),
        ("3", "3", "invalid_number"),
        ("4", "4", "blocked"),
        ("5", "5", "unreachable"),
        ("6", "6", "carrier_filtered"),
        ("7", "7", "unreachable"),
        ("8", "8", "provider_error"),
        ("9", "9", "invalid_number"),
        ("10", "10", "content_rejected"),
        ("11", "11", "unreachable"),
        ("12", "12", "unreachable"),
        ("13", "13", "blocked"),
        ("14", "14", "blocked"),
        ("15", "15", "blocked"),
        ("16", "16", "rate_limited"),
        ("50", "50", "account_problem"),
        ("51", "51", "account_problem"),
        ("52", "52", "content_rejected"),
        ("53", "53", "opted_out"),
        ("54", "54", "account_problem"),
        ("99", "99", "unknown"),
        ("006", "6", "carrier_filtered"),
        ("77", "77", "unknown"),
        ("0", None, "unknown"),
    ],
)
def test_error_codes(err: str, code: str | None, category: str) -> None:
    req = h.request("vonage", _dlr("failed", err), content_type="application/x-www-form-urlencoded")
    (event,) = vonage.parse(req).events
    assert event.error is not None
    assert (event.error.code, event.error.category) == (code, category)


def test_missing_fields_are_dead_items() -> None:
    ctype = "application/x-www-form-urlencoded"
    no_id = vonage.parse(h.request("vonage", b"status=delivered", content_type=ctype))
    assert [d.reason for d in no_id.dead] == ["missing messageId"]
    no_status = vonage.parse(h.request("vonage", b"messageId=1", content_type=ctype))
    assert [d.reason for d in no_status.dead] == ["missing status"]


@pytest.mark.parametrize(
    ("body", "ctype"),
    [
        (b"", "application/json"),
        (b"[1]", "application/json"),
        (b"x", "application/json"),
        (b"%%%", "application/x-www-form-urlencoded"),
        (b"\xff", "application/x-www-form-urlencoded"),
    ],
)
def test_malformed_body_is_a_framing_error(body: bytes, ctype: str) -> None:
    with pytest.raises(FramingError):
        vonage.parse(h.request("vonage", body, content_type=ctype))


# --- signatures -------------------------------------------------------------------------


def test_official_sdk_vectors() -> None:
    """vonage-python-sdk's published vector (md5hash) and its HMAC construction."""
    params = {"a": "1", "b": "2", "timestamp": "1461605396"}
    assert vonage.calculate_signature("secret", params, "md5hash") == (
        "6af838ef94998832dbfc29020b564830"
    )
    payload = b"&a=1&b=2&timestamp=1461605396"
    for method in ("md5", "sha1", "sha256", "sha512"):
        expected = hmac.new(b"secret", payload, getattr(hashlib, method)).hexdigest()
        assert vonage.calculate_signature("secret", params, method) == expected
    # `&` and `=` inside values are replaced by `_` before hashing
    tricky = vonage.calculate_signature("secret", {"a": "x&y=z"}, "sha256")
    assert tricky == vonage.calculate_signature("secret", {"a": "x_y_z"}, "sha256")
    with pytest.raises(ValueError):
        vonage.calculate_signature("secret", params, "crc32")


def signed_request(
    name: str, secret: str = SECRET, method: str = "sha256", *, tamper: bool = False
) -> h.WebhookRequest:
    body = h.fixture("vonage", name)
    json_body = name.endswith(".json")
    headers, signed = vonage.sign(
        h.URL, body, secret, method, json_body=json_body, timestamp=int(h.RECEIVED_AT)
    )
    if tamper:
        signed = signed.replace(b"delivered", b"rejected").replace(b"failed", b"delivered")
    return h.request("vonage", signed, headers=headers, content_type=None)


def configured(method: str | None = None, api_key: str | None = None) -> h.Settings:
    values = {"VONAGE_SIGNATURE_SECRET": SECRET}
    if method is not None:
        values["VONAGE_SIGNATURE_METHOD"] = method
    if api_key is not None:
        values["VONAGE_API_KEY"] = api_key
    return h.settings(**values)


def json_signed(body: bytes, secret: str) -> h.WebhookRequest:
    headers, signed = vonage.sign(h.URL, body, secret, json_body=True, timestamp=int(h.RECEIVED_AT))
    return h.request("vonage", signed, headers=headers, content_type=None)


CONTRACT = h.SignatureContract(
    module=vonage,
    secret_name="VONAGE_SIGNATURE_SECRET",
    secret=SECRET,
    body=h.fixture("vonage", "delivered.json"),
    sign=json_signed,
    auth_headers=(),
    unsigned=lambda body: h.request("vonage", body, content_type=None),  # no `sig` in it
)
VERIFY_FUZZ = [(configured(), None)]


@pytest.mark.parametrize("method", ["md5hash", "md5", "sha1", "sha256", "sha512"])
@pytest.mark.parametrize("name", ["delivered.json", "failed_antispam.form"])
def test_valid_signature_every_method(method: str, name: str) -> None:
    req = signed_request(name, method=method)
    vonage.verify(req, configured(method.upper() if method == "sha1" else method))
    assert vonage.parse(req).events  # the signed body still parses


def test_default_method_is_sha256() -> None:
    vonage.verify(signed_request("delivered.json"), configured())
    with pytest.raises(SignatureError):
        vonage.verify(signed_request("delivered.json", method="sha512"), configured())


@pytest.mark.parametrize("name", ["delivered.json", "failed_antispam.form"])
def test_wrong_secret_tampered_and_missing(name: str) -> None:
    with pytest.raises(SignatureError):
        vonage.verify(signed_request(name, secret=SECRET + "-not"), configured())
    with pytest.raises(SignatureError):
        vonage.verify(signed_request(name, tamper=True), configured())
    unsigned = h.request("vonage", h.fixture("vonage", name), content_type=None)
    with pytest.raises(SignatureError, match="missing `sig`") as info:
        vonage.verify(unsigned, configured())
    assert SECRET not in str(info.value)


def test_sig_case_and_removed_param() -> None:
    req = signed_request("failed_antispam.form")
    pairs = parse_qsl(req.body.decode())
    upper = [(k, v.upper() if k == "sig" else v) for k, v in pairs]
    vonage.verify(h.with_changes(req, body=h.form(upper)), configured())
    dropped = [(k, v) for k, v in pairs if k != "nonce"]
    with pytest.raises(SignatureError):
        vonage.verify(h.with_changes(req, body=h.form(dropped)), configured())


def test_api_key_must_match_when_configured() -> None:
    req = signed_request("delivered.json")
    vonage.verify(req, configured(api_key="abcd1234"))
    with pytest.raises(SignatureError, match="api-key"):
        vonage.verify(req, configured(api_key="other-key"))


def test_disabled_and_misconfigured() -> None:
    req = signed_request("delivered.json")
    assert not vonage.enabled(h.settings())
    assert not vonage.enabled(h.settings(VONAGE_API_KEY="abcd1234"))
    with pytest.raises(SignatureError, match="not configured"):
        vonage.verify(req, h.settings(VONAGE_API_KEY="abcd1234"))
    with pytest.raises(ConfigError, match="MSGSTATUS_VONAGE_SIGNATURE_METHOD"):  # at start
        configured("crc32")


def test_json_sig_covers_json_scalars() -> None:
    body = json.dumps({"messageId": "X1", "status": "delivered", "price": 0.5, "n": 3}).encode()
    headers, signed = vonage.sign(h.URL, body, SECRET, json_body=True, timestamp=int(h.RECEIVED_AT))
    vonage.verify(h.request("vonage", signed, headers=headers, content_type=None), configured())
    changed = signed.replace(b"0.5", b"0.6")
    with pytest.raises(SignatureError):
        vonage.verify(
            h.request("vonage", changed, headers=headers, content_type=None), configured()
        )


@pytest.mark.parametrize(("age", "accepted"), [(0, True), (299, True), (301, False), (-301, False)])
def test_signed_timestamp_within_the_replay_window(age: int, accepted: bool) -> None:
    body = h.fixture("vonage", "failed_antispam.form")
    headers, signed = vonage.sign(h.URL, body, SECRET, timestamp=int(h.RECEIVED_AT) - age)
    req = h.request("vonage", signed, headers=headers, content_type=None)
    if accepted:
        vonage.verify(req, configured())
    else:
        with pytest.raises(SignatureError, match="replay window"):
            vonage.verify(req, configured())


def test_a_30_day_old_receipt_is_refused() -> None:
    """Finding: Vonage's signed `timestamp` was ignored; a 30 days old receipt got 200."""
    body = h.fixture("vonage", "delivered.json")
    month = 30 * 86_400
    headers, signed = vonage.sign(
        h.URL, body, SECRET, json_body=True, timestamp=int(h.RECEIVED_AT) - month
    )
    with pytest.raises(SignatureError, match="replay window"):
        vonage.verify(h.request("vonage", signed, headers=headers, content_type=None), configured())


def test_signed_receipt_without_timestamp_is_refused() -> None:
    pairs = [(k, v) for k, v in parse_qsl(h.fixture("vonage", "accepted.form").decode())]
    unstamped = h.form([(k, v) for k, v in pairs if k != "timestamp"])
    headers, signed = vonage.sign(h.URL, unstamped, SECRET)
    with pytest.raises(SignatureError, match="timestamp missing"):
        vonage.verify(h.request("vonage", signed, headers=headers, content_type=None), configured())


def test_nonce_is_the_replay_key() -> None:
    req = signed_request("delivered.json")
    key = vonage.replay_key(req, configured())
    assert key is not None and key.key == "6c2b4a1e-0b0c-4f7e-9d23-8f6c0d1e2a3b"


# --- robustness -------------------------------------------------------------------------


def test_malformed_sig_is_refused() -> None:
    for junk in (b"sig=", b"sig=\xff", b'{"sig": 1}', b'{"sig": ["x"]}', b"sig=%ZZ"):
        for ctype in ("application/json", "application/x-www-form-urlencoded", None):
            with pytest.raises(SignatureError):
                vonage.verify(h.request("vonage", junk, content_type=ctype), configured())
