"""Email providers and Messenger watermarks through the real parts: gateway and worker
processes, a real broker. Every request is signed the way the provider signs it (SendGrid
ECDSA, SNS RSA with a pre-seeded self-signed certificate, Mailgun HMAC, Meta HMAC); no
request ever leaves the machine (SES auto-confirmation is off, certificates pre-seeded)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import aiohttp
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from support.processes import SECRETS, base_env, start_gateway, start_worker
from support.stream import check_message, collect, last_status

from processors.providers import line, mailgun, meta, sendgrid, ses

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SG_KEY = ec.generate_private_key(ec.SECP256R1())
SNS_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-events"
CERT_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-e2e0000000000000.pem"
MAILGUN_KEY = "mailgun-e2e-signing-key"
LINE_SECRET = "line-e2e-channel-secret"
META_SECRET = SECRETS["MSGSTATUS_META_APP_SECRET"]
PAGE, USER = "1234567890", "5678"


def provider_env() -> dict[str, str]:
    return {
        "MSGSTATUS_SENDGRID_PUBLIC_KEY": sendgrid.public_key_setting(SG_KEY),
        "MSGSTATUS_SES_TOPIC_ARN": TOPIC,
        "MSGSTATUS_SES_SIGNING_CERT_URL": CERT_URL,
        "MSGSTATUS_SES_SIGNING_CERT_PEM": ses.self_signed_certificate(SNS_KEY),
        "MSGSTATUS_SES_AUTO_CONFIRM": "0",  # the confirming GET would go to AWS: never in tests
        "MSGSTATUS_MAILGUN_SIGNING_KEY": MAILGUN_KEY,
        "MSGSTATUS_LINE_CHANNEL_SECRET": LINE_SECRET,
    }


async def post(base: str, path: str, body: bytes, headers: dict[str, str]) -> int:
    timeout = aiohttp.ClientTimeout(total=30)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(base + path, data=body, headers=headers) as answer,
    ):
        await answer.read()
        return answer.status


# --- signed requests, one builder per provider --------------------------------------------------


def sendgrid_request(events: list[dict[str, Any]]) -> tuple[str, bytes, dict[str, str]]:
    body = orjson.dumps(events)
    return "/webhooks/sendgrid", body, sendgrid.sign(body, SG_KEY, int(time.time()))


def sendgrid_events(now: int, good: str, bounced: str) -> list[dict[str, Any]]:
    def ev(sg_id: str, word: str, offset: int, **extra: Any) -> dict[str, Any]:
        return {
            "email": "a@example.com",
            "timestamp": now + offset,
            "event": word,
            "sg_event_id": uuid.uuid4().hex,
            "sg_message_id": sg_id,
            **extra,
        }

    return [
        ev(good, "open", 3),  # late-arriving order: open before delivered
        ev(good, "processed", 0),
        ev(good, "delivered", 2, response="250 OK"),
        ev(good, "click", 4, url="https://example.com/"),
        ev(good, "delivered", 2, response="250 OK"),  # a duplicate, as SendGrid sends them
        ev(bounced, "processed", 0),
        ev(bounced, "deferred", 1, response="450 try later"),
        ev(
            bounced,
            "bounce",
            5,
            status="5.1.1",
            type="bounce",
            reason="550 5.1.1 The email account does not exist",
            bounce_classification="Invalid Address",
        ),
    ]


def sns_now() -> str:
    """SNS stamps a message when it is published: now (the gateway checks the window)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def ses_request(event: dict[str, Any]) -> tuple[str, bytes, dict[str, str]]:
    envelope = ses.notification(
        event, TOPIC, CERT_URL, message_id=str(uuid.uuid4()), timestamp=sns_now()
    )
    body, headers = ses.sign(envelope, SNS_KEY, "2")
    return "/webhooks/ses", body, headers


