"""Shared, data-driven harness for provider modules (after courier's handlertest).

A provider's test module declares cases (fixture file -> expected events, ignored count,
dead-letter reasons) and its signature contract; test_contract.py runs them for every
provider of the registry. The harness builds the request with a frozen clock, parses it,
compares, and checks the invariants every CanonicalEvent must keep. It also holds the
mandatory negative cases: the signature contract and mutation fuzzing that must never
make parse() raise anything but FramingError, nor verify() anything but SignatureError.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
import pytest

from processors.config import Settings
from processors.model import CHANNELS, ERROR_CATEGORIES, STATUSES, CanonicalEvent
from processors.providers.base import (
    FramingError,
    ParseResult,
    SignatureError,
    WebhookRequest,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
RECEIVED_AT = 1_777_400_000.0  # frozen clock: 2026-04-28T18:13:20Z
URL = "https://status.example.com/webhooks/{provider}"

# What a case expects per event: (message_key, status, provider_status, channel, category).
Row = tuple[str, str, str, str, str | None]


# --- building requests ------------------------------------------------------------------


def fixture(provider: str, name: str) -> bytes:
    return (FIXTURES / provider / name).read_bytes()


def content_type_for(name: str) -> str | None:
    """`.form` bodies are forms, `.query` files are GET query strings (no content type)."""
    if name.endswith(".query"):
        return None
    return "application/x-www-form-urlencoded" if name.endswith(".form") else "application/json"


def method_for(name: str) -> str:
    return "GET" if name.endswith(".query") else "POST"


def request(
    provider: str,
    body: bytes,
    *,
    headers: Mapping[str, str] | None = None,
    url: str | None = None,
    content_type: str | None = "application/json",
    received_at: float = RECEIVED_AT,
    polled: bool = False,
    method: str = "POST",
) -> WebhookRequest:
    """A WebhookRequest as the gateway builds it: lower-case header names, exact bytes
    (for a GET receipt the body is the raw query string, as the gateway stores it)."""
    merged: dict[str, str] = {}
    if content_type is not None:
        merged["content-type"] = content_type
    merged.update({k.lower(): v for k, v in (headers or {}).items()})
    return WebhookRequest(
        provider=provider,
        method=method,
        url=url or URL.format(provider=provider),
        headers=merged,
        body=body,
        received_at=received_at,
        polled=polled,
    )


def settings(
    api_token: str | None = None, events_token: str | None = None, **values: str
) -> Settings:
    """Settings as the environment would give them: provider secrets and provider
    settings named without MSGSTATUS_ (typed and checked like at start-up)."""
    env = {f"MSGSTATUS_{k.upper()}": v for k, v in values.items()}
    if api_token is not None:
        env["MSGSTATUS_API_TOKEN"] = api_token
    if events_token is not None:
        env["MSGSTATUS_EVENTS_TOKEN"] = events_token
    return Settings.from_env(env)


def form(pairs: Sequence[tuple[str, str]]) -> bytes:
    return urlencode(list(pairs)).encode()


# --- data-driven parse cases ------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One fixture and everything its parse must yield."""

    fixture: str
    events: list[Row]
    ignored: int = 0
    dead: list[str] = field(default_factory=list)  # substrings of the dead reasons, in order
    url: str | None = None
    polled: bool = False
    content_type: str | None = None  # default: from the fixture's extension

    @property
    def id(self) -> str:
        return self.fixture.rsplit(".", 1)[0]


def row(event: CanonicalEvent) -> Row:
    category = event.error.category if event.error else None
    return (event.message_key, event.status, event.provider_status, event.channel, category)


