"""Fake poll-only providers for tests: RyzeAPI and Octopods status APIs on 127.0.0.1.

Runs an aiohttp server in its own thread and event loop, so it keeps answering while the
test blocks (starting processes, waiting on Kafka). Tests script each message's statuses
over time and read back every request the fake saw (with its time and answer), e.g. to
check that a poller never exceeded the rate limit.

RyzeAPI  `GET /api/chat/status/{instance}?messageId=` with header `token` (or Bearer):
         200 `{"success": true, "message_id", "status", "status_code", ...}`;
         400 messageId missing; 401 invalid token; 404 instance or message unknown, or the
         message belongs to another instance; 429 beyond `ryze_rate_limit` requests in
         any 60 s (every request counts, refused ones too).
Octopods `GET /api/v1/{whatsapp|sms}/messages/{id}` with `Authorization: Bearer`:
         200 `{"message_id", "channel", "message_status": {"message_status",
         "failure_reason"}, "updated_at"}`; 401; 404 unknown message or wrong channel.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson
from aiohttp import web

RYZE_CODES = {
    "pending": 0,
    "sent": 1,
    "delivered": 2,
    "received": 3,
    "read": 4,
    "played": 5,
    "error": -1,
}


@dataclass(frozen=True)
class Seen:
    """One request the fake answered."""

    provider: str  # ryze | octopods
    message_id: str | None
    instance: str | None
    at: float  # time.monotonic() when it arrived
    status: int  # the HTTP status answered


@dataclass
class Script:
    """A message's statuses over time: (seconds after scripting, status word) steps."""

    steps: list[tuple[float, str]]
    start: float
    channel: str = "whatsapp"
    failure_reason: str | None = None
    changed_at: dict[str, float] = field(default_factory=dict)

    def current(self, now: float) -> tuple[str, float]:
        """(status word, wall time it became current)."""
        word, since = self.steps[0][1], self.steps[0][0]
        for offset, step in self.steps:
            if now - self.start >= offset:
                word, since = step, offset
        return word, self.changed_at.setdefault(f"{word}@{since}", time.time())


