"""The HTTP gateway against an in-memory sink: every answer of DESIGN.md section 7.

A real aiohttp server (TestServer) and client; the only fake is the sink behind the
gateway, so what is asserted here is exactly what a provider would see and what would
have been written to Kafka.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import replace

import orjson
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from yarl import URL

from processors import dependencies
from processors.config import Settings
from processors.ingest.gateway import Gateway, is_form
from processors.ingest.producer import MemorySink
from processors.kafka import raw
from processors.providers import events, meta, ryze, twilio
from processors.providers.base import WebhookRequest

TWILIO_TOKEN = "twilio-unit-token-7f3a"
META_SECRET = "meta-unit-secret-91bc"
META_VERIFY = "meta-unit-verify-55e0"
RYZE_TOKEN = "ryze-unit-token-c4d2"
API_TOKEN = "api-unit-token-0a9e"  # the query API's read token
EVENTS_TOKEN = "events-unit-token-5d1c"  # POST /v1/events' write token
EVENTS_SECRET = "whsec_" + "dW5pdC1ldmVudHMtc2VjcmV0LWtleS0xMjM0NTY3OA=="
SECRETS = {
    "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
    "META_APP_SECRET": META_SECRET,
    "META_VERIFY_TOKEN": META_VERIFY,
    "RYZE_TOKEN": RYZE_TOKEN,
    "EVENTS_WEBHOOK_SECRET": EVENTS_SECRET,
}
ALL_SECRETS = (*SECRETS.values(), API_TOKEN, EVENTS_TOKEN)
PREFIX = "tunit."

TWILIO_FORM = urllib.parse.urlencode(
    [
        ("AccountSid", "AC" + "1" * 32),
        ("ApiVersion", "2010-04-01"),
        ("From", "+15017250604"),
        ("MessageSid", "SM" + "a" * 32),
        ("MessageStatus", "delivered"),
        ("To", "+15558675310"),
    ]
).encode()
META_BODY = orjson.dumps(
    {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "statuses": [
                                {"id": "wamid.UNIT1", "status": "read", "timestamp": "1760000000"}
                            ],
                        },
                    }
                ],
            }
        ],
    }
)
RYZE_BODY = orjson.dumps(
    {
        "event": "message.status",
        "instance": "unit-instance",
        "data": {"message_id": "3EB0UNIT", "status": "delivered", "timestamp": 1760000000},
    }
)
EVENT_BODY = orjson.dumps(
    {
        "provider": "crm",
        "provider_message_id": "msg-unit-1",
        "channel": "web",
        "status": "sent",
        "occurred_at": "2025-10-09T08:00:00Z",
        "error": None,
        "account": "helpdesk",
    }
)


def settings(**overrides: object) -> Settings:
    base = Settings(
        topic_prefix=PREFIX, secrets=dict(SECRETS), api_token=API_TOKEN, events_token=EVENTS_TOKEN
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


@pytest.fixture
def sink() -> MemorySink:
    return MemorySink()


async def _client(config: Settings, sink: MemorySink) -> TestClient:
    client = TestClient(TestServer(Gateway(config, sink).app()))
    await client.start_server()
    return client


@pytest.fixture
async def client(sink: MemorySink) -> AsyncIterator[TestClient]:
    c = await _client(settings(), sink)
    try:
        yield c
    finally:
        await c.close()


def url_of(client: TestClient, path: str) -> str:
    """The URL the gateway sees for `path` (what a URL-signing provider signs)."""
    return str(client.make_url(path))


async def json_error(resp: ClientResponse, status: int, *, forbidden: Iterable[str] = ()) -> dict:
    """Assert a JSON error answer that leaks no secret and no expected signature."""
    text = await resp.text()
    assert resp.status == status, text
    assert resp.content_type == "application/json", text
    doc = orjson.loads(text)
    assert isinstance(doc.get("error"), str) and doc["error"].strip(), doc
    for secret in (*ALL_SECRETS, *forbidden):
        assert secret not in text, f"error answer leaks {secret!r}: {text}"
        for value in resp.headers.values():
            assert secret not in value
    return doc


def only_record(sink: MemorySink) -> raw.RawRecord:
    assert len(sink.records) == 1, sink.records
    return sink.records[0]


def headers_of(record: raw.RawRecord) -> dict[str, bytes]:
    names = [name for name, _ in record.headers]
    assert len(names) == len(set(names)), names
    return dict(record.headers)


def check_record(
    record: raw.RawRecord,
    *,
    provider: str,
    body: bytes,
    url: str,
    content_type: str,
    kept: Mapping[str, str],
    before: float,
    after: float,
) -> WebhookRequest:
    """The record holds the exact request; decoding it gives it back; it re-verifies."""
    assert record.topic == PREFIX + f"raw.{provider}"
    assert record.value == body
    assert record.key == hashlib.blake2b(body, digest_size=12).hexdigest().encode()
    headers = headers_of(record)
    assert headers[raw.H_PROVIDER] == provider.encode()
    assert headers[raw.H_METHOD] == b"POST"
    assert headers[raw.H_URL] == url.encode()
    assert headers[raw.H_CONTENT_TYPE] == content_type.encode()
    received_at = float(headers[raw.H_RECEIVED_AT])
    assert before <= received_at <= after
    assert raw.H_POLLED not in headers
    stored_kept = {
        name[len(raw.KEPT_PREFIX) :]: value.decode()
        for name, value in headers.items()
        if name.startswith(raw.KEPT_PREFIX)
    }
    assert stored_kept == dict(kept)
    decoded = raw.decode(record.value, record.headers)
    expected = WebhookRequest(
        provider=provider,
        method="POST",
        url=url,
        headers={**kept, "content-type": content_type},
        body=body,
        received_at=received_at,
    )
    assert decoded == expected
    return decoded


# --- 200: the exact request is kept and re-verifies ---------------------------------------


async def test_twilio_form_accepted_and_record_reverifies(client: TestClient, sink: MemorySink):
    path = "/webhooks/twilio"
    headers = twilio.sign(url_of(client, path), TWILIO_FORM, TWILIO_TOKEN)
    before = time.time()
    resp = await client.post(path, data=TWILIO_FORM, headers=headers)
    after = time.time()
    assert resp.status == 200, await resp.text()
    assert (await resp.json()) == {"status": "accepted"}
    decoded = check_record(
        only_record(sink),
        provider="twilio",
        body=TWILIO_FORM,
        url=url_of(client, path),
        content_type="application/x-www-form-urlencoded",
        kept={"x-twilio-signature": headers["x-twilio-signature"]},
        before=before,
        after=after,
    )
    twilio.verify(decoded, settings())  # the stream can re-verify from Kafka alone
    parsed = twilio.parse(decoded)
    assert [e.status for e in parsed.events] == ["delivered"]


async def test_twilio_json_with_body_sha256_accepted(client: TestClient, sink: MemorySink):
    body = orjson.dumps({"MessageSid": "SM" + "b" * 32, "MessageStatus": "sent"})
    path = f"/webhooks/twilio?bodySHA256={twilio.body_sha256(body)}"
    headers = twilio.sign(url_of(client, path), body, TWILIO_TOKEN, json_body=True)
    before = time.time()
    resp = await client.post(path, data=body, headers=headers)
    after = time.time()
    assert resp.status == 200, await resp.text()
    decoded = check_record(
        only_record(sink),
        provider="twilio",
        body=body,
        url=url_of(client, path),
        content_type="application/json",
        kept={"x-twilio-signature": headers["x-twilio-signature"]},
        before=before,
        after=after,
    )
    twilio.verify(decoded, settings())
    assert [e.status for e in twilio.parse(decoded).events] == ["sent"]


async def test_meta_accepted_and_record_reverifies(client: TestClient, sink: MemorySink):
    path = "/webhooks/meta"
    headers = meta.sign(url_of(client, path), META_BODY, META_SECRET)
    before = time.time()
    resp = await client.post(path, data=META_BODY, headers=headers)
    after = time.time()
    assert resp.status == 200, await resp.text()
    decoded = check_record(
        only_record(sink),
        provider="meta",
        body=META_BODY,
        url=url_of(client, path),
        content_type="application/json",
        kept={"x-hub-signature-256": headers["x-hub-signature-256"]},
        before=before,
        after=after,
    )
    meta.verify(decoded, settings())
    assert [e.status for e in meta.parse(decoded).events] == ["read"]


async def test_ryze_accepted_and_token_never_stored(client: TestClient, sink: MemorySink):
    path = "/webhooks/ryze"
    headers = ryze.sign(url_of(client, path), RYZE_BODY, RYZE_TOKEN)
    before = time.time()
    resp = await client.post(path, data=RYZE_BODY, headers=headers)
    after = time.time()
    assert resp.status == 200, await resp.text()
    record = only_record(sink)
    check_record(
        record,
        provider="ryze",
        body=RYZE_BODY,
        url=url_of(client, path),
        content_type="application/json",
        kept={},  # the token is a shared secret, not a signature: it must not reach Kafka
        before=before,
        after=after,
    )
    assert all(RYZE_TOKEN.encode() not in value for _, value in record.headers)


async def test_events_bearer_accepted_token_not_stored(client: TestClient, sink: MemorySink):
    headers = {"content-type": "application/json", "authorization": f"Bearer {EVENTS_TOKEN}"}
    before = time.time()
    resp = await client.post("/v1/events", data=EVENT_BODY, headers=headers)
    after = time.time()
    assert resp.status == 200, await resp.text()
    record = only_record(sink)
    decoded = check_record(
        record,
        provider="events",
        body=EVENT_BODY,
        url=url_of(client, "/v1/events"),
        content_type="application/json",
        kept={},
        before=before,
        after=after,
    )
    assert all(EVENTS_TOKEN.encode() not in value for _, value in record.headers)
    assert [e.status for e in events.parse(decoded).events] == ["sent"]


async def test_events_standard_webhooks_signature_reverifies(client: TestClient, sink: MemorySink):
    headers = events.sign(EVENT_BODY, EVENTS_SECRET, "msg_unit_1", int(time.time()))
    before = time.time()
    resp = await client.post("/v1/events", data=EVENT_BODY, headers=headers)
    after = time.time()
    assert resp.status == 200, await resp.text()
    decoded = check_record(
        only_record(sink),
        provider="events",
        body=EVENT_BODY,
        url=url_of(client, "/v1/events"),
        content_type="application/json",
        kept={name: headers[name] for name in events.SIGNATURE_HEADERS},
        before=before,
        after=after,
    )
    events.verify(decoded, settings(events_token=None))


async def test_body_arriving_in_pieces_is_read_whole(client: TestClient, sink: MemorySink):
    """A chunked body sent slowly is still kept whole (not just its first piece)."""
    body = orjson.dumps({"pad": "x" * 3000, **orjson.loads(META_BODY)})
    headers = meta.sign("", body, META_SECRET)

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 500):
            yield body[start : start + 500]
            await asyncio.sleep(0.02)

    resp = await client.post("/webhooks/meta", data=pieces(), headers=headers)
    assert resp.status == 200, await resp.text()
    assert only_record(sink).value == body


# --- 401: bad or missing signature, nothing written -------------------------------------


async def test_twilio_bad_signature_401(client: TestClient, sink: MemorySink):
    path = "/webhooks/twilio"
    expected = twilio.sign(url_of(client, path), TWILIO_FORM, TWILIO_TOKEN)["x-twilio-signature"]
    wrong = twilio.sign(url_of(client, path), TWILIO_FORM, "not-the-token")
    resp = await client.post(path, data=TWILIO_FORM, headers=wrong)
    await json_error(resp, 401, forbidden=[expected])
    assert sink.records == []


async def test_twilio_tampered_body_401(client: TestClient, sink: MemorySink):
    path = "/webhooks/twilio"
    headers = twilio.sign(url_of(client, path), TWILIO_FORM, TWILIO_TOKEN)
    tampered = TWILIO_FORM.replace(b"delivered", b"undelivered")
    expected = twilio.sign(url_of(client, path), tampered, TWILIO_TOKEN)["x-twilio-signature"]
    resp = await client.post(path, data=tampered, headers=headers)
    await json_error(resp, 401, forbidden=[expected])
    assert sink.records == []


@pytest.mark.parametrize("provider", ["twilio", "meta", "ryze"])
async def test_missing_signature_401(client: TestClient, sink: MemorySink, provider: str):
    body = {"twilio": TWILIO_FORM, "meta": META_BODY, "ryze": RYZE_BODY}[provider]
    ctype = "application/x-www-form-urlencoded" if provider == "twilio" else "application/json"
    resp = await client.post(f"/webhooks/{provider}", data=body, headers={"content-type": ctype})
    await json_error(resp, 401)
    assert sink.records == []


async def test_meta_bad_signature_401(client: TestClient, sink: MemorySink):
    expected = meta.calculate_signature(META_SECRET, META_BODY)
    headers = meta.sign("", META_BODY, "wrong-secret")
    resp = await client.post("/webhooks/meta", data=META_BODY, headers=headers)
    await json_error(resp, 401, forbidden=[expected, expected.removeprefix("sha256=")])
    assert sink.records == []


async def test_ryze_wrong_token_401(client: TestClient, sink: MemorySink):
    headers = ryze.sign("", RYZE_BODY, "wrong-token")
    resp = await client.post("/webhooks/ryze", data=RYZE_BODY, headers=headers)
    await json_error(resp, 401)
    assert sink.records == []


async def test_events_wrong_bearer_401(client: TestClient, sink: MemorySink):
    for auth in ("Bearer wrong-token", f"Basic {EVENTS_TOKEN}", f"Bearer {API_TOKEN}", ""):
        headers = {"content-type": "application/json", "authorization": auth}
        resp = await client.post("/v1/events", data=EVENT_BODY, headers=headers)
        await json_error(resp, 401)
    assert sink.records == []


async def test_events_bad_standard_webhooks_signature_401(client: TestClient, sink: MemorySink):
    stamp = int(time.time())
    good = events.sign(EVENT_BODY, EVENTS_SECRET, "msg_unit_2", stamp)
    bad = events.sign(EVENT_BODY, "whsec_" + "QUJDREVGR0g=", "msg_unit_2", stamp)
    resp = await client.post("/v1/events", data=EVENT_BODY, headers=bad)
    await json_error(resp, 401, forbidden=[good["webhook-signature"].removeprefix("v1,")])
    old = events.sign(EVENT_BODY, EVENTS_SECRET, "msg_unit_3", stamp - 3600)
    resp = await client.post("/v1/events", data=EVENT_BODY, headers=old)
    await json_error(resp, 401)
    assert sink.records == []


# --- 400: signed, but not the provider's framing ---------------------------------------


async def test_meta_signed_invalid_json_400(client: TestClient, sink: MemorySink):
    body = b'{"object": "whatsapp_business_account", "entry": ['
    resp = await client.post("/webhooks/meta", data=body, headers=meta.sign("", body, META_SECRET))
    await json_error(resp, 400, forbidden=[meta.calculate_signature(META_SECRET, body)])
    assert sink.records == []


async def test_ryze_and_events_invalid_json_400(client: TestClient, sink: MemorySink):
    body = b"not json at all"
    resp = await client.post("/webhooks/ryze", data=body, headers=ryze.sign("", body, RYZE_TOKEN))
    await json_error(resp, 400)
    headers = {"content-type": "application/json", "authorization": f"Bearer {EVENTS_TOKEN}"}
    resp = await client.post("/v1/events", data=b"\xff\xfe{", headers=headers)
    await json_error(resp, 400)
    assert sink.records == []


# --- 413: too large -----------------------------------------------------------------------


@pytest.fixture
async def small_client(sink: MemorySink) -> AsyncIterator[TestClient]:
    c = await _client(settings(max_body_bytes=256), sink)
    try:
        yield c
    finally:
        await c.close()


async def test_too_large_with_content_length_413(small_client: TestClient, sink: MemorySink):
    body = orjson.dumps({"pad": "x" * 400})
    resp = await small_client.post(
        "/webhooks/meta", data=body, headers=meta.sign("", body, META_SECRET)
    )
    assert resp.request_info.headers.get("Content-Length") == str(len(body))
    await json_error(resp, 413)
    assert sink.records == []


async def test_too_large_chunked_413(small_client: TestClient, sink: MemorySink):
    body = orjson.dumps({"pad": "x" * 400})

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 100):
            yield body[start : start + 100]

    resp = await small_client.post(
        "/webhooks/meta", data=pieces(), headers=meta.sign("", body, META_SECRET)
    )
    assert "Content-Length" not in resp.request_info.headers
    assert resp.request_info.headers.get("Transfer-Encoding") == "chunked"
    await json_error(resp, 413)
    assert sink.records == []


async def test_exactly_the_limit_is_accepted(small_client: TestClient, sink: MemorySink):
    body = orjson.dumps({"pad": ""})
    body = orjson.dumps({"pad": "x" * (256 - len(body))})
    assert len(body) == 256
    resp = await small_client.post(
        "/webhooks/meta", data=body, headers=meta.sign("", body, META_SECRET)
    )
    assert resp.status == 200, await resp.text()
    assert only_record(sink).value == body


# --- 415, 404, 405 ------------------------------------------------------------------------


async def test_wrong_content_type_415(client: TestClient, sink: MemorySink):
    headers = {**meta.sign("", META_BODY, META_SECRET), "content-type": "text/plain"}
    resp = await client.post("/webhooks/meta", data=META_BODY, headers=headers)
    await json_error(resp, 415)
    path = "/webhooks/twilio"
    headers = {
        **twilio.sign(url_of(client, path), TWILIO_FORM, TWILIO_TOKEN),
        "content-type": "multipart/form-data; boundary=x",
    }
    resp = await client.post(path, data=TWILIO_FORM, headers=headers)
    await json_error(resp, 415)
    assert sink.records == []


async def test_unknown_provider_404(client: TestClient, sink: MemorySink):
    resp = await client.post(
        "/webhooks/nosuchprovider", data=b"{}", headers={"content-type": "application/json"}
    )
    doc = await json_error(resp, 404)
    assert "nosuchprovider" in doc["error"]
    resp = await client.get("/no/such/path")
    await json_error(resp, 404)
    assert sink.records == []


async def test_disabled_provider_404(sink: MemorySink):
    secrets = {k: v for k, v in SECRETS.items() if k not in ("RYZE_TOKEN", "META_APP_SECRET")}
    c = await _client(settings(secrets=secrets), sink)
    try:
        resp = await c.post(
            "/webhooks/ryze", data=RYZE_BODY, headers=ryze.sign("", RYZE_BODY, RYZE_TOKEN)
        )
        await json_error(resp, 404)
        resp = await c.post(
            "/webhooks/meta", data=META_BODY, headers=meta.sign("", META_BODY, META_SECRET)
        )
        await json_error(resp, 404)
        resp = await c.get(
            "/webhooks/meta",
            params={"hub.mode": "subscribe", "hub.challenge": "1", "hub.verify_token": "x"},
        )
        await json_error(resp, 404)
    finally:
        await c.close()
    assert sink.records == []


async def test_events_disabled_without_token_or_secret_404(sink: MemorySink):
    secrets = {k: v for k, v in SECRETS.items() if k != "EVENTS_WEBHOOK_SECRET"}
    c = await _client(settings(secrets=secrets, events_token=None), sink)
    try:
        headers = {"content-type": "application/json", "authorization": f"Bearer {EVENTS_TOKEN}"}
        resp = await c.post("/v1/events", data=EVENT_BODY, headers=headers)
        await json_error(resp, 404)
    finally:
        await c.close()
    assert sink.records == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/webhooks/twilio"),
        ("PUT", "/webhooks/twilio"),
        ("DELETE", "/webhooks/meta"),
        ("PUT", "/v1/events"),
        ("GET", "/v1/events"),
        ("POST", "/healthz"),
        ("POST", "/v1/messages/twilio:SM1"),
    ],
)
async def test_wrong_method_405(client: TestClient, sink: MemorySink, method: str, path: str):
    resp = await client.request(
        method, path, data=b"{}", headers={"content-type": "application/json"}
    )
    await json_error(resp, 405)
    allow = {m.strip() for m in resp.headers["Allow"].split(",")}
    assert allow and method not in allow
    assert sink.records == []


# --- 503: the sink (Kafka) is unavailable -------------------------------------------------


async def test_sink_unavailable_503_with_retry_after(client: TestClient, sink: MemorySink):
    sink.available = False
    path = "/webhooks/twilio"
    resp = await client.post(
        path, data=TWILIO_FORM, headers=twilio.sign(url_of(client, path), TWILIO_FORM, TWILIO_TOKEN)
    )
    await json_error(resp, 503)
    assert int(resp.headers["Retry-After"]) > 0
    resp = await client.post(
        "/webhooks/meta", data=META_BODY, headers=meta.sign("", META_BODY, META_SECRET)
    )
    await json_error(resp, 503)
    assert int(resp.headers["Retry-After"]) > 0
    resp = await client.get("/readyz")
    await json_error(resp, 503)
    assert int(resp.headers["Retry-After"]) > 0
    resp = await client.get("/healthz")  # alive, just not ready
    assert resp.status == 200
    assert sink.records == []
    # back again: the provider's retry succeeds
    sink.available = True
    resp = await client.get("/readyz")
    assert resp.status == 200
    resp = await client.post(
        "/webhooks/meta", data=META_BODY, headers=meta.sign("", META_BODY, META_SECRET)
    )
    assert resp.status == 200
    assert only_record(sink).value == META_BODY


async def test_bad_signature_is_401_even_when_sink_is_down(client: TestClient, sink: MemorySink):
    sink.available = False
    resp = await client.post(
        "/webhooks/meta", data=META_BODY, headers=meta.sign("", META_BODY, "wrong")
    )
    await json_error(resp, 401)


# --- health -------------------------------------------------------------------------------


async def test_healthz_and_readyz(client: TestClient):
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert (await resp.json())["status"] == "ok"
    resp = await client.get("/readyz")
    assert resp.status == 200
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert "msgstatus_gateway_requests_total" in await resp.text()


class SwitchableReadModel:
    """The read model's health check, switched by the test (no Redis here)."""

    def __init__(self) -> None:
        self.up = True

    async def ping(self) -> bool:
        return self.up


