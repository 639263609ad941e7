"""The HTTP gateway: verify, keep the exact bytes in Kafka, answer (DESIGN.md section 7).

A request reaches the raw topic only through `_verified()`, and the answer is 200 only
after Kafka acknowledged the write. Every error is JSON with a clear message; neither the
expected signature nor the body is ever echoed back or logged.

The gateway faces the internet (docs/security.md): what an unauthenticated request may
cost is bounded before any signature work (body limits per provider, form field counts,
envelope sizes, read timeouts), what an authenticated one may put in a raw topic is
bounded after it (JSON depth, a body that fits one Kafka record with its envelope), and
an unexpected exception becomes a JSON answer and one log line, never a traceback.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from processors import dependencies, providers
from processors.config import Settings
from processors.ingest.producer import MAX_REQUEST_BYTES, KafkaUnavailable, RawSink
from processors.kafka import raw
from processors.kafka.topics import raw_topic
from processors.providers import limits, query_string, replay
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
FORM_TYPES = frozenset({"application/x-www-form-urlencoded"})
LINGERING_SECONDS = 2.0


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


def accepted(provider: Provider, duplicate: bool = False) -> web.Response:
    """The 200: the provider's own success body where it needs one (Jasmin retries every
    receipt until it reads exactly `ACK/Jasmin`), else JSON."""
    answer = getattr(provider, "SUCCESS_ANSWER", None)
    if answer is not None:
        return web.Response(body=answer[0], content_type=answer[1])
    if duplicate:
        return ok({"status": "accepted", "duplicate": True})
    return ok({"status": "accepted"})


def not_found(name: str) -> web.Response:
    """One answer for unknown and for disabled endpoints: a prober must not learn which
    providers are configured."""
    return error(404, f"no webhook endpoint {name[:64]!r} here")


def one_line(exc: BaseException | None) -> str:
    """`Type: message` on one bounded line, for logs that must not carry tracebacks."""
    if exc is None:
        return "(no exception)"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


@web.middleware
async def json_errors(request: web.Request, handler: Callable[..., Awaitable[web.StreamResponse]]):
    """aiohttp answers 404/405 in plain text; our contract is JSON everywhere. Anything
    unexpected becomes a JSON answer and one log line: a request must never be able to
    fill the log with tracebacks."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else {}
        return error(exc.status, exc.reason, **headers)
    except asyncio.CancelledError:
        raise
    except (ConnectionError, HttpProcessingError) as exc:  # the client broke the request
        log.info("%s %s: bad or broken request: %s", request.method, request.path, one_line(exc))
        return error(400, "the request could not be read")
    except Exception as exc:
        log.error("%s %s answered 500: %s", request.method, request.path, one_line(exc))
        return error(500, "internal error; the request was not stored")


class OneLineServerLog(logging.LoggerAdapter):
    """aiohttp's server logger without tracebacks: it logs one (with the request's bytes)
    for every malformed request it answers 400 itself; from the internet those are
    routine, so one line at INFO."""

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else None
        self.info("%s: %s", str(msg) % args if args else msg, one_line(exc))