def check_event(module: ModuleType, event: CanonicalEvent, req: WebhookRequest) -> None:
    """Invariants of every event any provider emits."""
    if module.NAME != "events":
        assert event.provider == module.NAME
    assert isinstance(event.provider_message_id, str) and event.provider_message_id
    assert event.status in STATUSES and event.status != "delivery_unknown"
    assert isinstance(event.provider_status, str) and event.provider_status
    assert event.channel in CHANNELS
    assert event.observed_at == req.received_at
    assert event.polled == req.polled
    assert event.occurred_at is None or (
        isinstance(event.occurred_at, float) and math.isfinite(event.occurred_at)
    )
    assert event.account is None or (isinstance(event.account, str) and event.account)
    if event.error is not None:
        assert event.error.category in ERROR_CATEGORIES
        assert event.error.code is None or isinstance(event.error.code, str)
    orjson.dumps(event.to_dict())  # serializable as it will travel
    assert CanonicalEvent.from_dict(event.to_dict()) == event


def check_result(module: ModuleType, result: ParseResult, req: WebhookRequest) -> None:
    assert isinstance(result, ParseResult)
    for event in result.events:
        check_event(module, event, req)
    for dead in result.dead:
        assert isinstance(dead.reason, str) and dead.reason
        # the guard's catch-all must never be what handled an input: that is a bug
        assert not dead.reason.startswith("parser error"), dead.reason
    assert isinstance(result.ignored, int) and result.ignored >= 0


def parse_case(module: ModuleType, case: Case) -> tuple[ParseResult, WebhookRequest]:
    body = fixture(module.NAME, case.fixture)
    ctype = case.content_type or content_type_for(case.fixture)
    method = method_for(case.fixture)
    req = request(
        module.NAME, body, url=case.url, content_type=ctype, polled=case.polled, method=method
    )
    result = module.parse(req)
    check_result(module, result, req)
    return result, req


def run_case(module: ModuleType, case: Case) -> ParseResult:
    result, _ = parse_case(module, case)
    assert [row(e) for e in result.events] == case.events
    assert result.ignored == case.ignored, [d.reason for d in result.dead]
    reasons = [d.reason for d in result.dead]
    assert len(reasons) == len(case.dead), reasons
    for reason, expected in zip(reasons, case.dead, strict=True):
        assert expected in reason
    return result


def cases(items: Sequence[Case]) -> Any:
    """pytest parametrization with readable ids."""
    return pytest.mark.parametrize("case", list(items), ids=[c.id for c in items])


# --- the signature contract -----------------------------------------------------------------


@dataclass(frozen=True)
class SignatureContract:
    """How to sign for a provider: tests sign with the module's own calculate_signature."""

    module: ModuleType
    secret_name: str  # settings key without MSGSTATUS_
    secret: str
    body: bytes
    sign: Callable[[bytes, str], WebhookRequest]  # (body, secret) -> signed request
    auth_headers: tuple[str, ...]
    body_bound: bool = True  # does the credential cover the body?
    extra_settings: Mapping[str, str] = field(default_factory=dict)
    # A request genuinely signed, but for another account than the configured one (another
    # api_key, key pair, subscription URL, Basic user, provider's token): must be refused.
    wrong_account: Callable[[bytes], WebhookRequest] | None = None
    # (body, secret, signed_at) -> request signed at that time, for schemes that sign a
    # time; None when the scheme signs none (then "replayed" does not apply).
    sign_at: Callable[[bytes, str, float], WebhookRequest] | None = None
    window: float = 300.0  # the replay window those settings give
    # The request without its credential, where that is more than dropping auth_headers
    # (a `?token=` in the URL, a `sig` inside the body).
    unsigned: Callable[[bytes], WebhookRequest] | None = None

    def settings(self, **overrides: str) -> Settings:
        values = {self.secret_name: self.secret, **self.extra_settings, **overrides}
        return settings(**values)


SIGNATURE_CHECKS = ("valid", "wrong_secret", "missing_header", "tampered_body", "disabled")
# What issue 16 asks of every new provider: the above, plus a wrong account and a replay
# outside the window (where the scheme signs a time).
FULL_SIGNATURE_CHECKS = (*SIGNATURE_CHECKS, "wrong_account", "replayed")


