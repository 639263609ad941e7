"""The gateway honours what a provider module declares (issue 16), with no provider name
in the gateway: its own success answer (Jasmin's `ACK/Jasmin`), GET receipts whose query
string is the payload (Kannel, Vonage SMS), query-string credentials that are checked but
never stored, and `RetryLater` (503 + Retry-After) for a callback the provider will send
again signed. A real aiohttp server; the only fake is the sink behind it.
"""

from __future__ import annotations

import hashlib
import time
import types
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from processors import providers
from processors.config import Settings
from processors.ingest.gateway import Gateway
from processors.ingest.producer import MemorySink
from processors.kafka import raw
from processors.providers import smpp, vonage, vonage_messages

SMPP_TOKEN = "smpp-unit-token-5c1e"
VONAGE_SECRET = "vonage-unit-signature-secret-77aa"
PREFIX = "tdecl."
FORM = "application/x-www-form-urlencoded"


def settings(**extra: str) -> Settings:
    secrets = {
        "SMPP_TOKEN": SMPP_TOKEN,
        "VONAGE_MESSAGES_SIGNATURE_SECRET": VONAGE_SECRET,
        "VONAGE_SIGNATURE_SECRET": VONAGE_SECRET,
        "VONAGE_SIGNATURE_METHOD": "sha256",
        **extra,
    }
    return Settings(topic_prefix=PREFIX, secrets=secrets)


@pytest.fixture
def sink() -> MemorySink:
    return MemorySink()


@pytest.fixture
async def client(sink: MemorySink) -> AsyncIterator[TestClient]:
    c = TestClient(TestServer(Gateway(settings(), sink).app()))
    await c.start_server()
    try:
        yield c
    finally:
        await c.close()


async def raw_get(client: TestClient, path_and_query: str) -> ClientResponse:
    """GET exactly these bytes: yarl would otherwise normalize `%2D`, `%3A`, ... and the
    test could not tell whether the gateway kept the query as sent."""
    url = URL(str(client.make_url("/")).rstrip("/") + path_and_query, encoded=True)
    return await client.session.get(url)


def headers_of(record: raw.RawRecord) -> dict[str, bytes]:
    return dict(record.headers)


# --- a provider's own success answer --------------------------------------------------------


async def test_jasmin_gets_exactly_ack_jasmin(client: TestClient, sink: MemorySink) -> None:
    """Jasmin re-sends a receipt until the body is exactly `ACK/Jasmin` (its docs)."""
    body = b"id=16fd2706-8baf-433b-82eb-8c7fada847da&message_status=ESME_ROK&level=1"
    resp = await client.post(
        "/webhooks/smpp", data=body, headers={"content-type": FORM, "token": SMPP_TOKEN}
    )
    assert resp.status == 200
    assert await resp.read() == b"ACK/Jasmin"
    assert resp.headers["Content-Type"].split(";")[0] == "text/plain"
    (record,) = sink.records
    assert record.value == body


async def test_errors_stay_json_for_a_provider_with_its_own_answer(client: TestClient) -> None:
    resp = await client.post("/webhooks/smpp", data=b"id=1", headers={"content-type": FORM})
    assert resp.status == 401
    assert resp.content_type == "application/json"
    assert (await resp.json())["error"]


async def test_other_providers_keep_the_json_answer(sink: MemorySink) -> None:
    config = settings(TRACKSEND_TOKEN="tt")
    c = TestClient(TestServer(Gateway(config, sink).app()))
    await c.start_server()
    try:
        resp = await c.post(
            "/webhooks/tracksend",
            data=b'{"message_id": "m1", "status": "SENT"}',
            headers={"content-type": "application/json", "token": "tt"},
        )
        assert resp.status == 200
        assert await resp.json() == {"status": "accepted"}
    finally:
        await c.close()


# --- GET receipts: the query string is the payload --------------------------------------------


async def test_kannel_get_receipt_is_stored_byte_for_byte(
    client: TestClient, sink: MemorySink
) -> None:
    """Kannel fetches its dlr-url with GET; the raw query (percent-encoding as sent, token
    removed) becomes the record's body, so a replay re-parses the same bytes."""
    receipt = (
        "id=kn%2D42&type=16&smsc=smsc-eu1&answer=NACK%2F0x0000000b%2FInvalid+Destination+Address"
    )
    resp = await raw_get(client, f"/webhooks/smpp?{receipt}&token={SMPP_TOKEN}")
    assert resp.status == 200, await resp.text()
    assert await resp.read() == b"ACK/Jasmin"
    (record,) = sink.records
    assert record.topic == PREFIX + "raw.smpp"
    assert record.value == receipt.encode()
    assert record.key == hashlib.blake2b(record.value, digest_size=12).hexdigest().encode()
    headers = headers_of(record)
    assert headers[raw.H_METHOD] == b"GET"
    assert SMPP_TOKEN.encode() not in headers[raw.H_URL]
    assert headers[raw.H_URL].endswith(f"/webhooks/smpp?{receipt}".encode())
    assert all(SMPP_TOKEN.encode() not in value for _, value in record.headers)
    decoded = raw.decode(record.value, record.headers)
    assert decoded.method == "GET"
    (event,) = smpp.parse(decoded).events
    assert (event.provider_message_id, event.status, event.provider_status) == (
        "kn-42",
        "rejected",
        "16",
    )
    assert event.error is not None and event.error.category == "invalid_number"


