"""Amazon SES notifications delivered by Amazon SNS (HTTP/S subscription).

SNS POSTs a JSON envelope (with `Content-Type: text/plain`) whose `Message` is the SES
event as a JSON string. The envelope carries its own RSA signature, verified as AWS
documents it ("Verifying the signatures of Amazon SNS messages"):
- the string to sign is `Key\\nValue\\n` for Message, MessageId, Subject (only when
  present), Timestamp, TopicArn, Type (Notification), or Message, MessageId,
  SubscribeURL, Timestamp, Token, TopicArn, Type (Subscription/UnsubscribeConfirmation);
- SignatureVersion 1 is SHA1withRSA, 2 is SHA256withRSA, over that string;
- the certificate comes only from `https://sns.<region>.amazonaws.com[.cn]/<name>.pem`
  (an allow-list, no redirects followed, one spelling per URL), fetched asynchronously
  by the gateway before verify() (`prepare()`, `CertificateStore`: one fetch per URL at
  a time, rate-limited, cached); MSGSTATUS_SES_SIGNING_CERT_URL +
  MSGSTATUS_SES_SIGNING_CERT_PEM pin one certificate instead (offline installs and
  tests): then nothing is ever fetched and any other SigningCertURL is refused;
- TopicArn must be one of MSGSTATUS_SES_TOPIC_ARN (comma-separated allow-list);
- `Timestamp` must be within the replay window of when the gateway received the POST,
  a window of at least an hour: SNS retries with the original Timestamp.

A SubscriptionConfirmation is verified like a notification; `subscribe_url()` says where
the confirming GET goes and the gateway performs it in the background
(MSGSTATUS_SES_AUTO_CONFIRM=0 turns that off: confirm by hand with the URL then).

Key: `mail.messageId` (one SES message, all its recipients); channel email.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import logging
import re
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from processors.config import Settings
from processors.model import CanonicalEvent, ErrorInfo
from processors.providers import common, email_errors
from processors.providers.base import (
    DeadItem,
    FramingError,
    ParseResult,
    SignatureError,
    WebhookRequest,
)
from processors.providers.coverage import DRR, Coverage
from processors.providers.freshness import require_fresh
from processors.providers.replay import ReplayKey, usable_key, window_ttl

log = logging.getLogger(__name__)

NAME = "ses"
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
SECRET = "SES_TOPIC_ARN"
CHANNEL = "email"

SNS_HOST_RE = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
CERT_PATH_RE = re.compile(r"^/[A-Za-z0-9._-]{1,128}\.pem$")
NOTIFICATION = "Notification"
CONFIRMATIONS = frozenset({"SubscriptionConfirmation", "UnsubscribeConfirmation"})
SIGNED_FIELDS: dict[str, tuple[str, ...]] = {
    NOTIFICATION: ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
    "UnsubscribeConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
OPTIONAL_SIGNED_FIELDS = frozenset({"Subject"})
HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}

FETCH_TIMEOUT = 3.0  # seconds; a fetch happens once per certificate (they rotate rarely)
FETCH_FAILURE_TTL = 300.0  # a failed URL is not retried for 5 minutes
FETCH_RATE = 6  # certificate fetches per minute, all URLs together
MAX_CERT_BYTES = 65_536
MAX_CACHED = 256  # good keys (SNS has one certificate per region and rotation)
MAX_FAILED = 1024  # failed URLs remembered (their retry delay), apart from good keys
SNS_MIN_WINDOW = 3600.0
CONFIRM_TIMEOUT = 5.0

# `eventType` (event publishing) or `notificationType` (identity feedback), lower-cased.
STATUS_MAP: dict[str, str] = {
    "send": "sent",
    "delivery": "delivered",
    "reject": "rejected",
    "complaint": "complained",
    "open": "read",
    "click": "clicked",
    "rendering failure": "failed",  # template rendering failed: SES sent nothing
}
# DeliveryDelay: SES keeps retrying and reports the outcome; Subscription: the recipient
# changed list preferences; AmazonSnsSubscriptionSucceeded: SES's set-up notice.
IGNORED_EVENTS: frozenset[str] = frozenset(
    {"deliverydelay", "subscription", "amazonsnssubscriptionsucceeded"}
)
EVENTS = common.StatusTable(STATUS_MAP, IGNORED_EVENTS)
BOUNCE_EVENT = "bounce"
# bounce.bounceType: Permanent (hard) is final; Transient (soft) means SES may still
# deliver, so it changes nothing; Undetermined is a bounce SES could not classify.
BOUNCES = common.StatusTable(
    {"permanent": "undelivered", "undetermined": "undelivered"}, frozenset({"transient"})
)
# Complaint feedback type "not-spam": the recipient said the mail is NOT spam.
IGNORED_COMPLAINTS: frozenset[str] = frozenset({"not-spam"})
# The object holding an event's details (and its timestamp), by event word.
EVENT_OBJECTS: dict[str, str] = {
    "send": "send",
    "delivery": "delivery",
    "reject": "reject",
    "complaint": "complaint",
    "open": "open",
    "click": "click",
    "rendering failure": "failure",
    "bounce": "bounce",
}
# bounce.bounceSubType -> (category, description). General/Undetermined say nothing
# themselves: the recipient's SMTP status and diagnostic decide (email_errors).
BOUNCE_SUBTYPES: dict[str, tuple[str, str]] = dict(
    common.check_error_table(
        {
            "NoEmail": ("unreachable", "The recipient's email address does not exist"),
            "Suppressed": ("unreachable", "On the SES suppression list after hard bounces"),
            "OnAccountSuppressionList": ("opted_out", "On the account-level suppression list"),
            "MailboxFull": ("unreachable", "The recipient's mailbox is full"),
            "MessageTooLarge": ("content_rejected", "The message is too large"),
            "ContentRejected": ("content_rejected", "The recipient refused the content"),
            "AttachmentRejected": ("content_rejected", "The recipient refused an attachment"),
        }
    )
)
REJECT_REASONS: dict[str, tuple[str, str]] = dict(
    common.check_error_table({"bad content": ("content_rejected", "The message has a virus")})
)


def topic_arns(settings: Settings) -> frozenset[str]:
    raw = settings.secret(SECRET) or ""
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


def enabled(settings: Settings) -> bool:
    return bool(topic_arns(settings))


# --- URLs -------------------------------------------------------------------------------


def _clean_url(url: Any) -> str | None:
    """`url` if it is a plausible URL string: bounded, ASCII, no whitespace or control
    characters (urlsplit silently drops tabs and newlines: one URL, many spellings)."""
    if not isinstance(url, str) or not url or len(url) > 2048:
        return None
    if not url.isascii() or not url.isprintable() or " " in url:
        return None
    return url


def sns_host(url: Any) -> str | None:
    """The host of an `https://sns.<region>.amazonaws.com[.cn]/...` URL, else None."""
    url = _clean_url(url)
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname or ""
    if parts.scheme != "https" or parts.username or parts.password or port not in (None, 443):
        return None
    if parts.netloc.lower() not in (host, f"{host}:443") or not SNS_HOST_RE.fullmatch(host):
        return None
    return host


def certificate_url(url: Any) -> str | None:
    """The one spelling of an allow-listed certificate URL (`https://<host lower-case>
    /<name>.pem`, no port), or None: the cache and the pinned URL compare this form."""
    host = sns_host(url)
    if host is None:
        return None
    parts = urlsplit(url)
    if not CERT_PATH_RE.fullmatch(parts.path) or parts.query or parts.fragment:
        return None
    if "?" in url or "#" in url:
        return None
    return f"https://{host}{parts.path}"


def certificate_url_allowed(url: Any) -> bool:
    return certificate_url(url) is not None


# --- certificates ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def load_certificate_key(pem: str) -> rsa.RSAPublicKey:
    """The RSA public key of a PEM certificate; ValueError otherwise."""
    text_pem = pem.replace("\\n", "\n").strip()  # env files often hold `\n` escapes
    try:
        cert = x509.load_pem_x509_certificate(text_pem.encode())
    except ValueError:
        raise ValueError("not a PEM X.509 certificate") from None
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the certificate's key is not RSA")
    return key


async def fetch_certificate(url: str) -> str:
    """GET the PEM from an allow-listed SNS URL (timeout, no redirects, size cap).

    Only the gateway calls this, through CERTIFICATES, and only for a URL nobody pinned;
    tests pin their certificate or give the store another fetcher, so they never go out.
    """
    import aiohttp

    clean = certificate_url(url)
    if clean is None:
        raise ValueError("certificate URL is not an SNS URL")
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(clean, allow_redirects=False, headers={"User-Agent": "msgstatus"}) as answer,
    ):
        if answer.status != 200:
            raise ValueError(f"certificate URL answered HTTP {answer.status}")
        body = await answer.content.read(MAX_CERT_BYTES + 1)
    if len(body) > MAX_CERT_BYTES:
        raise ValueError("certificate larger than expected")
    return body.decode("ascii", "replace")


Fetcher = Callable[[str], Awaitable[str]]


class CertificateStore:
    """SNS signing keys by normalised certificate URL, fetched off the request path.

    `verify()` is synchronous and only reads `key()`; the gateway awaits `prepare()`
    first, which fetches a missing certificate: one fetch per URL at a time (concurrent
    requests wait for the same one), at most FETCH_RATE fetches per minute overall, a
    failed URL not retried for FETCH_FAILURE_TTL. Good keys and failures are kept apart
    (bounded each, least recently used first out), so bogus URLs cannot push out the
    certificate SNS really signs with.
    """

    def __init__(self, fetcher: Fetcher | None = None) -> None:
        self.fetcher: Fetcher = fetcher or fetch_certificate
        self._keys: OrderedDict[str, rsa.RSAPublicKey] = OrderedDict()
        self._failed: OrderedDict[str, float] = OrderedDict()  # url -> retry at (monotonic)
        self._inflight: dict[str, asyncio.Future[None]] = {}
        self._fetches: deque[float] = deque()  # monotonic times of recent fetches

    def key(self, url: str) -> rsa.RSAPublicKey | None:
        key = self._keys.get(url)
        if key is not None:
            self._keys.move_to_end(url)
        return key

    def _allowed_now(self, url: str, now: float) -> str | None:
        """Why `url` may not be fetched now, or None."""
        retry_at = self._failed.get(url)
        if retry_at is not None and now < retry_at:
            return "a recent fetch failed"
        while self._fetches and now - self._fetches[0] > 60.0:
            self._fetches.popleft()
        if len(self._fetches) >= FETCH_RATE:
            return "too many certificate fetches in the last minute"
        return None

    async def ensure(self, url: str) -> None:
        """Fetch `url` unless it is cached, failing or over the rate; never raises
        (verify() then says the certificate is unavailable)."""
        if url in self._keys:
            return
        running = self._inflight.get(url)
        if running is not None:
            await asyncio.shield(running)
            return
        now = time.monotonic()
        refused = self._allowed_now(url, now)
        if refused is not None:
            log.debug("not fetching SNS certificate %s: %s", url, refused)
            return
        self._fetches.append(now)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inflight[url] = done
        try:
            pem = await asyncio.wait_for(self.fetcher(url), FETCH_TIMEOUT + 1)
            self._remember_key(url, load_certificate_key(pem))
            self._failed.pop(url, None)
        except Exception as exc:  # network, TLS, HTTP status, PEM: all mean "cannot verify"
            log.warning("cannot fetch SNS signing certificate %s: %s", url, exc)
            self._failed[url] = time.monotonic() + FETCH_FAILURE_TTL
            self._failed.move_to_end(url)
            while len(self._failed) > MAX_FAILED:
                self._failed.popitem(last=False)
        finally:
            del self._inflight[url]
            done.set_result(None)

    def _remember_key(self, url: str, key: rsa.RSAPublicKey) -> None:
        self._keys[url] = key
        self._keys.move_to_end(url)
        while len(self._keys) > MAX_CACHED:
            self._keys.popitem(last=False)


CERTIFICATES = CertificateStore()


def pinned(settings: Settings) -> tuple[str, str] | None:
    """(normalised URL, PEM) of the pinned certificate, when one is configured."""
    options = settings.provider_options
    if not options.ses_signing_cert_pem:
        return None
    return certificate_url(options.ses_signing_cert_url) or "", options.ses_signing_cert_pem


def certificate_key(url: str, settings: Settings) -> rsa.RSAPublicKey:
    """The signing key for a normalised certificate URL: pinned or already fetched."""
    pin = pinned(settings)
    if pin is not None:
        if url != pin[0]:
            raise SignatureError(
                "SigningCertURL is not the pinned certificate (MSGSTATUS_SES_SIGNING_CERT_URL)"
            )
        try:
            return load_certificate_key(pin[1])
        except ValueError as exc:
            raise SignatureError(f"MSGSTATUS_SES_SIGNING_CERT_PEM is unusable: {exc}") from None
    key = CERTIFICATES.key(url)
    if key is None:
        raise SignatureError("SNS signing certificate unavailable (not fetched, or fetch failed)")
    return key


async def prepare(request: WebhookRequest, settings: Settings) -> None:
    """Before verify(), in the gateway: fetch the signing certificate the envelope names,
    if it is for an allow-listed topic, not pinned and not cached yet."""
    envelope = _envelope(request.body)
    if envelope is None or pinned(settings) is not None:
        return
    topic = envelope.get("TopicArn")
    if not isinstance(topic, str) or topic not in topic_arns(settings):
        return
    url = certificate_url(envelope.get("SigningCertURL"))
    if url is not None:
        await CERTIFICATES.ensure(url)


# --- signature ----------------------------------------------------------------------------


def string_to_sign(envelope: Mapping[str, Any]) -> bytes:
    """AWS's canonical string for the envelope's Type; ValueError when a field is missing."""
    kind = envelope.get("Type")
    fields = SIGNED_FIELDS.get(kind) if isinstance(kind, str) else None
    if fields is None:
        raise ValueError("unknown SNS message Type")
    out: list[str] = []
    for name in fields:
        value = envelope.get(name)
        if value is None and name in OPTIONAL_SIGNED_FIELDS:
            continue
        if not isinstance(value, str):
            raise ValueError(f"SNS message field {name} is missing or not a string")
        out.append(f"{name}\n{value}\n")
    return "".join(out).encode("utf-8", "surrogatepass")


def _envelope(body: bytes) -> dict[str, Any] | None:
    try:
        data = orjson.loads(body)
    except (orjson.JSONDecodeError, ValueError, TypeError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def verify(request: WebhookRequest, settings: Settings) -> None:
    """SNS signature, certificate origin, TopicArn allow-list and replay window; raises
    SignatureError only. Never fetches: the gateway's prepare() did that."""
    allowed = topic_arns(settings)
    if not allowed:
        raise SignatureError("ses is not configured (MSGSTATUS_SES_TOPIC_ARN unset)")
    envelope = _envelope(request.body)
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
    envelope = _envelope(request.body)
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


