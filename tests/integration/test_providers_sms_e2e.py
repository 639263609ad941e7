"""Every SMS / partner provider end to end: real gateway, real broker, real worker.

For tracksend, octopods, 360dialog, bandwidth, vonage, plivo, sinch, infobip, smpp and
tiktok, the documented fixture payloads are posted through the gateway process, signed or
authenticated with each module's own helper, shuffled and partly duplicated; every message
must end on `message.status` in the expected status with the expected error category, and
pass every output contract. One gateway + worker pair serves all providers. A request with
wrong credentials per provider must be answered 401.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import aiohttp
import pytest
from support.processes import base_env, start_gateway, start_worker
from support.stream import check_message, collect, last_status

from bench import traffic
from processors.model import ENGAGEMENT
from processors.providers import (
    bandwidth,
    dialog360,
    infobip,
    octopods,
    plivo,
    sinch,
    smpp,
    tiktok,
    tracksend,
    vonage,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PUBLIC = "https://status.example.com"
S = {
    "MSGSTATUS_TRACKSEND_TOKEN": "it-tracksend-token",
    "MSGSTATUS_OCTOPODS_TOKEN": "it-octopods-token",
    "MSGSTATUS_360DIALOG_TOKEN": "it-360dialog-key",
    "MSGSTATUS_BANDWIDTH_USER": "it-bw-user",
    "MSGSTATUS_BANDWIDTH_PASSWORD": "it-bw-password",
    "MSGSTATUS_VONAGE_SIGNATURE_SECRET": "it-vonage-signature-secret",
    "MSGSTATUS_VONAGE_SIGNATURE_METHOD": "sha512",
    "MSGSTATUS_VONAGE_API_KEY": "abcd1234",
    "MSGSTATUS_PLIVO_AUTH_TOKEN": "it-plivo-auth-token",
    "MSGSTATUS_SINCH_USER": "it-sinch-user",
    "MSGSTATUS_SINCH_PASSWORD": "it-sinch-password",
    "MSGSTATUS_INFOBIP_USER": "it-infobip-user",
    "MSGSTATUS_INFOBIP_PASSWORD": "it-infobip-password",
    "MSGSTATUS_SMPP_USER": "it-kannel",
    "MSGSTATUS_SMPP_PASSWORD": "it-kannel-password",
    "MSGSTATUS_SMPP_TOKEN": "it-jasmin-token",
    "MSGSTATUS_TIKTOK_TOKEN": "it-tiktok-token",
    "MSGSTATUS_PUBLIC_URL": PUBLIC,  # what Plivo signs
}


def fx(provider: str, name: str) -> bytes:
    return (FIXTURES / provider / name).read_bytes()


def jbody(obj: object) -> bytes:
    return json.dumps(obj).encode()


@dataclass(frozen=True)
class Expect:
    status: str
    category: str | None = None
    engagement: str | None = None  # an engagement event that must also be emitted


def build() -> tuple[list[traffic.Request], list[traffic.Request], dict[str, Expect], set[str]]:
    """(good requests, wrongly authenticated requests, expected finals, keys never emitted)."""
    good: list[traffic.Request] = []
    bad: list[traffic.Request] = []

    def add(name: str, body: bytes, headers: dict[str, str], bad_headers: dict[str, str]) -> None:
        good.append(traffic.Request(f"/webhooks/{name}", headers, body))
        bad.append(traffic.Request(f"/webhooks/{name}", bad_headers, body))

    def token(name: str, module: ModuleType, secret: str, body: bytes) -> None:
        add(name, body, module.sign("", body, secret), module.sign("", body, secret + "x"))

    # tracksend: a full SMS path, a DND rejection, an RCS read + reply
    ts = S["MSGSTATUS_TRACKSEND_TOKEN"]
    for word in ("QUEUED", "SENT", "DELIVERED"):
        token("tracksend", tracksend, ts, jbody({"message_id": "it-ts-1", "status": word}))
    for name in ("sms_dnd.json", "rcs_read.json", "rcs_reply.json"):
        token("tracksend", tracksend, ts, fx("tracksend", name))

    # octopods: SENT/DELIVERED/READ, DELETED (delivered + deleted), FAILED, UNKNOWN only
    ot = S["MSGSTATUS_OCTOPODS_TOKEN"]
    for word in ("SENT", "DELIVERED", "READ"):
        item = {
            "message_id": "it-oc-1",
            "channel": "whatsapp",
            "message_status": {"message_status": word, "failure_reason": None},
        }
        token("octopods", octopods, ot, jbody(item))
    for name in ("whatsapp_deleted.json", "sms_failed.json", "whatsapp_unknown.json"):
        token("octopods", octopods, ot, fx("octopods", name))

    # 360dialog: Cloud API batch (sent+read, failed 131047, one unknown word) and on-premise
    dt = S["MSGSTATUS_360DIALOG_TOKEN"]
    for name in ("cloud_batch.json", "onpremise_read.json", "onpremise_inbound.json"):
        token("360dialog", dialog360, dt, fx("360dialog", name))

    # bandwidth: delivered, failed 4775, MMS sending (Basic auth)
    bu, bp = S["MSGSTATUS_BANDWIDTH_USER"], S["MSGSTATUS_BANDWIDTH_PASSWORD"]
    for name in ("message_delivered.json", "message_failed_4775.json", "mms_sending.json"):
        body = fx("bandwidth", name)
        add("bandwidth", body, bandwidth.sign("", body, bu, bp), bandwidth.sign("", body, bu, "x"))

    # vonage: accepted then delivered (one message), failed, rejected; signed (sha512)
    vs, vm = S["MSGSTATUS_VONAGE_SIGNATURE_SECRET"], S["MSGSTATUS_VONAGE_SIGNATURE_METHOD"]
    accepted = fx("vonage", "accepted.form").replace(b"0A0000001234567D", b"0A0000001234567B")
    for name, body in (
        ("accepted", accepted),
        ("delivered.json", fx("vonage", "delivered.json")),
        ("failed", fx("vonage", "failed_antispam.form")),
        ("rejected", fx("vonage", "rejected_consent.form")),
    ):
        is_json = name.endswith(".json")
        now = int(time.time())  # Vonage stamps each request; the gateway checks the window
        headers, signed = vonage.sign("", body, vs, vm, json_body=is_json, timestamp=now)
        _, wrong = vonage.sign("", body, vs + "x", vm, json_body=is_json, timestamp=now)
        good.append(traffic.Request("/webhooks/vonage", headers, signed))
        bad.append(traffic.Request("/webhooks/vonage", headers, wrong))

    # plivo: queued then delivered (one message), undelivered STOP; V3 over the public URL
    pt, purl = S["MSGSTATUS_PLIVO_AUTH_TOKEN"], f"{PUBLIC}/webhooks/plivo"
    queued = fx("plivo", "queued.form").replace(
        b"e3c71214-2b5d-11ee-a09e-0242ac110004", b"db3ce55a-7f1d-11e1-8ea7-1231380bc196"
    )
    for body in (queued, fx("plivo", "delivered.form"), fx("plivo", "undelivered_stop.form")):
        add("plivo", body, plivo.sign(purl, body, pt), plivo.sign(purl, body, pt + "x"))

    # sinch: dispatched + delivered, failed unroutable (Basic)
    su, sp = S["MSGSTATUS_SINCH_USER"], S["MSGSTATUS_SINCH_PASSWORD"]
    for name in (
        "recipient_dispatched.json",
        "recipient_delivered.json",
        "recipient_failed_unroutable.json",
    ):
        body = fx("sinch", name)
        add("sinch", body, sinch.sign("", body, su, sp), sinch.sign("", body, "x", sp))

    # infobip: one report with pending, undeliverable, rejected (DND), expired (Basic)
    iu, ip = S["MSGSTATUS_INFOBIP_USER"], S["MSGSTATUS_INFOBIP_PASSWORD"]
    body = fx("infobip", "batch_mixed.json")
    add("infobip", body, infobip.sign("", body, iu, ip), infobip.sign("", body, iu, "x"))

    # smpp: Kannel-style forms with Basic, a Jasmin-style JSON with the token
    ku, kp, jt = S["MSGSTATUS_SMPP_USER"], S["MSGSTATUS_SMPP_PASSWORD"], S["MSGSTATUS_SMPP_TOKEN"]
    form = {"content-type": "application/x-www-form-urlencoded"}
    for name in ("acceptd.form", "delivered.form", "undeliv_unknown_subscriber.form"):
        body = fx("smpp", name)
        if name == "acceptd.form":  # the same message, receipt by receipt
            body = body.replace(b"9a8b7c6d5e", b"0a1b2c3d4e")
        add(
            "smpp",
            body,
            {**form, "authorization": smpp.calculate_signature(ku, kp)},
            {**form, "authorization": smpp.calculate_signature(ku, kp + "x")},
        )
    body = fx("smpp", "jasmin_rejected.json")
    add(
        "smpp",
        body,
        smpp.sign("", body, jt, json_body=True),
        smpp.sign("", body, "x", json_body=True),
    )

    # tiktok: a read of two messages
    token("tiktok", tiktok, S["MSGSTATUS_TIKTOK_TOKEN"], fx("tiktok", "read.json"))

    wamid = "wamid.HBgNNDkxNTE1NTU1MjUyNhUCABEYEj"
    expected = {
        "tracksend:it-ts-1": Expect("delivered"),
        "tracksend:TS-7f3c2a91-0d4e-4b1a-9c55-2e8f1a6b7c03": Expect("rejected", "opted_out"),
        "tracksend:TS-RCS-51b0e8d2-93aa-4c11-8d0f-6f7e2c1a9b10": Expect("read", None, "replied"),
        "octopods:it-oc-1": Expect("read"),
        "octopods:ae5f6071-8293-4eaf-a0b1-3c4d5e6f7081": Expect("delivered", None, "deleted"),
        "octopods:8c3d4e5f-6071-4c8d-8e9f-1a2b3c4d5e6f": Expect("failed", "carrier_filtered"),
        f"360dialog:{wamid}AzRjVFRDg0RDY0QkFBMjk3MQA=": Expect("read"),
        f"360dialog:{wamid}BCMTIzNDU2Nzg5MEFCQ0RFRgA=": Expect("failed", "outside_window"),
        "360dialog:gBEGSRURUwNmAgk3R-UFNF8fNNg": Expect("read"),
        "bandwidth:1589228074636lm4k2je7j7jklbn2": Expect("delivered"),
        "bandwidth:14762070468292kw2fuqty55yp2b2": Expect("failed", "opted_out"),
        "bandwidth:16591187230024glrx5ubxdxdzbmm": Expect("sending"),
        "vonage:0A0000001234567B": Expect("delivered"),
        "vonage:0A0000001234567C": Expect("undelivered", "carrier_filtered"),
        "vonage:0A0000001234567F": Expect("rejected", "opted_out"),
        "plivo:db3ce55a-7f1d-11e1-8ea7-1231380bc196": Expect("delivered"),
        "plivo:c1a5e0f2-0f3b-11ee-9e7c-0242ac110002": Expect("undelivered", "opted_out"),
        "sinch:01JB1J1M5BM5XQ8Q0ZWBM44E14": Expect("delivered"),
        "sinch:01J06CY78GZ2F74YZNNH2VBWR6": Expect("failed", "unreachable"),
        # sent (PENDING) on 2026-04-28 and never delivered: the emitter's timer, counted from
        # the provider's own time, fires at once (SMS reports delivery, so it applies)
        "infobip:MESSAGE-ID-456-a": Expect("delivery_unknown"),
        "infobip:MESSAGE-ID-456-b": Expect("undelivered", "unreachable"),
        "infobip:MESSAGE-ID-456-c": Expect("rejected", "opted_out"),
        "infobip:MESSAGE-ID-456-d": Expect("expired", "expired"),
        "smpp:0a1b2c3d4e": Expect("delivered"),
        "smpp:7f8e9d0c1b": Expect("undelivered", "invalid_number"),
        "smpp:1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9": Expect("rejected", "blocked"),
        "tiktok:msg-7300000000000000001": Expect("read"),
        "tiktok:msg-7300000000000000002": Expect("read"),
    }
    never = {"octopods:bf607182-93a4-4fb0-b1c2-4d5e6f708192"}  # UNKNOWN only: no change
    return good, bad, expected, never


def final_error(events: list[dict]) -> str | None:
    told = [e for e in events if e["data"]["status"] not in ENGAGEMENT]
    error = told[-1]["data"]["error"] if told else None
    return error["category"] if error else None


def engagements(events: list[dict]) -> set[str]:
    return {e["data"]["status"] for e in events if e["data"]["status"] in ENGAGEMENT}


async def post_each(base_url: str, requests: list[traffic.Request]) -> list[int]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        answers = []
        for request in requests:
            async with session.post(
                base_url + request.path, data=request.body, headers=request.headers
            ) as resp:
                await resp.read()
                answers.append(resp.status)
        return answers


async def test_every_sms_provider_end_to_end(kafka, redis_server, topic_prefix, tmp_path):
    env = base_env(
        kafka.bootstrap, topic_prefix, tmp_path / "data", MSGSTATUS_REDIS_URL=redis_server.url, **S
    )
    gateway, url = start_gateway(env, tmp_path)
    worker = start_worker(env, tmp_path)
    try:
        good, bad, expected, never = build()
        # wrong credentials: 401 from every provider
        answers = await post_each(url, bad)
        assert answers == [401] * len(bad), list(zip([r.path for r in bad], answers, strict=True))

        rng = random.Random(20260428)
        requests = good + rng.sample(good, len(good) // 3)  # duplicates, as providers retry
        rng.shuffle(requests)
        answers = await traffic.post_all(url, requests)
        assert answers == {200: len(requests)}, answers

        def done(by_key):
            return all(
                last_status(by_key.get(key, [])) == want.status
                and (want.engagement is None or want.engagement in engagements(by_key[key]))
                for key, want in expected.items()
            )

        topic = topic_prefix + "message.status"
        by_key = await collect(kafka.bootstrap, topic, done, timeout=120)
        wrong = {
            key: (last_status(by_key.get(key, [])), want.status)
            for key, want in expected.items()
            if last_status(by_key.get(key, [])) != want.status
        }
        assert not wrong, f"{wrong}\n{worker.log_tail()}"
        categories = {key: final_error(by_key[key]) for key in expected}
        assert categories == {key: want.category for key, want in expected.items()}
        for key, want in expected.items():
            if want.engagement:
                assert want.engagement in engagements(by_key[key]), key
        assert not (never & set(by_key))
        assert set(by_key) == set(expected)
        providers = {key.split(":", 1)[0] for key in by_key}
        assert providers == {
            "tracksend",
            "octopods",
            "360dialog",
            "bandwidth",
            "vonage",
            "plivo",
            "sinch",
            "infobip",
            "smpp",
            "tiktok",
        }
        # duplicates never emit twice, statuses never regress, every event fits the schema
        problems = [p for key, events in by_key.items() for p in check_message(key, events)]
        assert not problems, problems[:20]
        for key, events in by_key.items():
            assert {e["data"]["provider"] for e in events} == {key.split(":", 1)[0]}
    finally:
        gateway.stop()
        worker.stop()
    assert not worker.alive() and not gateway.alive()
