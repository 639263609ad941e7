"""JSON Web Tokens signed with an HMAC (HS256/384/512), written out with `hmac`.

Vonage's Messages API (`Authorization: Bearer <JWT>`) and MessageBird's legacy
`MessageBird-Signature-JWT` sign webhooks this way. The whole of RFC 7519 is not needed:
a token is `base64url(header).base64url(claims).base64url(HMAC(secret, first two parts))`.
What matters is what a verifier must refuse: any `alg` it did not ask for (`none`, RSA
algorithms whose "key" would be our secret), a MAC that does not match in constant time,
and anything that is not three base64url parts holding JSON objects. Claims are checked by
the caller (each provider signs different ones).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from processors.providers.base import SignatureError

DIGESTS: dict[str, str] = {"HS256": "sha256", "HS384": "sha384", "HS512": "sha512"}
MAX_TOKEN = 8192


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    """Strict base64url without padding; ValueError otherwise."""
    if not text.isascii() or "=" in text:
        raise ValueError("not base64url")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except binascii.Error as exc:
        raise ValueError("not base64url") from exc


def calculate_signature(secret: str | bytes, signing_input: bytes, alg: str = "HS256") -> str:
    """The third part of a token: base64url(HMAC(secret, `header.claims`))."""
    key = secret.encode() if isinstance(secret, str) else secret
    return b64url(hmac.new(key, signing_input, getattr(hashlib, DIGESTS[alg])).digest())


def encode(claims: Mapping[str, Any], secret: str | bytes, alg: str = "HS256") -> str:
    """A signed token (tests and the demo sender sign with this, never pasted tokens)."""
    header = b64url(orjson.dumps({"alg": alg, "typ": "JWT"}))
    payload = b64url(orjson.dumps(dict(claims)))
    signing_input = f"{header}.{payload}".encode("ascii")
    return f"{header}.{payload}.{calculate_signature(secret, signing_input, alg)}"


def _object(part: str, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(unb64url(part))
    except (ValueError, orjson.JSONDecodeError):
        raise SignatureError(f"JWT {what} is not base64url JSON") from None
    if not isinstance(value, dict):
        raise SignatureError(f"JWT {what} is not a JSON object")
    return value


def claims_of(token: str) -> dict[str, Any] | None:
    """The claims of a token without checking it: only for tokens verified before (the
    gateway did), e.g. to read the account a stored request was signed for."""
    parts = token.split(".")
    if len(parts) != 3 or len(token) > MAX_TOKEN:
        return None
    try:
        return _object(parts[1], "claims")
    except SignatureError:
        return None


def verify(
    token: str, secrets: Iterable[str | bytes], algorithms: tuple[str, ...] = ("HS256",)
) -> dict[str, Any]:
    """The token's claims if any of `secrets` signed it with one of `algorithms`;
    SignatureError otherwise (every secret is compared, no early exit)."""
    if len(token) > MAX_TOKEN:
        raise SignatureError("JWT too long")
    if not token.isascii():
        raise SignatureError("not a JWT (non-ASCII characters)")
    parts = token.strip().split(".")
    if len(parts) != 3 or not all(parts):
        raise SignatureError("not a JWT (expected three base64url parts)")
    header = _object(parts[0], "header")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms or alg not in DIGESTS:
        raise SignatureError(f"JWT alg must be one of {', '.join(algorithms)}")
    try:
        given = unb64url(parts[2])
    except ValueError:
        raise SignatureError("JWT signature is not base64url") from None
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    found = False
    for secret in secrets:
        expected = unb64url(calculate_signature(secret, signing_input, alg))
        found |= hmac.compare_digest(expected, given)
    if not found:
        raise SignatureError("JWT signature does not match")
    return _object(parts[1], "claims")


def number(claims: Mapping[str, Any], name: str) -> float | None:
    """A NumericDate claim (`iat`, `nbf`, `exp`) as float seconds; None when absent or
    not a finite number (booleans are not numbers here)."""
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if value != value or value in (float("inf"), float("-inf")):
        return None
    return float(value)
