"""Issue 12, the worker's side: no raw record, however hostile, can stop the normalize
stage. Every dead letter serialises within MAX_DEADLETTER_BYTES, canonical records stay
within MAX_RECORD_BYTES, message_keys are printable and short, and `normalize()` never
raises. Each finding of the issue has a test here that fails on the code before it
(the docstrings say how)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from processors.config import Settings
from processors.kafka import raw
from processors.model import CanonicalEvent, ErrorInfo
from processors.providers import REGISTRY, limits
from processors.providers.base import ParseResult, Watermark, WebhookRequest
from processors.stream.normalize import (
    DEADLETTER_CATEGORIES,
    MAX_DEADLETTER_BYTES,
    MAX_KEY_CHARS,
    MAX_RECORD_BYTES,
    encode_dead_letter,
    normalize,
    pack_events,
)
from processors.stream.normalizer import Normalizer

FAUST_MAX_REQUEST = 1_000_000  # Faust's producer_max_request_size default
SOURCE = "t.raw.x:0:7"


def record(
    provider: str,
    body: bytes,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
    received_at: float | None = None,
) -> tuple[bytes, list[tuple[str, bytes]]]:
    """(value, headers) as the gateway writes them to raw.<provider>."""
    request = WebhookRequest(
        provider,
        "POST",
        f"http://127.0.0.1/webhooks/{provider}",
        {"content-type": content_type, **(headers or {})},
        body,
        time.time() if received_at is None else received_at,
    )
    rec = raw.encode(f"t.raw.{provider}", request, list(headers or {}))
    return rec.value, rec.headers


def check_output(result: Any) -> None:
    """What the normalizer will write of a result can always be written."""
    for letter in result.dead:
        assert letter["category"] in DEADLETTER_CATEGORIES, letter["category"]
        encoded = orjson.dumps(letter)  # serialises as it is, not only through the guard
        assert len(encoded) <= MAX_DEADLETTER_BYTES
        assert encode_dead_letter(letter) == encoded
    for events in result.by_partition.values():
        for event in events:
            key = f"{event['provider']}:{event['provider_message_id']}"
            assert key.isprintable() and len(key) <= MAX_KEY_CHARS
            assert math.isfinite(event["observed_at"])
        for value in pack_events(events):
            assert len(value) <= MAX_RECORD_BYTES
    for facts in result.conversations.values():
        assert len(orjson.dumps(facts)) <= MAX_RECORD_BYTES


def nested(depth: int, leaf: Any = 1) -> bytes:
    return b"[" * depth + orjson.dumps(leaf) + b"]" * depth


# --- poison pill: deep nesting ------------------------------------------------------------


@pytest.mark.parametrize("depth", [64, 65, 254, 255, 600, 1023])
@pytest.mark.parametrize("provider", ["sendgrid", "events", "meta", "ryze", "bandwidth"])
def test_deeply_nested_json_is_a_dead_letter_that_serialises(provider: str, depth: int) -> None:
    """Finding (poison pill): an authenticated body nested 255-1024 levels made a dead
    letter holding the parsed tree; orjson.dumps(dead) raised "Recursion limit reached"
    and the worker stopped on that record for good. Old code: orjson.dumps fails here."""
    body = b'{"a": ' + nested(depth - 1) + b"}" if provider == "events" else nested(depth)
    result = normalize(*record(provider, body), 4, SOURCE)
    check_output(result)
    assert result.by_partition == {}
    if depth > limits.MAX_JSON_DEPTH:
        assert [d["category"] for d in result.dead] == ["too_deep"]


def test_a_deep_item_inside_a_valid_batch_is_described_not_copied() -> None:
    body = orjson.dumps([{"event": "processed", "sg_message_id": "ok.1", "timestamp": 1}])
    body = body[:-1] + b"," + nested(60) + b"]"
    result = normalize(*record("sendgrid", body), 4, SOURCE)
    check_output(result)
    assert result.events == 1
    (letter,) = result.dead
    assert letter["item"] == "array of 1 items" and letter["category"] == "invalid_item"


# --- dead letters carry the exact bytes, bounded -------------------------------------------


def test_dead_letter_keeps_the_exact_bytes_of_a_small_record() -> None:
    body = b'{"event": "message.status", "data": {"status": "teleported"}}'
    result = normalize(*record("ryze", body), 4, SOURCE)
    (letter,) = result.dead
    assert base64.b64decode(letter["body_b64"]) == body
    assert (letter["body_bytes"], letter["body_kept"]) == (len(body), len(body))
    assert letter["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert letter["source"] == SOURCE and letter["provider"] == "ryze"


def test_a_near_megabyte_body_is_truncated_to_fit_and_says_so() -> None:
    """Old code kept only the first 64 KiB, said nothing of it and had no digest."""
    body = orjson.dumps([{"event": "nonsense", "pad": "x" * 1_040_000}])
    result = normalize(*record("sendgrid", body), 4, SOURCE)
    check_output(result)
    (letter,) = result.dead
    kept = base64.b64decode(letter["body_b64"])
    assert body.startswith(kept) and len(kept) == letter["body_kept"] < len(body)
    assert letter["body_kept"] > 600_000  # as much as fits, not an arbitrary 64 KiB
    assert letter["body_bytes"] == len(body)
    assert letter["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_many_dead_items_are_bounded_per_record() -> None:
    """A batch of 3000 bad items made 3000 dead letters, each able to carry the body."""
    items = [
        {"event": f"weird-{i}", "sg_message_id": f"m{i}", "pad": "y" * 120} for i in range(3000)
    ]
    body = orjson.dumps(items)
    result = normalize(*record("sendgrid", body), 4, SOURCE)
    check_output(result)
    assert len(result.dead) == 101
    assert "2900 more dead items" in result.dead[-1]["reason"]
    total = sum(len(encode_dead_letter(d)) for d in result.dead)
    assert total < 2 * len(body) + 200_000  # the body is written once, not 3000 times
    assert result.dead[0]["body_kept"] == len(body)
    assert all(d["body_in"] == result.dead[0]["id"] for d in result.dead[1:])


def test_encode_dead_letter_always_fits_and_always_serialises() -> None:
    huge = {"id": "x", "reason": "r" * 2_000_000, "category": "parser_error", "body_b64": "QUJD"}
    assert len(encode_dead_letter(huge)) <= MAX_DEADLETTER_BYTES
    deep: list[Any] = []
    for _ in range(300):
        deep = [deep]
    odd = {"id": "\udcff", "reason": "bad \ud800", "item": deep, "category": "nope"}
    letter = orjson.loads(encode_dead_letter(odd))
    assert letter["category"] == "parser_error" and "\\udcff" in letter["id"]
    big_body = {"id": "y", "reason": "r", "category": "too_large", "body_kept": 1_200_000}
    big_body["body_b64"] = base64.b64encode(b"z" * 1_200_000).decode()
    out = orjson.loads(encode_dead_letter(big_body))
    assert len(encode_dead_letter(big_body)) <= MAX_DEADLETTER_BYTES
    assert len(base64.b64decode(out["body_b64"])) == out["body_kept"]


def test_a_tombstone_or_a_record_without_headers_is_a_dead_letter() -> None:
    """Old code: a raw record with no value raised TypeError out of normalize()."""
    for value, headers in ((None, record("twilio", b"a=1")[1]), (b"x", []), (b"x", [("a", b"")])):
        result = normalize(value, headers, 4, SOURCE)  # type: ignore[arg-type]
        check_output(result)
        assert result.dead and result.by_partition == {}


@pytest.mark.parametrize("stamp", [b"nan", b"inf", b"-inf", b"1e999"])
def test_a_received_at_that_is_no_time_is_a_bad_record(stamp: bytes) -> None:
    """Old code emitted events with observed_at NaN (written as null by orjson), which the
    ordering agent's float() cannot read."""
    value, headers = record("ryze", orjson.dumps({"event": "message.status", "data": {}}))
    headers = [(k, stamp if k == raw.H_RECEIVED_AT else v) for k, v in headers]
    result = normalize(value, headers, 4, SOURCE)
    assert [d["category"] for d in result.dead] == ["bad_record"]


