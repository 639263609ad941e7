"""The HTTP gateway: verify, keep the exact bytes in Kafka, answer (DESIGN.md section 7).

A request reaches the raw topic only through `_verified()`, and the answer is 200 only
after Kafka acknowledged the write. Every error is JSON with a clear message; neither the
expected signature nor the body is ever echoed back or logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from processors import dependencies, providers
from processors.config import Settings
from processors.ingest import raw
from processors.ingest.producer import KafkaUnavailable, RawSink
from processors.providers import query_string, ses
from processors.providers.base import (
    FramingError,
    Provider,
    RetryLater,
    SignatureError,
    WebhookRequest,
    constant_time_equal,
)
from processors.store.readmodel import ReadModel, ReadModelUnavailable

log = logging.getLogger(__name__)

WEBHOOKS = Counter(
    "msgstatus_gateway_requests_total",
    "Webhook requests by provider and answer",
    ["provider", "code"],
)
LATENCY = Histogram(
    "msgstatus_gateway_latency_seconds",
    "Time from request to answer, Kafka acknowledgement included",
    ["provider"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
RETRY_AFTER_SECONDS = "5"


class _Metrics:
    """The labelled children of WEBHOOKS and LATENCY, looked up once per label set:
    `.labels()` builds and checks a key on every call (two per webhook)."""

    def __init__(self) -> None:
        self._counters: dict[tuple[str, int], Any] = {}
        self._latencies: dict[str, Any] = {}

    def record(self, label: str, status: int, seconds: float) -> None:
        counter = self._counters.get((label, status))
        if counter is None:
            counter = self._counters[label, status] = WEBHOOKS.labels(label, str(status))
        counter.inc()
        latency = self._latencies.get(label)
        if latency is None:
            latency = self._latencies[label] = LATENCY.labels(label)
        latency.observe(seconds)


METRICS = _Metrics()


def error(status: int, message: str, **extra: str) -> web.Response:
    body = orjson.dumps({"error": message, "status": status})
    return web.Response(
        status=status, body=body, content_type="application/json", headers=extra or None
    )


def ok(payload: dict) -> web.Response:
    return web.Response(body=orjson.dumps(payload), content_type="application/json")


@web.middleware
async def json_errors(request: web.Request, handler: Callable[..., Awaitable[web.StreamResponse]]):
    """aiohttp answers 404/405 in plain text; our contract is JSON everywhere."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else {}
        return error(exc.status, exc.reason, **headers)


def public_url(request: web.Request, settings: Settings) -> str:
    """The URL the provider called; behind a proxy only MSGSTATUS_PUBLIC_URL knows it."""
    if settings.public_url:
        # raw_path_qs: the path and query exactly as sent (percent-encoding kept), since
        # that is what the provider signed; path_qs would decode %20, %2B, %2F, ...
        return settings.public_url.rstrip("/") + request.rel_url.raw_path_qs
    return str(request.url)