class FakeProviders:
    def __init__(
        self,
        *,
        ryze_token: str = "ryze-api-token",
        octopods_token: str = "octopods-api-token",
        ryze_rate_limit: int = 100,
    ) -> None:
        self.ryze_token = ryze_token
        self.octopods_token = octopods_token
        self.ryze_rate_limit = ryze_rate_limit
        self.seen: list[Seen] = []
        self.answer_with: dict[str, int] = {}  # message id -> forced HTTP status
        self.fail_next = 0  # answer the next N RyzeAPI requests with 503
        self._ryze: dict[str, tuple[str, Script]] = {}  # message id -> (instance, script)
        self._octopods: dict[str, Script] = {}
        self._ryze_window: deque[float] = deque()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # --- scripting ------------------------------------------------------------------

    def script_ryze(self, instance: str, message_id: str, steps: Sequence[tuple[float, str]]):
        """RyzeAPI words: pending, sent, delivered, read, played, error."""
        assert all(word in RYZE_CODES for _, word in steps), steps
        with self._lock:
            self._ryze[message_id] = (instance, Script(list(steps), time.monotonic()))

    def script_octopods(
        self,
        message_id: str,
        channel: str,
        steps: Sequence[tuple[float, str]],
        failure_reason: str | None = None,
    ) -> None:
        """Octopods words: SENT, DELIVERED, READ, FAILED, DELETED, UNKNOWN."""
        with self._lock:
            self._octopods[message_id] = Script(
                list(steps), time.monotonic(), channel, failure_reason
            )

    def requests(self, provider: str, message_id: str | None = None) -> list[Seen]:
        with self._lock:
            return [
                s
                for s in self.seen
                if s.provider == provider and (message_id is None or s.message_id == message_id)
            ]

    # --- server ---------------------------------------------------------------------

    def start(self) -> FakeProviders:
        ready = threading.Event()
        errors: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start_server())
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())  # type: ignore[union-attr]
            loop.close()

        self._thread = threading.Thread(target=serve, name="fake-providers", daemon=True)
        self._thread.start()
        if not ready.wait(10) or errors:
            raise RuntimeError(f"fake providers did not start: {errors}")
        return self

    async def _start_server(self) -> None:
        app = web.Application()
        app.router.add_get("/api/chat/status/{instance}", self._ryze_status)
        app.router.add_get("/api/chat/status/", self._ryze_no_instance)
        app.router.add_get("/api/v1/{channel}/messages/{message_id}", self._octopods_status)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> FakeProviders:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- RyzeAPI --------------------------------------------------------------------

    @staticmethod
    def _ryze_error(status: int, message: str) -> web.Response:
        body = orjson.dumps({"success": False, "error": {"message": message}})
        return web.Response(status=status, body=body, content_type="application/json")

    def _record(self, provider: str, message_id: str | None, instance: str | None, code: int):
        self.seen.append(Seen(provider, message_id, instance, time.monotonic(), code))

    async def _ryze_no_instance(self, request: web.Request) -> web.Response:
        with self._lock:
            self._record("ryze", request.query.get("messageId"), None, 400)
        return self._ryze_error(400, "Instance name is required")

    async def _ryze_status(self, request: web.Request) -> web.Response:
        instance = request.match_info["instance"]
        message_id = request.query.get("messageId")
        token = request.headers.get("token") or request.headers.get("Authorization", "")
        token = token.removeprefix("Bearer ").strip()
        now = time.monotonic()
        with self._lock:
            window = self._ryze_window
            window.append(now)
            while window and window[0] <= now - 60.0:
                window.popleft()
            if len(window) > self.ryze_rate_limit:
                self._record("ryze", message_id, instance, 429)
                return self._ryze_error(429, "Too many requests")
            forced = self.answer_with.get(message_id or "")
            if self.fail_next > 0 or forced:
                code = 503 if self.fail_next > 0 else forced
                self.fail_next = max(0, self.fail_next - 1)
                self._record("ryze", message_id, instance, code)  # type: ignore[arg-type]
                return self._ryze_error(code, f"forced {code}")  # type: ignore[arg-type]
            if token != self.ryze_token:
                self._record("ryze", message_id, instance, 401)
                return self._ryze_error(401, "Invalid token")
            if not message_id:
                self._record("ryze", message_id, instance, 400)
                return self._ryze_error(400, "messageId query parameter is required")
            known = self._ryze.get(message_id)
            if known is None:
                self._record("ryze", message_id, instance, 404)
                return self._ryze_error(404, "Message not found")
            owner, script = known
            if owner != instance:
                self._record("ryze", message_id, instance, 404)
                return self._ryze_error(404, "Message does not belong to this instance")
            word, since = script.current(now)
            self._record("ryze", message_id, instance, 200)
        body = {
            "success": True,
            "message": "Message status retrieved successfully",
            "message_id": message_id,
            "status": word,
            "status_code": RYZE_CODES[word],
            "direction": "sent",
            "chat_jid": "5511999999999@s.whatsapp.net",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since)),
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    # --- Octopods -------------------------------------------------------------------

    async def _octopods_status(self, request: web.Request) -> web.Response:
        channel = request.match_info["channel"]
        message_id = request.match_info["message_id"]
        auth = request.headers.get("Authorization", "")
        now = time.monotonic()
        with self._lock:
            if auth != f"Bearer {self.octopods_token}":
                self._record("octopods", message_id, None, 401)
                return web.json_response({"error": "Unauthorized"}, status=401)
            script = self._octopods.get(message_id)
            if script is None or script.channel != channel:
                self._record("octopods", message_id, None, 404)
                return web.json_response({"error": "Message not found"}, status=404)
            word, since = script.current(now)
            self._record("octopods", message_id, None, 200)
        body = {
            "message_id": message_id,
            "channel": channel,
            "message_status": {
                "message_status": word,
                "failure_reason": script.failure_reason if word == "FAILED" else None,
            },
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since)),
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")


def max_in_window(times: Sequence[float], window: float = 60.0) -> int:
    """The most requests seen in any `window` seconds (sliding)."""
    best, recent = 0, deque[float]()
    for t in sorted(times):
        recent.append(t)
        while recent[0] <= t - window:
            recent.popleft()
        best = max(best, len(recent))
    return best