# --- subscription confirmation ----------------------------------------------------------------


def subscribe_url(request: WebhookRequest) -> str | None:
    """The SubscribeURL of a SubscriptionConfirmation, only if it is an SNS confirm URL."""
    envelope = _envelope(request.body)
    if envelope is None or envelope.get("Type") != "SubscriptionConfirmation":
        return None
    url = envelope.get("SubscribeURL")
    if sns_host(url) is None:
        return None
    query = parse_qs(urlsplit(url).query)
    if query.get("Action") != ["ConfirmSubscription"]:
        return None
    return url


def auto_confirm_url(request: WebhookRequest, settings: Settings) -> str | None:
    """Where the gateway should GET to confirm (call only after verify()), or None.

    None when MSGSTATUS_SES_AUTO_CONFIRM is 0/false/no/off, when the body is no
    SubscriptionConfirmation of an allow-listed topic, or its URL is not an SNS URL.
    """
    if not settings.provider_options.ses_auto_confirm:
        return None
    envelope = _envelope(request.body)
    if envelope is None or envelope.get("TopicArn") not in topic_arns(settings):
        return None
    return subscribe_url(request)


async def confirm_subscription(url: str) -> bool:
    """GET the SubscribeURL (5 s timeout); logs the outcome, never raises."""
    import aiohttp

    host = sns_host(url)
    if host is None:
        log.warning("not confirming SNS subscription: URL is not an SNS URL")
        return False
    try:
        timeout = aiohttp.ClientTimeout(total=CONFIRM_TIMEOUT)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url, allow_redirects=False) as answer,
        ):
            status = answer.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        log.warning("SNS subscription confirmation via %s failed: %s", host, exc)
        return False
    if status == 200:
        log.warning("SNS subscription confirmed via %s", host)
        return True
    log.warning("SNS subscription confirmation via %s answered HTTP %s", host, status)
    return False