def is_form(body: bytes) -> bool:
    """What `parse_qsl(strict_parsing=True)` accepts, without decoding every field: UTF-8
    text whose `&`-separated fields each hold a `=` (its unquoting never fails).

    The gateway only needs the yes/no; parsing the form again after the provider's
    verification did was ~6 % of its CPU per webhook.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return not text or all("=" in field for field in text.split("&"))


def framing_ok(provider: Provider, body: bytes, content_type: str) -> str | None:
    """None when the body decodes as the framing its content type declares, else why not.

    The declared content type wins over the provider's usual framing: Twilio's JSON
    webhooks (application/json, bound by bodySHA256) are JSON, not a form.
    """
    if content_type == "application/json" or content_type.endswith("+json"):
        form = False
    elif content_type == "application/x-www-form-urlencoded":
        form = True
    else:
        form = provider.FRAMING == "form"
    if form:
        if not is_form(body):
            return "body is not a valid application/x-www-form-urlencoded form"
        return None
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return "body is not valid JSON"
    return None


async def read_limited(request: web.Request, limit: int) -> bytes | None:
    """The whole body, or None as soon as it exceeds `limit` bytes.

    `StreamReader.read(n)` returns what is buffered (one TCP segment or chunk), not n
    bytes, so a body arriving in pieces must be read in a loop until EOF.
    """
    body = bytearray()
    while True:
        piece = await request.content.read(limit + 1 - len(body))
        if not piece:
            return bytes(body)
        body += piece
        if len(body) > limit:
            return None


class Gateway:
    def __init__(self, settings: Settings, sink: RawSink, read_model: ReadModel | None = None):
        self.settings = settings
        self.sink = sink
        self.read_model = read_model
        self._enabled: dict[str, bool] = {}  # enabled() depends on the settings only

    def app(self) -> web.Application:
        app = web.Application(
            middlewares=[json_errors], client_max_size=self.settings.max_body_bytes + 1
        )
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/webhooks/meta", self.meta_handshake)
        app.router.add_post("/webhooks/{provider}", self.webhook)
        # receipts sent as a query string, for providers whose HTTP_METHODS include GET
        app.router.add_get("/webhooks/{provider}", self.webhook, allow_head=False)
        app.router.add_post("/v1/events", self.events)
        app.router.add_get("/v1/messages/{message_key}", self.message)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        return ok({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        """503 only while Kafka is unreachable (webhooks cannot be kept); the body names
        every dependency that is down, Redis included (then only reads are affected)."""
        up = await dependencies.check(self._dependency_probes())
        state = {
            "dependencies": {k: "up" if v else "down" for k, v in up.items()},
            "down": [k for k, v in up.items() if not v],
        }
        if up[dependencies.KAFKA]:
            return ok({"status": "ready", **state})
        body = orjson.dumps({"error": "Kafka is unreachable", "status": 503, **state})
        headers = {"Retry-After": RETRY_AFTER_SECONDS}
        return web.Response(status=503, body=body, content_type="application/json", headers=headers)

    async def metrics(self, request: web.Request) -> web.Response:
        await dependencies.check(self._dependency_probes())
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    def _dependency_probes(self) -> dict[str, dependencies.Probe]:
        probes = {dependencies.KAFKA: self.sink.ready}
        if self.read_model is not None:
            probes[dependencies.REDIS] = self.read_model.ping
        return probes

    async def meta_handshake(self, request: web.Request) -> web.Response:
        meta = providers.get("meta")
        if meta is None or not meta.enabled(self.settings):
            return error(404, "provider 'meta' is not enabled")
        challenge = meta.handshake(request.query, self.settings)
        if challenge is None:
            return error(403, "hub.verify_token does not match")
        return web.Response(text=challenge)

    async def webhook(self, request: web.Request) -> web.Response:
        return await self._ingest(request, request.match_info["provider"])

    async def events(self, request: web.Request) -> web.Response:
        return await self._ingest(request, "events")

    async def _ingest(self, request: web.Request, name: str) -> web.Response:
        started = time.perf_counter()
        provider = providers.get(name)
        response = await self._answer(request, name, provider)
        label = name if provider is not None else "unknown"
        METRICS.record(label, response.status, time.perf_counter() - started)
        return response

    def _is_enabled(self, name: str, provider: Provider) -> bool:
        enabled = self._enabled.get(name)
        if enabled is None:
            enabled = self._enabled[name] = provider.enabled(self.settings)
        return enabled

    async def _answer(
        self, request: web.Request, name: str, provider: Provider | None
    ) -> web.Response:
        if provider is None:
            return error(404, f"unknown provider {name!r}")
        if not self._is_enabled(name, provider):
            return error(404, f"provider {name!r} is not enabled (its secret is not configured)")
        methods = getattr(provider, "HTTP_METHODS", ("POST",))
        if request.method not in methods:
            return error(
                405, f"{name} receipts are not sent as {request.method}", Allow=", ".join(methods)
            )
        payload = await self._payload(request, provider)
        if isinstance(payload, web.Response):
            return payload
        body, content_type = payload
        webhook = WebhookRequest(
            provider=name,
            method=request.method,
            url=public_url(request, self.settings),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            received_at=time.time(),
        )
        verified = self._verified(provider, webhook)
        if isinstance(verified, web.Response):
            return verified
        hidden = getattr(provider, "QUERY_CREDENTIALS", ())
        if hidden:  # a `?token=` secret is checked, never stored
            webhook = query_string.without_credentials(webhook, hidden)
            body = webhook.body
            if not body and webhook.method == "GET":
                return error(400, "GET receipt without parameters besides its token")
        problem = framing_ok(provider, body, content_type)
        if problem:
            return error(400, problem)
        record = raw.encode(self.settings.topic(f"raw.{name}"), webhook, provider.SIGNATURE_HEADERS)
        try:
            await self.sink.publish(record)
        except KafkaUnavailable as exc:
            log.warning("answering 503 to %s: %s", name, exc)
            return error(
                503,
                "event store unavailable, retry later",
                **{"Retry-After": RETRY_AFTER_SECONDS},
            )
        # SES via SNS: a verified, stored SubscriptionConfirmation is confirmed by a GET of
        # its SubscribeURL (allow-listed SNS hosts only, 5 s timeout), scheduled in the
        # background so the answer is not delayed; MSGSTATUS_SES_AUTO_CONFIRM=0 disables it.
        if name == ses.NAME:
            ses.schedule_confirmation(webhook, self.settings)
        answer = getattr(provider, "SUCCESS_ANSWER", None)  # e.g. Jasmin wants `ACK/Jasmin`
        if answer is not None:
            return web.Response(body=answer[0], content_type=answer[1])
        return ok({"status": "accepted"})

    async def _payload(
        self, request: web.Request, provider: Provider
    ) -> tuple[bytes, str] | web.Response:
        """(body, content type) of a webhook; a GET receipt's body is its raw query string
        (byte for byte, so a replay re-parses it), framed as a form."""
        limit = self.settings.max_body_bytes
        if request.method == "GET":
            query = request.rel_url.raw_query_string.encode()
            if not query:
                return error(400, "GET receipt without a query string")
            if len(query) > limit:
                return error(413, f"query string larger than {limit} bytes")
            return query, "application/x-www-form-urlencoded"
        if request.content_length is not None and request.content_length > limit:
            return error(413, f"body larger than {limit} bytes")
        content_type = request.content_type.lower()
        if content_type not in provider.CONTENT_TYPES:
            return error(
                415,
                f"content type {content_type or '(none)'!r} not accepted; "
                f"expected one of {', '.join(provider.CONTENT_TYPES)}",
            )
        body = await read_limited(request, limit)
        if body is None:
            return error(413, f"body larger than {limit} bytes")
        return body, content_type

    def _verified(
        self, provider: Provider, webhook: WebhookRequest
    ) -> WebhookRequest | web.Response:
        try:
            provider.verify(webhook, self.settings)
        except RetryLater as exc:  # e.g. Vonage's unsigned callback, retried signed on 5xx
            return error(503, f"not signed: {exc}", **{"Retry-After": RETRY_AFTER_SECONDS})
        except SignatureError as exc:
            return error(401, f"signature check failed: {exc}")
        except FramingError as exc:
            return error(400, str(exc))
        return webhook

    async def message(self, request: web.Request) -> web.Response:
        token = self.settings.api_token
        auth = request.headers.get("Authorization", "")
        if not token:
            return error(404, "the query API is disabled: set MSGSTATUS_API_TOKEN")
        if not auth.startswith("Bearer ") or not constant_time_equal(token, auth[7:].strip()):
            return error(401, "missing or wrong Bearer token")
        if self.read_model is None:
            return error(503, "read model not configured")
        key = request.match_info["message_key"]
        try:
            doc = await self.read_model.get(key)
        except ReadModelUnavailable as exc:
            return error(503, str(exc), **{"Retry-After": RETRY_AFTER_SECONDS})
        if doc is None:
            return error(404, f"unknown message {key!r}")
        return ok(doc)


async def serve(settings: Settings, sink: RawSink, read_model: ReadModel | None) -> None:
    """Run until cancelled (the CLI cancels on SIGINT/SIGTERM)."""
    runner = web.AppRunner(Gateway(settings, sink, read_model).app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.http_host, settings.http_port, backlog=1024)
    await site.start()
    log.warning("gateway listening on http://%s:%s", settings.http_host, settings.http_port)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