def check_signature(contract: SignatureContract, check: str) -> None:
    module = contract.module
    good = contract.settings()
    if check == "valid":
        assert module.enabled(good)
        module.verify(contract.sign(contract.body, contract.secret), good)
    elif check == "wrong_secret":
        req = contract.sign(contract.body, contract.secret + "-not")
        with pytest.raises(SignatureError):
            module.verify(req, good)
    elif check == "missing_header":
        if contract.unsigned is not None:
            bare = contract.unsigned(contract.body)
        else:
            req = contract.sign(contract.body, contract.secret)
            headers = {k: v for k, v in req.headers.items() if k not in contract.auth_headers}
            bare = _with(req, headers=headers)
        with pytest.raises(SignatureError) as info:
            module.verify(bare, good)
        assert contract.secret not in str(info.value)
    elif check == "tampered_body":
        req = contract.sign(contract.body, contract.secret)
        tampered = _with(req, body=_tamper(contract.body))
        if contract.body_bound:
            with pytest.raises(SignatureError):
                module.verify(tampered, good)
        else:  # a bare token proves the sender only; it is accepted as is
            module.verify(tampered, good)
    elif check == "disabled":
        off = settings(**contract.extra_settings)
        assert not module.enabled(Settings())
        with pytest.raises(SignatureError):
            module.verify(contract.sign(contract.body, contract.secret), off)
    elif check == "wrong_account":
        assert contract.wrong_account is not None, "the contract must say what another account is"
        with pytest.raises(SignatureError):
            module.verify(contract.wrong_account(contract.body), good)
    elif check == "replayed":
        if contract.sign_at is None:
            pytest.skip(f"{module.NAME}'s scheme signs no time: nothing can be replayed late")
        now = RECEIVED_AT
        edge = contract.window - 5
        for signed_at in (now - edge, now + edge):  # inside the window: accepted
            module.verify(contract.sign_at(contract.body, contract.secret, signed_at), good)
        for signed_at in (now - contract.window - 5, now - 86_400 * 30, now + contract.window + 5):
            with pytest.raises(SignatureError, match=r"window|future|expired"):
                module.verify(contract.sign_at(contract.body, contract.secret, signed_at), good)
    else:  # pragma: no cover
        raise AssertionError(check)


def _with(req: WebhookRequest, **changes: Any) -> WebhookRequest:
    values = {
        "provider": req.provider,
        "method": req.method,
        "url": req.url,
        "headers": req.headers,
        "body": req.body,
        "received_at": req.received_at,
        "polled": req.polled,
    }
    values.update(changes)
    return WebhookRequest(**values)


def _tamper(body: bytes) -> bytes:
    for old, new in ((b"delivered", b"read"), (b"read", b"sent"), (b"sent", b"read")):
        if old in body:
            return body.replace(old, new, 1)
    return body + b" "


def with_changes(req: WebhookRequest, **changes: Any) -> WebhookRequest:
    return _with(req, **changes)


# --- robustness: parse() raises FramingError or returns a result, never anything else -----

JUNK: tuple[Any, ...] = (
    None,
    True,
    0,
    -1,
    2**70,
    1.5e308,
    "",
    " ",
    "x" * 5000,
    "9" * 400,
    "-1",
    "\u00b2",  # superscript two: str.isdigit() says yes, int() says no
    "\u0661\u0662",  # Arabic-Indic digits
    "\x00",
    "\udfff",  # a lone surrogate: not valid JSON text once encoded
    [],
    [None],
    {},
    {"a": {"b": []}},
)
JUNK_BYTES: tuple[bytes, ...] = (
    b"",
    b" ",
    b"\xff\xfe\x00",
    b"null",
    b"true",
    b"0",
    b'"x"',
    b"[]",
    b"{}",
    b"[[]]",
    b"[{}]",
    b'{"entry": {}}',
    b'{"object": "page", "entry": [1, "x", null, {"messaging": [1, {}]}]}',
    b'{"object": "whatsapp_business_account", "entry": [{"changes": [{"value": []}]}]}',
    b"[" * 5000 + b"]" * 5000,
    b'{"a":' * 2000 + b"1" + b"}" * 2000,
    b"%%%=&&==&a=%ZZ",
    b"a=1&a=2&&b",
    b"MessageSid=&MessageStatus=",
    b"\x00" * 64,
    b'{"MessageSid": ["x"], "MessageStatus": {"a": 1}}',
    b'{"event": "message.status", "data": {"message_id": 1e400}}',
    b'{"message_id": NaN}',
)


