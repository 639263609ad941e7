"""Verifying an SNS envelope as AWS documents it ("Verifying the signatures of Amazon SNS
messages"), and signing one like SNS does (tests and the demo sender).

- the string to sign is `Key\\nValue\\n` for Message, MessageId, Subject (only when
  present), Timestamp, TopicArn, Type (Notification), or Message, MessageId,
  SubscribeURL, Timestamp, Token, TopicArn, Type (Subscription/UnsubscribeConfirmation);
- SignatureVersion 1 is SHA1withRSA, 2 is SHA256withRSA, over that string;
- TopicArn must be one of MSGSTATUS_SES_TOPIC_ARN (comma-separated allow-list);
- `Timestamp` must be within the replay window of when the gateway received the POST,
  a window of at least an hour: SNS retries with the original Timestamp.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

import orjson
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from processors.config import Settings
from processors.providers import common
from processors.providers.base import (
    SignatureError,
    WebhookRequest,
)
from processors.providers.freshness import require_fresh
from processors.providers.replay import ReplayKey, usable_key, window_ttl
from processors.providers.ses.certificates import certificate_key, certificate_url, sns_host
from processors.providers.ses.envelope import (
    CONFIRMATIONS,
    NOTIFICATION,
    load_envelope,
    string_to_sign,
    topic_arns,
)

HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
SNS_MIN_WINDOW = 3600.0


def verify(request: WebhookRequest, settings: Settings) -> None:
    """SNS signature, certificate origin, TopicArn allow-list and replay window; raises
    SignatureError only. Never fetches: the gateway's prepare() did that."""
    allowed = topic_arns(settings)
    if not allowed:
        raise SignatureError("ses is not configured (MSGSTATUS_SES_TOPIC_ARN unset)")
    envelope = load_envelope(request.body)
    if envelope is None:
        raise SignatureError("body is not an SNS message (a JSON object)")
    kind = envelope.get("Type")
    if not isinstance(kind, str) or (kind != NOTIFICATION and kind not in CONFIRMATIONS):
        raise SignatureError("not an SNS Notification or (Un)SubscriptionConfirmation")
    topic = envelope.get("TopicArn")
    if not isinstance(topic, str) or topic not in allowed:
        raise SignatureError("TopicArn is not in MSGSTATUS_SES_TOPIC_ARN")
    version = envelope.get("SignatureVersion")
    if not isinstance(version, str) or version not in HASHES:
        raise SignatureError("SignatureVersion must be 1 or 2")
    cert_url = certificate_url(envelope.get("SigningCertURL"))
    if cert_url is None:
        raise SignatureError("SigningCertURL is not an https://sns.<region>.amazonaws.com URL")
    try:
        signed = string_to_sign(envelope)
        signature = base64.b64decode(str(envelope.get("Signature") or ""), validate=True)
    except (ValueError, binascii.Error) as exc:
        raise SignatureError(f"cannot verify: {exc}") from None
    if not signature:
        raise SignatureError("SNS message without a Signature")
    key = certificate_key(cert_url, settings)
    try:
        key.verify(signature, signed, padding.PKCS1v15(), HASHES[version]())
    except (InvalidSignature, ValueError):
        raise SignatureError("SNS message signature does not match") from None
    require_fresh(
        common.event_time(envelope.get("Timestamp")),
        request.received_at,
        sns_window(settings),
        "SNS Timestamp",
    )


def sns_window(settings: Settings) -> float:
    """SNS retries a notification with its original Timestamp for up to an hour (the
    longest HTTP delivery policy), so its window is never shorter than that."""
    window = settings.replay_window
    return max(window, SNS_MIN_WINDOW) if window > 0 else 0.0


def replay_key(request: WebhookRequest, settings: Settings) -> ReplayKey | None:
    """SNS redelivers a message with its MessageId: a copy already stored is answered
    200 without being written again."""
    envelope = load_envelope(request.body)
    key = usable_key(envelope.get("MessageId")) if envelope else None
    if key is None:
        return None
    return ReplayKey(key, window_ttl(sns_window(settings)))


# --- signing helpers (tests and the demo sender) ------------------------------------------


def notification(
    message: Mapping[str, Any] | str,
    topic_arn: str,
    cert_url: str,
    *,
    message_id: str,
    timestamp: str = "2026-04-28T18:13:20.000Z",
    subject: str | None = None,
) -> dict[str, Any]:
    """An unsigned SNS Notification envelope around an SES event."""
    body = message if isinstance(message, str) else orjson.dumps(dict(message)).decode()
    envelope: dict[str, Any] = {
        "Type": NOTIFICATION,
        "MessageId": message_id,
        "TopicArn": topic_arn,
        "Message": body,
        "Timestamp": timestamp,
        "SigningCertURL": cert_url,
        "UnsubscribeURL": f"https://{sns_host(cert_url) or 'sns.invalid'}/?Action=Unsubscribe",
    }
    if subject is not None:
        envelope["Subject"] = subject
    return envelope


def subscription_confirmation(
    topic_arn: str,
    cert_url: str,
    *,
    message_id: str,
    token: str,
    timestamp: str = "2026-04-28T18:13:20.000Z",
) -> dict[str, Any]:
    """An unsigned SubscriptionConfirmation envelope, as SNS sends on Subscribe."""
    host = sns_host(cert_url) or "sns.invalid"
    return {
        "Type": "SubscriptionConfirmation",
        "MessageId": message_id,
        "Token": token,
        "TopicArn": topic_arn,
        "Message": f"You have chosen to subscribe to the topic {topic_arn}.\n"
        "To confirm the subscription, visit the SubscribeURL included in this message.",
        "SubscribeURL": f"https://{host}/?Action=ConfirmSubscription&TopicArn={topic_arn}"
        f"&Token={token}",
        "Timestamp": timestamp,
        "SigningCertURL": cert_url,
    }


def sign_envelope(
    envelope: Mapping[str, Any], private_key: rsa.RSAPrivateKey, version: str = "1"
) -> dict[str, Any]:
    """A copy of `envelope` with SignatureVersion and Signature as SNS computes them."""
    signed = {**envelope, "SignatureVersion": version}
    raw = private_key.sign(string_to_sign(signed), padding.PKCS1v15(), HASHES[version]())
    signed["Signature"] = base64.b64encode(raw).decode()
    return signed


def sign(
    envelope: Mapping[str, Any], private_key: rsa.RSAPrivateKey, version: str = "1"
) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of a genuine SNS POST for `envelope`."""
    signed = sign_envelope(envelope, private_key, version)
    return orjson.dumps(signed), {
        "content-type": "text/plain; charset=UTF-8",
        "x-amz-sns-message-type": str(signed.get("Type")),
        "x-amz-sns-message-id": str(signed.get("MessageId")),
        "x-amz-sns-topic-arn": str(signed.get("TopicArn")),
    }


def self_signed_certificate(private_key: rsa.RSAPrivateKey, days: int = 3650) -> str:
    """A PEM certificate for `private_key`, to pre-seed MSGSTATUS_SES_SIGNING_CERT_PEM."""
    import datetime as _dt

    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = _dt.datetime.now(_dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(days=1))
        .not_valid_after(now + _dt.timedelta(days=days))
        .sign(private_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()
