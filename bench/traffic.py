"""Realistic signed provider traffic: the demo sender and the end-to-end tests share it.

Each message gets a status path as its provider would report it; the requests of all
messages are shuffled, some duplicated and some held back to arrive late, exactly the
mess msgstatus exists to clean up. Every request is signed with the provider module's
own signing function, so what passes here passes for real provider requests.
"""

from __future__ import annotations

import asyncio
import random
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp
import orjson

from processors.providers import meta, ryze, twilio


@dataclass(slots=True)
class Message:
    provider: str  # our provider name; events go through /v1/events
    message_id: str
    channel: str
    path: list[str]  # canonical statuses in the order the provider would send them
    expected: str  # the final status msgstatus must end in
    account: str = ""

    @property
    def key(self) -> str:
        return f"{self.provider}:{self.message_id}"


@dataclass(slots=True)
class Request:
    path: str  # URL path and query
    headers: dict[str, str]
    body: bytes
    keys: list[str] = field(default_factory=list)  # message keys it carries


# Paths per provider: (statuses in provider order, expected final).
PATHS: dict[str, list[tuple[list[str], str]]] = {
    "twilio-sms": [
        (["queued", "sent", "delivered"], "delivered"),
        (["accepted", "queued", "sending", "sent", "delivered"], "delivered"),
        (["queued", "sent", "undelivered"], "undelivered"),
        (["queued", "failed"], "failed"),
        (["sent", "undelivered", "delivered"], "delivered"),  # a late positive receipt
        (["queued", "sent"], "sent"),
    ],
    "twilio-whatsapp": [
        (["queued", "sent", "delivered", "read"], "read"),
        (["sent", "read"], "read"),
        (["queued", "sent", "failed"], "failed"),
    ],
    "meta": [
        (["sent", "delivered", "read"], "read"),
        (["sent", "read"], "read"),
        (["sent", "delivered"], "delivered"),
        (["sent", "failed"], "failed"),
    ],
    "ryze": [
        (["queued", "sent", "delivered", "read"], "read"),
        (["sent", "delivered", "read", "played"], "played"),
        (["queued", "failed"], "failed"),
    ],
    "events": [
        (["accepted", "sent", "delivered"], "delivered"),
        (["sent", "delivered", "read"], "read"),
        (["accepted", "rejected"], "rejected"),
    ],
}

RYZE_CODES = {
    "queued": ("pending", 0),
    "sent": ("sent", 1),
    "delivered": ("delivered", 2),
    "read": ("read", 4),
    "played": ("played", 5),
    "failed": ("error", -1),
}
TWILIO_ERRORS = {"undelivered": "30003", "failed": "30007"}


def make_messages(count: int, rng: random.Random, run_id: str) -> list[Message]:
    kinds = list(PATHS)
    messages = []
    for i in range(count):
        kind = kinds[i % len(kinds)]
        path, expected = rng.choice(PATHS[kind])
        if kind.startswith("twilio"):
            channel = "whatsapp" if kind.endswith("whatsapp") else "sms"
            mid = f"SM{run_id}{i:08d}"
            messages.append(Message("twilio", mid, channel, path, expected, "AC" + "0" * 32))
        elif kind == "meta":
            messages.append(
                Message("meta", f"wamid.{run_id}{i:08d}", "whatsapp", path, expected, "1065550000")
            )
        elif kind == "ryze":
            messages.append(
                Message("ryze", f"3EB0{run_id}{i:08d}", "whatsapp", path, expected, "demo-instance")
            )
        else:
            messages.append(
                Message("crm", f"msg-{run_id}-{i:08d}", "web", path, expected, "helpdesk")
            )
    return messages


def _twilio(msg: Message, status: str, base_url: str, token: str) -> Request:
    to = "+15558675310"
    params = [
        ("AccountSid", msg.account),
        ("ApiVersion", "2010-04-01"),
        ("From", "+15017250604"),
        ("MessageSid", msg.message_id),
        ("MessageStatus", status),
        ("SmsSid", msg.message_id),
        ("SmsStatus", status),
        ("To", to),
    ]
    if msg.channel == "whatsapp":
        params = [(k, f"whatsapp:{v}" if k in ("From", "To") else v) for k, v in params]
        params.append(("ChannelPrefix", "whatsapp"))
    if status in TWILIO_ERRORS:
        params.append(("ErrorCode", TWILIO_ERRORS[status]))
    body = urllib.parse.urlencode(params).encode()
    path = "/webhooks/twilio"
    headers = twilio.sign(base_url + path, body, token)
    return Request(path, headers, body, [msg.key])