async def test_readyz_names_what_is_down_and_fails_only_for_kafka(sink: MemorySink):
    model = SwitchableReadModel()
    client = TestClient(TestServer(Gateway(settings(), sink, model).app()))  # type: ignore[arg-type]
    await client.start_server()
    try:
        resp = await client.get("/readyz")
        assert resp.status == 200
        assert await resp.json() == {
            "status": "ready",
            "dependencies": {"kafka": "up", "redis": "up"},
            "down": [],
        }
        model.up = False  # only reads are affected: webhooks are still taken
        resp = await client.get("/readyz")
        assert resp.status == 200
        body = await resp.json()
        assert body["dependencies"] == {"kafka": "up", "redis": "down"}
        assert body["down"] == ["redis"]
        sink.available = False
        resp = await client.get("/readyz")
        assert resp.status == 503 and int(resp.headers["Retry-After"]) > 0
        body = await resp.json()
        assert body["error"] == "Kafka is unreachable" and body["down"] == ["kafka", "redis"]
    finally:
        await client.close()
        dependencies.DEPENDENCY_UP.remove("redis")  # the gauge is process-wide
    # without a read model Redis is no dependency of the gateway
    client = await _client(settings(), MemorySink())
    try:
        assert (await (await client.get("/readyz")).json())["dependencies"] == {"kafka": "up"}
    finally:
        await client.close()


