"""What the crash-consistency and fault tests share: traffic, environment, judgement."""

from __future__ import annotations

import time
from pathlib import Path

import orjson

from bench.traffic import Request
from support.processes import SECRETS, base_env
from support.stream import check_message, last_status

AFTER = 30.0  # MSGSTATUS_DELIVERY_UNKNOWN_AFTER: every `delivered` is posted well within it


def crm_event(mid: str, status: str) -> Request:
    body = orjson.dumps(
        {
            "provider": "crm",
            "provider_message_id": mid,
            "channel": "sms",
            "status": status,
            "occurred_at": time.time(),
        }
    )
    headers = {
        "content-type": "application/json",
        "authorization": f"Bearer {SECRETS['MSGSTATUS_EVENTS_TOKEN']}",
    }
    return Request("/v1/events", headers, body, [f"crm:{mid}"])


def fault_env(kafka, prefix: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    settings = {
        "MSGSTATUS_REDIS_URL": "redis://127.0.0.1:1/0",  # no read model (--no-read-model)
        "MSGSTATUS_DELIVERY_UNKNOWN_AFTER": str(AFTER),
        "MSGSTATUS_DELIVERY_UNKNOWN_GRACE": "1",
        "MSGSTATUS_SESSION_TIMEOUT": "6",
        "MSGSTATUS_WATERMARK_INTERVAL": "1",
    }
    return base_env(kafka.bootstrap, prefix, tmp_path / "data1", **{**settings, **extra})


def judge(by_key: dict, delivered: list[str], controls: list[str]) -> list[str]:
    problems: list[str] = []
    for mid in delivered:
        events = by_key.get(f"crm:{mid}", [])
        if last_status(events) != "delivered":
            problems.append(f"{mid}: last status {last_status(events)}, not delivered")
        if any(e["data"]["status"] == "delivery_unknown" for e in events):
            problems.append(f"{mid}: a false delivery_unknown")
    for mid in controls:
        events = by_key.get(f"crm:{mid}", [])
        ids = {e["id"] for e in events if e["data"]["status"] == "delivery_unknown"}
        if len(ids) != 1:
            problems.append(f"{mid}: {len(ids)} delivery_unknown events")
    for key, events in by_key.items():
        problems += check_message(key, events, allow_repeats=True)
    return problems