def _meta(items: list[tuple[Message, str, int]], base_url: str, secret: str) -> Request:
    statuses = []
    for msg, status, at in items:
        entry: dict = {
            "id": msg.message_id,
            "status": status,
            "timestamp": str(at),
            "recipient_id": "15558675310",
        }
        if status == "failed":
            entry["errors"] = [{"code": 131047, "title": "Re-engagement message"}]
        statuses.append(entry)
    payload = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "15550783881",
                                "phone_number_id": items[0][0].account,
                            },
                            "statuses": statuses,
                        },
                    }
                ],
            }
        ],
    }
    body = orjson.dumps(payload)
    return Request(
        "/webhooks/meta", meta.sign(base_url, body, secret), body, [m.key for m, _, _ in items]
    )


def _ryze(msg: Message, status: str, at: int, token: str, use_code: bool) -> Request:
    word, code = RYZE_CODES[status]
    data: dict = {
        "message_id": msg.message_id,
        "direction": "sent",
        "chat_jid": "5511999999999@s.whatsapp.net",
        "timestamp": at,
    }
    if use_code:
        data["status_code"] = code
    else:
        data["status"] = word
    body = orjson.dumps({"event": "message.status", "instance": msg.account, "data": data})
    return Request("/webhooks/ryze", ryze.sign("", body, token), body, [msg.key])


def _event(msg: Message, status: str, at: int, events_token: str) -> Request:
    item: dict = {
        "provider": msg.provider,
        "provider_message_id": msg.message_id,
        "channel": msg.channel,
        "status": status,
        "occurred_at": at,
        "account": msg.account,
    }
    if status in ("failed", "rejected", "undelivered"):
        item["error"] = {"code": "E42", "category": "blocked", "description": "demo"}
    body = orjson.dumps(item)
    headers = {"content-type": "application/json", "authorization": f"Bearer {events_token}"}
    return Request("/v1/events", headers, body, [msg.key])


def build_requests(
    messages: list[Message],
    base_url: str,
    secrets: Mapping[str, str],
    rng: random.Random,
    t0: float | None = None,
) -> list[Request]:
    """One request per provider status; Meta statuses are batched several per POST.

    Provider timestamps are `t0` (default: now) plus one second per step of the path.
    """
    base = int(time.time() if t0 is None else t0)
    requests: list[Request] = []
    meta_pending: list[tuple[Message, str, int]] = []
    for msg in messages:
        for step, status in enumerate(msg.path):
            at = base + step
            if msg.provider == "twilio":
                requests.append(
                    _twilio(msg, status, base_url, secrets["MSGSTATUS_TWILIO_AUTH_TOKEN"])
                )
            elif msg.provider == "meta":
                meta_pending.append((msg, status, at))
            elif msg.provider == "ryze":
                requests.append(
                    _ryze(msg, status, at, secrets["MSGSTATUS_RYZE_TOKEN"], rng.random() < 0.5)
                )
            else:
                requests.append(_event(msg, status, at, secrets["MSGSTATUS_EVENTS_TOKEN"]))
    rng.shuffle(meta_pending)
    while meta_pending:
        size = rng.randint(1, 6)
        batch, meta_pending = meta_pending[:size], meta_pending[size:]
        requests.append(_meta(batch, base_url, secrets["MSGSTATUS_META_APP_SECRET"]))
    return requests


def mess_up(
    requests: list[Request], rng: random.Random, duplicates: float = 0.25, late: float = 0.1
) -> list[Request]:
    """Shuffle, duplicate some requests and move some to the very end (late retries)."""
    out = list(requests) + [r for r in requests if rng.random() < duplicates]
    rng.shuffle(out)
    held = [r for r in out if rng.random() < late]
    rest = [r for r in out if r not in held] if held else out
    return rest + held


async def post_all(
    base_url: str, requests: list[Request], concurrency: int = 16, attempts: int = 60
) -> dict[int, int]:
    """Post like a provider: retry on 503/connection errors with a pause; count answers."""
    answers: dict[int, int] = {}
    queue: asyncio.Queue[Request] = asyncio.Queue()
    for r in requests:
        queue.put_nowait(r)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def worker() -> None:
            while not queue.empty():
                request = queue.get_nowait()
                for _ in range(attempts):
                    try:
                        async with session.post(
                            base_url + request.path, data=request.body, headers=request.headers
                        ) as resp:
                            await resp.read()
                            status = resp.status
                    except (TimeoutError, aiohttp.ClientError):
                        status = 0
                    if status in (0, 503):
                        await asyncio.sleep(0.5)
                        continue
                    break
                answers[status] = answers.get(status, 0) + 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return answers