async def test_metrics_report_whether_kafka_is_reachable(client: TestClient, sink: MemorySink):
    line = 'msgstatus_dependency_up{dependency="kafka"}'
    assert f"{line} 1.0" in await (await client.get("/metrics")).text()
    sink.available = False
    text = await (await client.get("/metrics")).text()
    assert f"{line} 0.0" in text
    assert 'dependency="redis"' not in text  # no read model configured: not a dependency


# --- Meta verification handshake ----------------------------------------------------------


async def test_meta_handshake_echoes_challenge(client: TestClient, sink: MemorySink):
    params = {
        "hub.mode": "subscribe",
        "hub.challenge": "1158201444",
        "hub.verify_token": META_VERIFY,
    }
    resp = await client.get("/webhooks/meta", params=params)
    assert resp.status == 200
    assert await resp.text() == "1158201444"
    assert sink.records == []


@pytest.mark.parametrize(
    "params",
    [
        {"hub.mode": "subscribe", "hub.challenge": "42", "hub.verify_token": "wrong"},
        {"hub.mode": "subscribe", "hub.challenge": "42"},
        {"hub.mode": "unsubscribe", "hub.challenge": "42", "hub.verify_token": META_VERIFY},
        {"hub.mode": "subscribe", "hub.verify_token": META_VERIFY},
    ],
)
async def test_meta_handshake_refused_403(client: TestClient, params: dict[str, str]):
    resp = await client.get("/webhooks/meta", params=params)
    doc = await json_error(resp, 403)
    assert "42" not in doc["error"]