async def test_get_receipt_needs_credentials(client: TestClient, sink: MemorySink) -> None:
    resp = await client.get("/webhooks/smpp?id=kn-1&type=1")
    assert resp.status == 401
    resp = await client.get("/webhooks/smpp?id=kn-1&type=1&token=wrong")
    assert resp.status == 401
    resp = await client.get("/webhooks/smpp?id=kn-1&type=1", headers={"token": SMPP_TOKEN})
    assert resp.status == 200
    assert len(sink.records) == 1


@pytest.mark.parametrize("query", ["", f"?token={SMPP_TOKEN}"])
async def test_get_receipt_without_parameters_is_400(
    client: TestClient, sink: MemorySink, query: str
) -> None:
    resp = await client.get("/webhooks/smpp" + query, headers={"token": SMPP_TOKEN})
    assert resp.status == 400
    assert resp.content_type == "application/json"
    assert sink.records == []


async def test_post_keeps_its_body_and_drops_a_url_token(
    client: TestClient, sink: MemorySink
) -> None:
    body = b"id=kn-7&type=8"
    resp = await client.post(
        f"/webhooks/smpp?tenant=acme&token={SMPP_TOKEN}", data=body, headers={"content-type": FORM}
    )
    assert resp.status == 200
    (record,) = sink.records
    assert record.value == body
    url = headers_of(record)[raw.H_URL]
    assert url.endswith(b"/webhooks/smpp?tenant=acme") and SMPP_TOKEN.encode() not in url


async def test_get_for_a_post_only_provider_is_405(sink: MemorySink) -> None:
    config = settings(TRACKSEND_TOKEN="tt")
    c = TestClient(TestServer(Gateway(config, sink).app()))
    await c.start_server()
    try:
        resp = await c.get("/webhooks/tracksend?message_id=m1&status=SENT&token=tt")
        assert resp.status == 405
        assert resp.headers["Allow"] == "POST"
        assert resp.content_type == "application/json"
        resp = await c.get("/webhooks/nosuchprovider?a=1")
        assert resp.status == 404
    finally:
        await c.close()
    assert sink.records == []


async def test_vonage_sms_get_receipt_signed(client: TestClient, sink: MemorySink) -> None:
    """Vonage SMS DLRs are commonly configured as GET; `sig` covers the query params."""
    unsigned = urlencode(
        [
            ("msisdn", "447700900001"),
            ("to", "AcmeInc"),
            ("network-code", "23410"),
            ("messageId", "0A0000001234567C"),
            ("status", "delivered"),
            ("scts", "2604281431"),
            ("err-code", "0"),
            ("api-key", "abcd1234"),
            ("message-timestamp", "2026-04-28 14:31:02"),
            ("timestamp", str(int(time.time()))),  # signed: inside the replay window
            ("nonce", "9f1e2d3c-4b5a-4698-8a7b-6c5d4e3f2a10"),
        ]
    ).encode()
    _, signed = vonage.sign("", unsigned, VONAGE_SECRET, "sha256")
    resp = await raw_get(client, "/webhooks/vonage?" + signed.decode())
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"status": "accepted"}
    (record,) = sink.records
    assert record.value == signed
    decoded = raw.decode(record.value, record.headers)
    vonage.verify(decoded, settings())  # still verifies from Kafka alone
    (event,) = vonage.parse(decoded).events
    assert (event.provider_message_id, event.status) == ("0A0000001234567C", "delivered")
    tampered = signed.replace(b"delivered", b"rejected")
    resp = await raw_get(client, "/webhooks/vonage?" + tampered.decode())
    assert resp.status == 401
    assert len(sink.records) == 1


# --- RetryLater: not signed yet, the provider resends it signed ---------------------------


async def test_unsigned_vonage_messages_callback_is_503(
    client: TestClient, sink: MemorySink
) -> None:
    body = b'{"message_uuid": "u-503", "status": "delivered", "channel": "sms"}'
    resp = await client.post(
        "/webhooks/vonage-messages", data=body, headers={"content-type": "application/json"}
    )
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "5"
    assert resp.content_type == "application/json"
    assert sink.records == []
    forged = vonage_messages.sign(body, VONAGE_SECRET + "x")
    resp = await client.post("/webhooks/vonage-messages", data=body, headers=forged)
    assert resp.status == 401
    assert sink.records == []
    resp = await client.post(
        "/webhooks/vonage-messages", data=body, headers=vonage_messages.sign(body, VONAGE_SECRET)
    )
    assert resp.status == 200
    (record,) = sink.records
    assert record.value == body


# --- the registry refuses a declaration the gateway could not use --------------------------


@pytest.mark.parametrize(
    ("attribute", "value"),
    [
        ("HTTP_METHODS", ("PUT",)),
        ("HTTP_METHODS", ()),
        ("HTTP_METHODS", "GET"),
        ("SUCCESS_ANSWER", ("ACK", "text/plain")),
        ("SUCCESS_ANSWER", (b"ACK",)),
        ("QUERY_CREDENTIALS", "token"),
        ("QUERY_CREDENTIALS", ("",)),
    ],
)
def test_registry_refuses_unusable_declarations(attribute: str, value: object) -> None:
    module = types.ModuleType("processors.providers.fake")
    for name in ("CONTENT_TYPES", "FRAMING", "SIGNATURE_HEADERS", "COVERAGE", "enabled"):
        setattr(module, name, getattr(smpp, name))
    module.verify, module.parse = smpp.verify, smpp.parse  # type: ignore[attr-defined]
    module.NAME = "fake"  # type: ignore[attr-defined]
    setattr(module, attribute, value)
    with pytest.raises(TypeError, match=attribute):
        providers._collect({"fake": module})
    assert providers._collect({"smpp": smpp})["smpp"] is smpp