def ses_event(kind: str, message_id: str, at: float, **details: Any) -> dict[str, Any]:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(at))
    mail = {
        "timestamp": stamp,
        "messageId": message_id,
        "sendingAccountId": "123456789012",
        "source": "sender@example.com",
        "destination": ["recipient@example.com"],
    }
    event: dict[str, Any] = {"eventType": kind, "mail": mail}
    if details:
        event[kind.lower()] = {"timestamp": stamp, **details}
    return event


def mailgun_request(event_data: dict[str, Any]) -> tuple[str, bytes, dict[str, str]]:
    body = mailgun.sign(event_data, MAILGUN_KEY, int(time.time()), uuid.uuid4().hex)
    return "/webhooks/mailgun", body, {"content-type": "application/json"}


def mailgun_event(word: str, message_id: str, at: float, **extra: Any) -> dict[str, Any]:
    return {
        "event": word,
        "timestamp": at,
        "id": uuid.uuid4().hex,
        "recipient": "a@example.com",
        "message": {"headers": {"message-id": message_id}},
        **extra,
    }


def meta_request(messaging: list[dict[str, Any]]) -> tuple[str, bytes, dict[str, str]]:
    body = orjson.dumps(
        {"object": "page", "entry": [{"id": PAGE, "time": 0, "messaging": messaging}]}
    )
    return "/webhooks/meta", body, meta.sign("", body, META_SECRET)


# --- the test -------------------------------------------------------------------------------------