# --- Twilio behind a proxy ---------------------------------------------------------------


@pytest.fixture
async def proxied_client(sink: MemorySink) -> AsyncIterator[TestClient]:
    c = await _client(settings(public_url="https://hooks.example.com/"), sink)
    try:
        yield c
    finally:
        await c.close()


async def test_twilio_behind_proxy_signed_for_public_url(
    proxied_client: TestClient, sink: MemorySink
):
    path = "/webhooks/twilio?account=AC1&cb=https%3A%2F%2Fx.example%2Fa%20b&to=%2B1555"
    public = "https://hooks.example.com" + path
    headers = twilio.sign(public, TWILIO_FORM, TWILIO_TOKEN)
    # encoded=True: send the query exactly as signed (yarl would requote %3A and %2F)
    exact = URL(str(proxied_client.server.make_url("/")).rstrip("/") + path, encoded=True)
    before = time.time()
    resp = await proxied_client.session.post(exact, data=TWILIO_FORM, headers=headers)
    after = time.time()
    assert resp.status == 200, await resp.text()
    decoded = check_record(
        only_record(sink),
        provider="twilio",
        body=TWILIO_FORM,
        url=public,
        content_type="application/x-www-form-urlencoded",
        kept={"x-twilio-signature": headers["x-twilio-signature"]},
        before=before,
        after=after,
    )
    twilio.verify(decoded, settings())