# --- message_key rules -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message_id", "problem"),
    [
        ("abc\ndef", "control"),
        ("abc\x00", "control"),
        ("abc\u202edef", "control"),  # a bidi override: prints as something else
        ("m" * 253, "longer than 256"),  # "crm:" + 253 = 257 characters
    ],
)
def test_message_key_must_be_printable_and_short(message_id: str, problem: str) -> None:
    """Finding: control characters and unbounded lengths reached message_key (Kafka key,
    Redis key, CloudEvent subject, logs). Old code emitted these events."""
    body = orjson.dumps(
        {"provider": "crm", "provider_message_id": message_id, "status": "sent", "channel": "web"}
    )
    result = normalize(*record("events", body), 4, SOURCE)
    check_output(result)
    assert result.by_partition == {}
    (letter,) = result.dead
    assert letter["category"] == "bad_key" and problem in letter["reason"]


def test_twilio_sid_with_a_newline_is_a_bad_key() -> None:
    body = b"MessageSid=SM1%0Aforged&MessageStatus=delivered"
    result = normalize(*record("twilio", body, "application/x-www-form-urlencoded"), 4, SOURCE)
    assert [d["category"] for d in result.dead] == ["bad_key"]


def test_a_key_of_exactly_256_characters_is_fine() -> None:
    message_id = "m" * (MAX_KEY_CHARS - len("crm:"))
    body = orjson.dumps({"provider": "crm", "provider_message_id": message_id, "status": "sent"})
    result = normalize(*record("events", body), 4, SOURCE)
    assert result.events == 1 and not result.dead