class BadRequest(Exception):
    """Refuse the request with this status and reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def public_url(request: web.Request, settings: Settings) -> str:
    """The URL the provider called; behind a proxy only MSGSTATUS_PUBLIC_URL knows it.

    BadRequest (400) when it is not a URL: a Host header that is no host name, or a
    request target that is not ASCII (what a provider signs is percent-encoded)."""
    if settings.public_url:
        # raw_path_qs: the path and query exactly as sent (percent-encoding kept), since
        # that is what the provider signed; path_qs would decode %20, %2B, %2F, ...
        url = settings.public_url.rstrip("/") + request.rel_url.raw_path_qs
    else:
        try:
            url = str(request.url)
        except (ValueError, UnicodeError):  # yarl: bad port, not IDNA-encodable host
            raise BadRequest(400, "the Host header is not a valid host name") from None
    if not (url.isascii() and url.isprintable()) or " " in url:
        raise BadRequest(400, "the request URL must be ASCII without spaces (percent-encode it)")
    return url


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


def is_form_type(provider: Provider, content_type: str) -> bool:
    """Whether the body is read as a form (the declared type wins, as in framing_ok)."""
    if content_type == "application/json" or content_type.endswith("+json"):
        return False
    if content_type in FORM_TYPES:
        return True
    return provider.FRAMING == "form"


def framing_ok(provider: Provider, body: bytes, content_type: str) -> str | None:
    """None when the body decodes as the framing its content type declares, else why not.

    The declared content type wins over the provider's usual framing: Twilio's JSON
    webhooks (application/json, bound by bodySHA256) are JSON, not a form.
    """
    if is_form_type(provider, content_type):
        if not is_form(body):
            return "body is not a valid application/x-www-form-urlencoded form"
        return None
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return "body is not valid JSON"
    return None


async def read_limited(request: web.Request, limit: int, timeout: float) -> bytes | None:
    """The whole body, or None as soon as it exceeds `limit` bytes; BadRequest (408) when
    it has not arrived `timeout` seconds after the request head.

    `StreamReader.read(n)` returns what is buffered (one TCP segment or chunk), not n
    bytes, so a body arriving in pieces must be read in a loop until EOF.
    """
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            while True:
                piece = await request.content.read(limit + 1 - len(body))
                if not piece:
                    return bytes(body)
                body += piece
                if len(body) > limit:
                    return None
    except TimeoutError:
        raise BadRequest(408, f"request body not received within {timeout:g} s") from None


def json_problem(body: bytes) -> str | None:
    """Why an accepted JSON body must not reach a raw topic, or None."""
    if limits.json_too_deep(body, limits.MAX_JSON_DEPTH):
        return f"JSON nested deeper than {limits.MAX_JSON_DEPTH} levels"
    return None


class Gateway:
    def __init__(self, settings: Settings, sink: RawSink, read_model: ReadModel | None = None):
        self.settings = settings
        self.sink = sink
        self.read_model = read_model
        self._enabled: dict[str, bool] = {}  # enabled() depends on the settings only
        self._limits: dict[str, int] = {}
        self._seen: dict[str, replay.SeenCache] = {}  # per provider with replay_key()

    def body_limit(self, name: str, provider: Provider) -> int:
        """The largest body `name` accepts: MSGSTATUS_MAX_BODY_BYTES, capped so that the
        raw record (body + envelope) fits the producer's request limit, and smaller for
        providers that declare a MAX_BODY_BYTES: those whose callbacks are one small form
        each, so an unsigned request costs little before its signature is checked (a 1 MiB
        form with a wrong signature cost Plivo 184 ms of parsing and hashing)."""
        limit = self._limits.get(name)
        if limit is None:
            ceiling = raw.body_ceiling(provider.SIGNATURE_HEADERS, MAX_REQUEST_BYTES)
            own = getattr(provider, "MAX_BODY_BYTES", math.inf)
            limit = self._limits[name] = int(min(self.settings.max_body_bytes, ceiling, own))
        return limit

    def general_body_limit(self) -> int:
        """The body limit of a provider that keeps the most headers (for the start-up log)."""
        worst = max((len(p.SIGNATURE_HEADERS) for p in providers.REGISTRY.values()), default=0)
        ceiling = raw.body_ceiling([f"x{i}" for i in range(worst)], MAX_REQUEST_BYTES)
        return min(self.settings.max_body_bytes, ceiling)

    def app(self) -> web.Application:
        app = web.Application(
            middlewares=[json_errors], client_max_size=self.general_body_limit() + 1
        )
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_post("/webhooks/{provider}", self.webhook)
        # receipts sent as a query string, for providers whose HTTP_METHODS include GET;
        # a subscription handshake, for providers that declare one
        app.router.add_get("/webhooks/{provider}", self.webhook, allow_head=False)
        for name, provider in providers.REGISTRY.items():  # e.g. POST /v1/events
            endpoint = getattr(provider, "ENDPOINT", None)
            if endpoint is not None:
                app.router.add_post(endpoint, functools.partial(self._ingest_as, name))
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

    async def webhook(self, request: web.Request) -> web.Response:
        name = request.match_info["provider"]
        if request.method == "GET":
            provider = providers.get(name)
            if provider is not None and hasattr(provider, "handshake"):
                return self._handshake(name, provider, request)
        return await self._ingest(request, name)

    def _handshake(self, name: str, provider: Provider, request: web.Request) -> web.Response:
        """A provider's subscription handshake (Meta's `hub.challenge`): nothing stored."""
        if not self._is_enabled(name, provider):
            return not_found(name)
        challenge = provider.handshake(request.query, self.settings)  # type: ignore[attr-defined]
        if challenge is None:
            refused = getattr(provider, "HANDSHAKE_REFUSED", "verification handshake refused")
            return error(403, refused)
        return web.Response(text=challenge)

    async def _ingest_as(self, name: str, request: web.Request) -> web.Response:
        return await self._ingest(request, name)

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
        if provider is None or not self._is_enabled(name, provider):
            return not_found(name)
        methods = getattr(provider, "HTTP_METHODS", ("POST",))
        if request.method not in methods:
            return error(
                405, f"{name} receipts are not sent as {request.method}", Allow=", ".join(methods)
            )
        try:
            return await self._accept(request, name, provider)
        except BadRequest as exc:
            response = error(exc.status, str(exc))
            if exc.status == 408:
                response.force_close()  # the client stalled: do not keep its connection
            return response

    async def _accept(self, request: web.Request, name: str, provider: Provider) -> web.Response:
        settings = self.settings
        limit = self.body_limit(name, provider)
        payload = await self._payload(request, provider, limit)
        if isinstance(payload, web.Response):
            return payload
        body, content_type = payload
        url = public_url(request, settings)
        # Counted, not parsed: a form's fields are what the signature check works through.
        if content_type in FORM_TYPES and limits.form_fields(body) > limits.MAX_FORM_FIELDS:
            return error(400, f"form with more than {limits.MAX_FORM_FIELDS} fields")
        webhook = WebhookRequest(
            provider=name,
            method=request.method,
            url=url,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            received_at=time.time(),
        )
        problem = raw.envelope_problem(webhook, provider.SIGNATURE_HEADERS)
        if problem is not None:
            return error(*problem)
        prepare = getattr(provider, "prepare", None)
        if prepare is not None:  # e.g. SES: fetch the SNS certificate, off the event loop
            await prepare(webhook, settings)
        verified = self._verified(provider, webhook)
        if isinstance(verified, web.Response):
            return verified
        hidden = getattr(provider, "QUERY_CREDENTIALS", ())
        if hidden:  # a `?token=` secret is checked, never stored
            webhook = query_string.without_credentials(webhook, hidden)
            body = webhook.body
            if not body and webhook.method == "GET":
                return error(400, "GET receipt without parameters besides its token")
        problem_text = framing_ok(provider, body, content_type) or (
            json_problem(body) if not is_form_type(provider, content_type) else None
        )
        if problem_text:
            return error(400, problem_text)
        claim = self._claim(name, provider, webhook)
        if isinstance(claim, web.Response):
            return claim
        record = raw.encode(raw_topic(settings, name), webhook, provider.SIGNATURE_HEADERS)
        try:
            await self.sink.publish(record)
        except KafkaUnavailable as exc:
            if claim is not None:
                self._seen[name].release(claim)
            log.warning("answering 503 to %s: %s", name, exc)
            return error(
                503,
                "event store unavailable, retry later",
                **{"Retry-After": RETRY_AFTER_SECONDS},
            )
        except BaseException:
            if claim is not None:
                self._seen[name].release(claim)
            raise
        if claim is not None:
            self._seen[name].stored(claim)
        after_stored = getattr(provider, "after_stored", None)
        if after_stored is not None:  # e.g. SES: confirm an SNS subscription, in the background
            after_stored(webhook, settings)
        return accepted(provider)

    async def _payload(
        self, request: web.Request, provider: Provider, limit: int
    ) -> tuple[bytes, str] | web.Response:
        """(body, content type) of a webhook; a GET receipt's body is its raw query string
        (byte for byte, so a replay re-parses it), framed as a form."""
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
                f"content type {content_type[:64] or '(none)'!r} not accepted; "
                f"expected one of {', '.join(provider.CONTENT_TYPES)}",
            )
        body = await read_limited(request, limit, self.settings.http_body_timeout)
        if body is None:
            return error(413, f"body larger than {limit} bytes")
        return body, content_type

    def _claim(
        self, name: str, provider: Provider, webhook: WebhookRequest
    ) -> str | web.Response | None:
        """The replay key claimed for this request (None: the scheme has none), or the
        answer when the key was seen before (processors/providers/replay.py)."""
        replay_key = getattr(provider, "replay_key", None)
        found = replay_key(webhook, self.settings) if replay_key is not None else None
        if found is None:
            return None
        seen = self._seen.get(name)
        if seen is None:
            seen = self._seen[name] = replay.SeenCache()
        outcome = seen.claim(found.key, webhook.body, found.ttl)
        if outcome == replay.NEW:
            return found.key
        if outcome == replay.DUPLICATE:  # a retry of what is stored already
            return accepted(provider, duplicate=True)
        if outcome == replay.PENDING:
            return error(
                503,
                "an identical request is being stored, retry later",
                **{"Retry-After": RETRY_AFTER_SECONDS},
            )
        return error(401, "signature check failed: this request's nonce/token/id was already used")

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
            return error(404, "the query API is not enabled")
        if not auth.startswith("Bearer ") or not constant_time_equal(token, auth[7:].strip()):
            return error(401, "missing or wrong Bearer token")
        if self.read_model is None:
            return error(503, "read model not configured")
        key = request.match_info["message_key"]
        try:
            doc = await self.read_model.get(key)
        except ReadModelUnavailable as exc:  # its text names Redis's address: logs only
            log.warning("answering 503 to a query: %s", one_line(exc))
            return error(
                503, "read model unavailable, retry later", **{"Retry-After": RETRY_AFTER_SECONDS}
            )
        if doc is None:
            return error(404, f"unknown message {key[:300]!r}")
        return ok(doc)


def make_runner(gateway: Gateway) -> web.AppRunner:
    """The gateway's aiohttp runner: no access log, aiohttp's own errors on one line,
    and a connection closed when it has not sent a complete request head within
    MSGSTATUS_HTTP_HEADER_TIMEOUT of opening or of its previous answer (a slow or stalled
    client; aiohttp applies its keep-alive timeout from the connection's start)."""
    return web.AppRunner(
        gateway.app(),
        access_log=None,
        logger=OneLineServerLog(logging.getLogger("aiohttp.server"), {}),
        keepalive_timeout=gateway.settings.http_header_timeout,
        # After refusing a request whose body it did not read (413, 408), aiohttp reads
        # and drops the rest for this long before closing (10 s by default): enough for
        # a client to finish sending and read the answer, not a slot for a stalled one.
        lingering_time=LINGERING_SECONDS,
    )


async def serve(settings: Settings, sink: RawSink, read_model: ReadModel | None) -> None:
    """Run until cancelled (the CLI cancels on SIGINT/SIGTERM)."""
    gateway = Gateway(settings, sink, read_model)
    runner = make_runner(gateway)
    await runner.setup()
    site = web.TCPSite(runner, settings.http_host, settings.http_port, backlog=1024)
    await site.start()
    limit = gateway.general_body_limit()
    capped = "" if limit == settings.max_body_bytes else " (MSGSTATUS_MAX_BODY_BYTES capped)"
    log.warning(
        "gateway listening on http://%s:%s, bodies up to %d bytes%s",
        settings.http_host,
        settings.http_port,
        limit,
        capped,
    )
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