async def test_twilio_behind_proxy_signed_for_internal_url_401(
    proxied_client: TestClient, sink: MemorySink
):
    path = "/webhooks/twilio?account=AC1"
    internal = url_of(proxied_client, path)
    headers = twilio.sign(internal, TWILIO_FORM, TWILIO_TOKEN)
    expected = twilio.sign("https://hooks.example.com" + path, TWILIO_FORM, TWILIO_TOKEN)
    resp = await proxied_client.post(path, data=TWILIO_FORM, headers=headers)
    await json_error(resp, 401, forbidden=[expected["x-twilio-signature"]])
    assert sink.records == []


async def test_twilio_signed_without_query_string_401(proxied_client: TestClient, sink: MemorySink):
    """The query string is part of what Twilio signs; dropping it must not pass."""
    headers = twilio.sign("https://hooks.example.com/webhooks/twilio", TWILIO_FORM, TWILIO_TOKEN)
    resp = await proxied_client.post(
        "/webhooks/twilio?account=AC1", data=TWILIO_FORM, headers=headers
    )
    await json_error(resp, 401)
    assert sink.records == []


# --- query API ----------------------------------------------------------------------------


async def test_message_query_needs_bearer_401(client: TestClient):
    resp = await client.get("/v1/messages/twilio:SM123")
    await json_error(resp, 401)
    resp = await client.get("/v1/messages/twilio:SM123", headers={"Authorization": "Bearer wrong"})
    await json_error(resp, 401)