def test_event_strings_are_capped_not_dropped() -> None:
    body = orjson.dumps(
        {
            "provider": "crm",
            "provider_message_id": "m1",
            "status": "failed",
            "provider_status": "p" * 250,
            "account": "a" * 255,
            "error": {"code": "c" * 500, "category": "blocked", "description": "d" * 100_000},
        }
    )
    result = normalize(*record("events", body), 4, SOURCE)
    ((event,),) = result.by_partition.values()
    assert event["provider_status"] == "p" * 128
    assert len(event["account"]) == 255
    assert (len(event["error"]["code"]), len(event["error"]["description"])) == (64, 1024)
    assert event["error"]["category"] == "blocked"


# --- byte-bounded canonical records ------------------------------------------------------


def bounce(i: int, run: str, reason_len: int = 2000) -> dict[str, Any]:
    return {
        "email": f"user{i}@example.com",
        "timestamp": 1_777_400_000 + i,
        "event": "bounce",
        "sg_event_id": f"ev{i}",
        "sg_message_id": f"{run}.{i}",
        "status": "5.1.1",
        "type": "bounce",
        "reason": f"550 5.1.1 <user{i}@example.com>: " + "r" * reason_len,
        "bounce_classification": "Invalid Address",
    }


def test_pack_events_bounds_bytes_and_count_and_keeps_order() -> None:
    events = [{"n": i, "pad": "x" * (i % 7 * 300)} for i in range(2000)]
    values = pack_events(events, max_bytes=50_000, max_events=120)
    assert all(len(v) <= 50_000 for v in values)
    unpacked = [e for v in values for e in orjson.loads(v)["events"]]
    assert unpacked == events
    for value in values:
        chunk = orjson.loads(value)["events"]
        assert len(chunk) <= 120
        assert value == orjson.dumps({"events": chunk})
    assert pack_events([]) == []


@dataclass
class FakeRecord:
    value: bytes | None
    headers: list[tuple[str, bytes]]
    offset: int


