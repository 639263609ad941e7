"""Amazon SES notifications delivered by Amazon SNS (HTTP/S subscription): the provider.

SNS POSTs a JSON envelope (with `Content-Type: text/plain`) whose `Message` is the SES
event as a JSON string. The envelope carries its own RSA signature (signature.py) made
with a certificate that comes only from SNS (certificates.py, fetched by the gateway
before verify() through `prepare()`); a SubscriptionConfirmation is verified like a
notification and, once stored, confirmed in the background (subscription.py, the
`after_stored` hook). The SES events map onto canonical statuses in mapping.py.
"""

from __future__ import annotations

from processors.config import Settings
from processors.providers.coverage import DRR, Coverage
from processors.providers.ses.certificates import prepare
from processors.providers.ses.envelope import NAME, SECRET, topic_arns
from processors.providers.ses.mapping import STATUS_MAP, parse
from processors.providers.ses.signature import (
    notification,
    replay_key,
    self_signed_certificate,
    sign,
    subscription_confirmation,
    verify,
)
from processors.providers.ses.subscription import schedule_confirmation

CONTENT_TYPES: tuple[str, ...] = ("text/plain", "application/json")
FRAMING = "json"
# The proof is inside the body; these SNS headers are kept as context only.
SIGNATURE_HEADERS: tuple[str, ...] = (
    "x-amz-sns-message-type",
    "x-amz-sns-message-id",
    "x-amz-sns-topic-arn",
)
# Channels, signature and receipts as `msgstatus providers` and the README show them.
COVERAGE = Coverage(
    channels=("email",),
    signature="SNS message signature (RSA, certificate from SNS)",
    receipts={"email": DRR},
    extra_statuses=("undelivered",),
)


def enabled(settings: Settings) -> bool:
    return bool(topic_arns(settings))


# The gateway calls it once a verified request is stored, before answering 200.
after_stored = schedule_confirmation

__all__ = [
    "CONTENT_TYPES",
    "COVERAGE",
    "FRAMING",
    "NAME",
    "SECRET",
    "SIGNATURE_HEADERS",
    "STATUS_MAP",
    "after_stored",
    "enabled",
    "notification",
    "parse",
    "prepare",
    "replay_key",
    "self_signed_certificate",
    "sign",
    "subscription_confirmation",
    "verify",
]