_BACKGROUND: set[asyncio.Task[bool]] = set()


def schedule_confirmation(request: WebhookRequest, settings: Settings) -> bool:
    """From the gateway, after a verified and stored request (its `after_stored` hook): a
    SubscriptionConfirmation is confirmed in the background, so the 200 is not delayed.
    MSGSTATUS_SES_AUTO_CONFIRM=0 turns it off."""
    url = auto_confirm_url(request, settings)
    if url is None:
        return False
    task = asyncio.get_running_loop().create_task(confirm_subscription(url))
    _BACKGROUND.add(task)  # keep a reference until done (the loop holds only weak ones)
    task.add_done_callback(_BACKGROUND.discard)
    return True


# --- parsing ----------------------------------------------------------------------------


def _first_recipient(bounce: Mapping[str, Any]) -> Mapping[str, Any]:
    recipients = common.items(bounce.get("bouncedRecipients"))
    return common.mapping(recipients[0]) if recipients else {}


def bounce_error(bounce: Mapping[str, Any]) -> ErrorInfo:
    subtype = common.text(bounce.get("bounceSubType"), max_len=64)
    recipient = _first_recipient(bounce)
    status = common.text(recipient.get("status"), max_len=64)
    diagnostic = common.text(recipient.get("diagnosticCode"), max_len=2048)
    if subtype in BOUNCE_SUBTYPES:
        category, generic = BOUNCE_SUBTYPES[subtype]
    else:
        category, generic = email_errors.classify(status, diagnostic) or "unknown", None
    return ErrorInfo(code=subtype or status, category=category, description=diagnostic or generic)