class SizeCheckingSend:
    """The worker's send, refusing what Faust's producer would refuse (aiokafka raises
    MessageSizeTooLargeError out of send() for a record above max_request_size)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes, int | None]] = []

    async def __call__(self, topic: str, key: bytes, value: bytes, partition: int | None) -> Any:
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, [])
        if size > FAUST_MAX_REQUEST:
            raise MessageSizeTooLargeError(f"{size} bytes")
        self.sent.append((topic, key, value, partition))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


async def process(records: Iterable[tuple[str, bytes, list[tuple[str, bytes]]]]) -> Any:
    send = SizeCheckingSend()
    stage = Normalizer(Settings(topic_prefix="t.", partitions=1), "g", [], send)
    batch: dict[TopicPartition, list[FakeRecord]] = {}
    for offset, (provider, value, headers) in enumerate(records):
        tp = TopicPartition(f"t.raw.{provider}", 0)
        batch.setdefault(tp, []).append(FakeRecord(value, headers, offset))
    await stage._process(batch)
    return send.sent


async def test_an_oversized_batch_is_split_into_records_the_producer_takes() -> None:
    """Finding: 16 signed SendGrid posts with 2 KB bounce reasons made a 1.24 MB
    canonical record (500 events, capped by count only): the producer refused it and the
    worker stopped. Old code: MessageSizeTooLargeError out of _process."""
    run = "oversized"
    records = []
    for post in range(16):
        events = [bounce(post * 40 + i, run) for i in range(40)]
        records.append(("sendgrid", *record("sendgrid", orjson.dumps(events))))
    sent = await process(records)
    canonical = [value for topic, _, value, _ in sent if topic == "t.status.canonical"]
    assert len(canonical) >= 2 and all(len(v) <= MAX_RECORD_BYTES for v in canonical)
    events = [e for v in canonical for e in orjson.loads(v)["events"]]
    assert [e["provider_message_id"] for e in events] == [f"{run}.{i}" for i in range(640)]
    assert all(len(e["error"]["description"]) <= 1024 for e in events)


async def test_dead_letters_of_megabyte_records_are_writable() -> None:
    items = [{"event": "nonsense", "sg_message_id": "m", "pad": "q" * 1_000_000}]
    sent = await process([("sendgrid", *record("sendgrid", orjson.dumps(items)))])
    (letter,) = [value for topic, _, value, _ in sent if topic == "t.status.deadletter"]
    assert len(letter) <= MAX_DEADLETTER_BYTES


# --- Messenger watermarks: one record per partition must still fit -----------------------


def test_conversation_facts_that_do_not_fit_one_record_are_dead_letters(monkeypatch) -> None:
    marks = [
        Watermark(conversation=f"{i}:{'u' * 100}", kind="read", watermark_ms=i, observed_at=1.0)
        for i in range(4000)
    ]
    meta = REGISTRY["meta"]
    monkeypatch.setattr(meta, "parse", lambda request: ParseResult(watermarks=marks))
    result = normalize(*record("meta", b"{}"), 1, SOURCE)
    check_output(result)
    kept = sum(len(f["watermarks"]) for f in result.conversations.values())
    assert 0 < kept < 4000
    assert {d["category"] for d in result.dead} == {"too_large"}
    assert f"{4000 - kept - 100} more dead items" in result.dead[-1]["reason"]


# --- a broken parser never stops the stream ------------------------------------------------


def test_garbage_from_a_parser_becomes_dead_letters(monkeypatch) -> None:
    bad = [
        CanonicalEvent("twilio", "SM1", "teleported", "x", "sms", 1.0),
        CanonicalEvent("twilio", 42, "sent", "x", "sms", 1.0),  # type: ignore[arg-type]
        CanonicalEvent("Bad Name", "SM1", "sent", "x", "sms", 1.0),
        CanonicalEvent(
            "twilio",
            "SM2",
            "sent",
            7,
            "sms",
            1.0,
            occurred_at=math.nan,
            account=3,  # type: ignore[arg-type]
            error=ErrorInfo(code="\udcff", category="made-up", description=None),
        ),
    ]
    twilio = REGISTRY["twilio"]
    monkeypatch.setattr(twilio, "parse", lambda request: ParseResult(events=bad))
    result = normalize(*record("twilio", b"a=1", "application/x-www-form-urlencoded"), 4, SOURCE)
    check_output(result)
    assert [d["category"] for d in result.dead] == ["non_canonical", "bad_key", "bad_key"]
    ((event,),) = result.by_partition.values()
    assert event["provider_status"] == "sent" and event["occurred_at"] is None
    assert event["account"] is None and event["error"]["category"] == "unknown"
    orjson.dumps(event)


def test_a_parser_that_raises_anything_is_a_parser_error(monkeypatch) -> None:
    def explode(request: WebhookRequest) -> ParseResult:
        raise RecursionError("boom")

    monkeypatch.setattr(REGISTRY["line"], "parse", explode)
    result = normalize(*record("line", b'{"events": []}'), 4, SOURCE)
    assert [d["category"] for d in result.dead] == ["parser_error"]
    check_output(result)