def mutations(value: Any) -> Iterator[Any]:
    """`value` with one node replaced by junk (or one key dropped), one at a time."""
    paths = list(_paths(value, ()))
    for path in paths:
        for junk in JUNK:
            yield _replace(value, path, junk)
        if path and isinstance(_get(value, path[:-1]), dict):
            yield _replace(value, path, _DROP)


_DROP = object()


def _paths(value: Any, prefix: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _paths(child, (*prefix, index))


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return copy.deepcopy(new)
    out = copy.deepcopy(value)
    parent = _get(out, path[:-1])
    if new is _DROP:
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return out


def parse_never_raises(module: ModuleType, body: bytes, content_type: str | None) -> None:
    """parse() either raises FramingError or returns a well-formed ParseResult."""
    for ctype in (content_type, None):
        req = request(module.NAME, body, content_type=ctype)
        try:
            result = module.parse(req)
        except FramingError as exc:
            assert str(exc)
            continue
        check_result(module, result, req)


def fuzz_json_fixture(module: ModuleType, name: str) -> int:
    """Every single-node mutation of a JSON fixture; returns how many were tried."""
    original = orjson.loads(fixture(module.NAME, name))
    tried = 0
    for mutated in mutations(original):
        body = json.dumps(mutated).encode()  # stdlib: big ints and surrogates pass through
        parse_never_raises(module, body, "application/json")
        tried += 1
    return tried


FORM = "application/x-www-form-urlencoded"
FORM_JUNK = ("", " ", "x" * 5000, "9" * 400, "-1", "\x00", "\u00b2", "%", "stat:", "id: err:")


def fuzz_form_fixture(module: ModuleType, name: str) -> int:
    """Every form fixture with one field dropped, or its value replaced by junk."""
    pairs = parse_qsl(fixture(module.NAME, name).decode(), keep_blank_values=True)
    tried = 0
    for index in range(len(pairs)):
        dropped = pairs[:index] + pairs[index + 1 :]
        if dropped:
            parse_never_raises(module, form(dropped), FORM)
        for junk in FORM_JUNK:
            mutated = list(pairs)
            mutated[index] = (pairs[index][0], junk)
            parse_never_raises(module, form(mutated), FORM)
            tried += 1
    return tried


def fuzz_junk(module: ModuleType) -> None:
    for body in JUNK_BYTES:
        for ctype in ("application/json", "application/x-www-form-urlencoded", None):
            parse_never_raises(module, body, ctype)


HEADER_JUNK: tuple[str, ...] = (
    "",
    " ",
    "x",
    "sha256=",
    "sha256=zz",
    "v1,",
    "v1,\u00e9",
    "Bearer ",
    "Bearer \u00e9",
    "\u00b2\u00b2\u00b2",
    "9" * 40,
    "-1",
    "=" * 3,
)


def fuzz_verify(module: ModuleType, configured: Settings, url: str | None = None) -> None:
    """verify() on junk headers and bodies answers with SignatureError, never a crash."""
    names = {*module.SIGNATURE_HEADERS, "authorization", "token", "webhook-id"}
    for body in JUNK_BYTES[:12]:
        for ctype in ("application/json", "application/x-www-form-urlencoded", None):
            for junk in HEADER_JUNK:
                req = request(
                    module.NAME,
                    body,
                    headers={name: junk for name in names},
                    url=url,
                    content_type=ctype,
                )
                with pytest.raises(SignatureError):
                    module.verify(req, configured)
