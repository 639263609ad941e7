"""SNS signing certificates: where they may come from, fetching and caching them.

The certificate comes only from `https://sns.<region>.amazonaws.com[.cn]/<name>.pem` (an
allow-list, no redirects followed, one spelling per URL), fetched asynchronously by the
gateway before verify() (`prepare()`, `CertificateStore`: one fetch per URL at a time,
rate-limited, cached); MSGSTATUS_SES_SIGNING_CERT_URL + MSGSTATUS_SES_SIGNING_CERT_PEM pin
one certificate instead (offline installs and tests): then nothing is ever fetched and
any other SigningCertURL is refused.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from processors.config import Settings
from processors.providers.base import (
    SignatureError,
    WebhookRequest,
)
from processors.providers.ses.envelope import load_envelope, topic_arns

log = logging.getLogger(__name__)

SNS_HOST_RE = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
CERT_PATH_RE = re.compile(r"^/[A-Za-z0-9._-]{1,128}\.pem$")
FETCH_TIMEOUT = 3.0  # seconds; a fetch happens once per certificate (they rotate rarely)
FETCH_FAILURE_TTL = 300.0  # a failed URL is not retried for 5 minutes
FETCH_RATE = 6  # certificate fetches per minute, all URLs together
MAX_CERT_BYTES = 65_536
MAX_CACHED = 256  # good keys (SNS has one certificate per region and rotation)
MAX_FAILED = 1024  # failed URLs remembered (their retry delay), apart from good keys

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
    envelope = load_envelope(request.body)
    if envelope is None or pinned(settings) is not None:
        return
    topic = envelope.get("TopicArn")
    if not isinstance(topic, str) or topic not in topic_arns(settings):
        return
    url = certificate_url(envelope.get("SigningCertURL"))
    if url is not None:
        await CERTIFICATES.ensure(url)