def reject_error(reject: Mapping[str, Any]) -> ErrorInfo:
    reason = common.text(reject.get("reason"), max_len=1024)
    key = (reason or "").lower()
    if key in REJECT_REASONS:
        category, generic = REJECT_REASONS[key]
    else:
        category, generic = email_errors.classify(reason) or "unknown", None
    return ErrorInfo(code=None, category=category, description=reason or generic)


def rendering_error(failure: Mapping[str, Any]) -> ErrorInfo:
    description = common.text(failure.get("errorMessage"), max_len=2048)
    return ErrorInfo(code=None, category="content_rejected", description=description)


def _event(result: ParseResult, request: WebhookRequest, event: Mapping[str, Any]) -> None:
    word = common.text(event.get("eventType"), max_len=64) or common.text(
        event.get("notificationType"), max_len=64
    )
    if word is None:
        result.dead.append(DeadItem("SES notification without eventType/notificationType", event))
        return
    key = word.lower()
    details = common.mapping(event.get(EVENT_OBJECTS.get(key, key)))
    error: ErrorInfo | None = None
    provider_status = word
    if key == BOUNCE_EVENT:
        bounce_type = common.text(details.get("bounceType"), max_len=64)
        if bounce_type is None:
            result.dead.append(DeadItem("SES bounce without bounceType", event))
            return
        # an ignored (soft) bounce: SES may still deliver
        status = BOUNCES.resolve(
            bounce_type, result, event, f"unknown SES bounceType {bounce_type!r}"
        )
        if status is None:
            return
        provider_status = f"{word}/{bounce_type}"
        error = bounce_error(details)
    else:
        status = EVENTS.resolve(word, result, event, f"unknown SES event type {word!r}")
        if status is None:
            return
        feedback = (common.text(details.get("complaintFeedbackType")) or "").lower()
        if key == "complaint" and feedback in IGNORED_COMPLAINTS:
            result.ignored += 1
            return
        if key == "reject":
            error = reject_error(details)
        elif key == "rendering failure":
            error = rendering_error(details)
    mail = common.mapping(event.get("mail"))
    message_id = common.text(mail.get("messageId"), max_len=256)
    if message_id is None:
        result.dead.append(DeadItem("SES notification without mail.messageId", event))
        return
    occurred = common.event_time(details.get("timestamp"))
    if occurred is None:
        occurred = common.event_time(mail.get("timestamp"))
    result.events.append(
        CanonicalEvent(
            provider=NAME,
            provider_message_id=message_id,
            status=status,
            provider_status=provider_status,
            channel=CHANNEL,
            observed_at=request.received_at,
            occurred_at=occurred,
            account=common.text(mail.get("sendingAccountId"), max_len=64),
            error=error,
            polled=request.polled,
        )
    )


@common.guarded
def parse(request: WebhookRequest) -> ParseResult:
    """An SNS envelope -> at most one event; FramingError when it is no SNS message."""
    data = common.load_json(request.body)
    if not isinstance(data, dict) or not isinstance(data.get("Type"), str):
        raise FramingError("body must be an SNS message: a JSON object with a Type")
    result = ParseResult()
    kind = data["Type"]
    if kind in CONFIRMATIONS:
        result.ignored += 1  # handled by the gateway (subscribe_url), no message status
        return result
    if kind != NOTIFICATION:
        result.dead.append(DeadItem(f"unknown SNS message Type {kind[:64]!r}", data))
        return result
    message = data.get("Message")
    if not isinstance(message, str):
        result.dead.append(DeadItem("SNS notification without a Message string", data))
        return result
    try:
        event = orjson.loads(message)
    except (orjson.JSONDecodeError, ValueError, TypeError, RecursionError):
        result.ignored += 1  # plain-text test/set-up messages published to the topic
        return result
    if not isinstance(event, dict):
        result.dead.append(DeadItem("SES notification Message is not a JSON object", data))
        return result
    _event(result, request, event)
    return result


# The gateway calls it once a verified request is stored, before answering 200.
after_stored = schedule_confirmation