async def test_email_and_messenger_watermarks_end_to_end(kafka, topic_prefix, tmp_path):
    env = base_env(kafka.bootstrap, topic_prefix, tmp_path / "data", **provider_env())
    gateway, url = start_gateway(env, tmp_path)
    worker = start_worker(env, tmp_path, "--no-read-model")
    run = uuid.uuid4().hex[:8]
    now = time.time()
    sg_ok, sg_bounce = f"sg{run}a.filter0001.1.0", f"sg{run}b.filter0001.1.1"
    ses_ok, ses_bounce = f"0100{run}-ok-000000", f"0100{run}-bounce-000000"
    mg_ok, mg_bounce = f"{run}.1@mg.example.com", f"{run}.2@mg.example.com"
    mids = [f"mid.{run}:{i}" for i in range(3)]
    expected = {
        f"sendgrid:{sg_ok}": "read",
        f"sendgrid:{sg_bounce}": "undelivered",
        f"ses:{ses_ok}": "read",
        f"ses:{ses_bounce}": "undelivered",
        f"mailgun:{mg_ok}": "read",
        f"mailgun:{mg_bounce}": "undelivered",
        **{f"meta:{mid}": "read" for mid in mids},
    }
    bounce_category = {
        f"sendgrid:{sg_bounce}": "unreachable",
        f"ses:{ses_bounce}": "unreachable",
        f"mailgun:{mg_bounce}": "unreachable",
    }
    echo_ms = int(now * 1000)
    requests = [
        sendgrid_request(sendgrid_events(int(now), sg_ok, sg_bounce)),
        ses_request(ses_event("Send", ses_ok, now)),
        ses_request(ses_event("Open", ses_ok, now + 3, ipAddress="192.0.2.1")),
        ses_request(ses_event("Delivery", ses_ok, now + 1, recipients=["recipient@example.com"])),
        ses_request(ses_event("Send", ses_bounce, now)),
        ses_request(
            ses_event(
                "Bounce",
                ses_bounce,
                now + 2,
                bounceType="Permanent",
                bounceSubType="NoEmail",
                bouncedRecipients=[
                    {
                        "emailAddress": "recipient@example.com",
                        "status": "5.1.1",
                        "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                    }
                ],
            )
        ),
        ses_request(
            ses_event(
                "Bounce", ses_bounce, now + 1, bounceType="Transient", bounceSubType="MailboxFull"
            )
        ),
        mailgun_request(mailgun_event("accepted", mg_ok, now)),
        mailgun_request(mailgun_event("opened", mg_ok, now + 3)),
        mailgun_request(mailgun_event("delivered", mg_ok, now + 1)),
        mailgun_request(mailgun_event("accepted", mg_bounce, now)),
        mailgun_request(mailgun_event("failed", mg_bounce, now + 1, severity="temporary")),
        mailgun_request(
            mailgun_event(
                "failed",
                mg_bounce,
                now + 2,
                severity="permanent",
                reason="bounce",
                **{"delivery-status": {"code": 550, "message": "5.1.1 mailbox does not exist"}},
            )
        ),
        # Messenger: three echoes of the page's own messages, then one read watermark
        meta_request(
            [
                {
                    "sender": {"id": PAGE},
                    "recipient": {"id": USER},
                    "timestamp": echo_ms + i,
                    "message": {"is_echo": True, "mid": mid, "text": f"hello {i}"},
                }
                for i, mid in enumerate(mids)
            ]
        ),
        meta_request(
            [
                {
                    "sender": {"id": USER},
                    "recipient": {"id": PAGE},
                    "timestamp": echo_ms + 5000,
                    "read": {"watermark": echo_ms + 10},
                }
            ]
        ),
    ]
    try:
        for path, body, headers in requests:
            assert await post(url, path, body, headers) == 200, path

        # verified but never stored: what the gateway must refuse
        path, body, headers = sendgrid_request([{"event": "delivered", "sg_message_id": "x"}])
        tampered = body.replace(b"delivered", b"bounce")
        assert await post(url, path, tampered, headers) == 401
        stranger = ses.notification({}, TOPIC + "-other", CERT_URL, message_id="m")
        body, headers = ses.sign(stranger, SNS_KEY)
        assert await post(url, "/webhooks/ses", body, headers) == 401
        stale = mailgun.sign(mailgun_event("delivered", mg_ok, now), MAILGUN_KEY, 1, "t")
        assert (
            await post(url, "/webhooks/mailgun", stale, {"content-type": "application/json"}) == 401
        )
        # a verified SubscriptionConfirmation is accepted; auto-confirm is off in tests
        confirm = ses.subscription_confirmation(
            TOPIC, CERT_URL, message_id="c", token="t0k", timestamp=sns_now()
        )
        body, headers = ses.sign(confirm, SNS_KEY)
        assert await post(url, "/webhooks/ses", body, headers) == 200
        # LINE: verified and kept, never a status
        line_body = b'{"destination": "U1", "events": [{"type": "follow", "timestamp": 1}]}'
        assert (
            await post(url, "/webhooks/line", line_body, line.sign(line_body, LINE_SECRET)) == 200
        )

        def done(by_key: dict[str, list[dict[str, Any]]]) -> bool:
            return all(last_status(by_key.get(k, [])) == want for k, want in expected.items())

        by_key = await collect(kafka.bootstrap, topic_prefix + "message.status", done, timeout=90)
        wrong = {
            key: (last_status(by_key.get(key, [])), want)
            for key, want in expected.items()
            if last_status(by_key.get(key, [])) != want
        }
        assert not wrong, f"{wrong}\n{worker.log_tail()}"
        assert set(by_key) == set(expected)
        problems = [p for key, events in by_key.items() for p in check_message(key, events)]
        assert not problems, problems[:20]
        for key, category in bounce_category.items():
            (failure,) = [e for e in by_key[key] if e["data"]["status"] == "undelivered"]
            assert failure["data"]["error"]["category"] == category, failure["data"]
            assert failure["data"]["channel"] == "email"
        clicked = [e for e in by_key[f"sendgrid:{sg_ok}"] if e["data"]["status"] == "clicked"]
        assert len(clicked) == 1 and clicked[0]["type"] == "message.engagement"
        for mid in mids:
            # the echo's `sent` and the expanded `read` travel different paths, so `sent`
            # may come first (then read implies delivered) or be implied by the read
            statuses = [e["data"]["status"] for e in by_key[f"meta:{mid}"]]
            assert statuses in (["sent", "read"], ["read"]), statuses
            read = by_key[f"meta:{mid}"][-1]["data"]
            assert "delivered" in read["implied"] and read["channel"] == "messenger"
    finally:
        gateway.stop()
        worker.stop()
    assert not worker.alive() and not gateway.alive()