async def test_twilio_without_proxy_keeps_percent_encoded_query(
    client: TestClient, sink: MemorySink
):
    path = "/webhooks/twilio?cb=https%3A%2F%2Fx.example%2Fa%20b&to=%2B1555"
    exact = URL(str(client.server.make_url("/")).rstrip("/") + path, encoded=True)
    headers = twilio.sign(str(exact), TWILIO_FORM, TWILIO_TOKEN)
    resp = await client.session.post(exact, data=TWILIO_FORM, headers=headers)
    assert resp.status == 200, await resp.text()
    decoded = raw.decode(only_record(sink).value, only_record(sink).headers)
    assert decoded.url == str(exact)
    twilio.verify(decoded, settings())


# --- form framing check: the same verdict as parse_qsl(strict_parsing=True) -------------

_FORM_PIECES = st.sampled_from(["a", "=", "&", "%", "%2", "%ZZ", "%2B", "+", "é", " ", ";", ""])


def _parse_qsl_accepts(body: bytes) -> bool:
    try:
        urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        return False
    return True


@given(
    st.one_of(
        st.lists(_FORM_PIECES, max_size=12).map(lambda parts: "".join(parts).encode()),
        st.binary(max_size=24),
    )
)
@hypothesis_settings(max_examples=500)
def test_is_form_agrees_with_strict_parse_qsl(body: bytes):
    assert is_form(body) == _parse_qsl_accepts(body)
