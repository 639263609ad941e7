"""Provider registry: every provider module imported below is served, keyed by its NAME.

Enabling a provider is one import line (like courier's blank handler imports); the
registry collects every imported module that has the Provider attributes, and refuses
at import time a module that has only some of them or a NAME used twice.
"""

from __future__ import annotations

from types import ModuleType

from processors.providers import events, meta, ryze, twilio  # noqa: F401  (one per provider)

# email and LINE providers (a line of their own: parallel edits stay merge-free)
from processors.providers import line, mailgun, sendgrid, ses  # noqa: F401  # isort: skip

# SMS, WhatsApp-partner and TikTok providers (a line of their own, same reason)
from processors.providers import bandwidth, dialog360, infobip, octopods  # noqa: F401  # isort: skip
from processors.providers import plivo, sinch, smpp, tiktok, tracksend, vonage  # noqa: F401  # isort: skip

# issue 16 providers (a line each: parallel edits stay merge-free)
from processors.providers import vonage_messages  # noqa: F401  # isort: skip
from processors.providers import telnyx  # noqa: F401  # isort: skip
from processors.providers import bird  # noqa: F401  # isort: skip
from processors.providers import postmark  # noqa: F401  # isort: skip
from processors.providers import brevo  # noqa: F401  # isort: skip
from processors.providers import africastalking  # noqa: F401  # isort: skip
from processors.providers import gupshup  # noqa: F401  # isort: skip
from processors.config import ConfigError, Settings
from processors.providers.base import Polling, Provider
from processors.providers.coverage import Coverage

_REQUIRED = (
    "NAME",
    "CONTENT_TYPES",
    "FRAMING",
    "SIGNATURE_HEADERS",
    "COVERAGE",
    "enabled",
    "verify",
    "parse",
)


def _collect(namespace: dict[str, object]) -> dict[str, Provider]:
    registry: dict[str, Provider] = {}
    for module in namespace.values():
        if not isinstance(module, ModuleType) or not hasattr(module, "NAME"):
            continue
        missing = [attr for attr in _REQUIRED if not hasattr(module, attr)]
        if missing:
            raise TypeError(f"provider module {module.__name__} lacks {', '.join(missing)}")
        if module.FRAMING not in ("json", "form"):
            raise TypeError(f"provider module {module.__name__}: FRAMING must be json or form")
        _check_declarations(module)
        if module.NAME in registry:
            raise TypeError(f"provider name {module.NAME!r} registered twice")
        registry[module.NAME] = module  # type: ignore[assignment]
    return registry


def _check_declarations(module: ModuleType) -> None:
    """COVERAGE, and the optional declarations when a module makes them, must be usable:
    HTTP_METHODS (default POST only; GET = receipts in the query string), SUCCESS_ANSWER
    (body bytes, content type), QUERY_CREDENTIALS (query parameters never stored),
    MAX_BODY_BYTES (a smaller body limit), ENDPOINT (served on this path too), the gateway
    hooks prepare (before verify), handshake (answers GET on the webhook URL) and
    after_stored (once stored), and POLLING (`msgstatus poller` can ask it)."""
    methods = getattr(module, "HTTP_METHODS", ("POST",))
    if not (isinstance(methods, tuple) and methods and set(methods) <= {"POST", "GET"}):
        raise TypeError(f"provider module {module.__name__}: HTTP_METHODS must be POST and/or GET")
    answer = getattr(module, "SUCCESS_ANSWER", None)
    if answer is not None and not (
        isinstance(answer, tuple)
        and len(answer) == 2
        and isinstance(answer[0], bytes)
        and isinstance(answer[1], str)
    ):
        raise TypeError(f"provider module {module.__name__}: SUCCESS_ANSWER is (bytes, str)")
    if not isinstance(module.COVERAGE, Coverage):
        raise TypeError(f"provider module {module.__name__}: COVERAGE must be a Coverage")
    hidden = getattr(module, "QUERY_CREDENTIALS", ())
    if not (isinstance(hidden, tuple) and all(isinstance(n, str) and n for n in hidden)):
        raise TypeError(f"provider module {module.__name__}: QUERY_CREDENTIALS is a str tuple")
    limit = getattr(module, "MAX_BODY_BYTES", 1)
    if not (isinstance(limit, int) and limit > 0):
        raise TypeError(f"provider module {module.__name__}: MAX_BODY_BYTES is a positive int")
    endpoint = getattr(module, "ENDPOINT", "/")
    if not (isinstance(endpoint, str) and endpoint.startswith("/")):
        raise TypeError(f"provider module {module.__name__}: ENDPOINT is a path")
    for hook in ("prepare", "handshake", "after_stored"):
        if not callable(getattr(module, hook, print)):
            raise TypeError(f"provider module {module.__name__}: {hook} must be callable")
    if hasattr(module, "handshake") and "GET" in getattr(module, "HTTP_METHODS", ()):
        raise TypeError(f"provider module {module.__name__}: a handshake takes no GET receipts")
    polling = getattr(module, "POLLING", None)
    if polling is not None and not isinstance(polling, Polling):
        raise TypeError(f"provider module {module.__name__}: POLLING must be a Polling")


REGISTRY: dict[str, Provider] = _collect(dict(globals()))


# Providers that can be asked about one message (their module declares POLLING).
POLLABLE: frozenset[str] = frozenset(n for n, m in REGISTRY.items() if getattr(m, "POLLING", None))


def check(settings: Settings) -> None:
    """ConfigError for settings that name providers the registry cannot serve so: a
    delivery_unknown question (or a poller URL) for a provider that cannot be polled."""
    unknown = settings.delivery_unknown_ask - POLLABLE
    if unknown:
        names = ", ".join(sorted(unknown))
        raise ConfigError(
            f"MSGSTATUS_DELIVERY_UNKNOWN_ASK: {names} cannot be polled "
            f"(pollable: {', '.join(sorted(POLLABLE))}; without the variable: the "
            "providers with a MSGSTATUS_<P>_API_URL)"
        )


def get(name: str) -> Provider | None:
    """The enabled-or-not provider module called `name` (the gateway checks enabled())."""
    return REGISTRY.get(name)


__all__ = ["POLLABLE", "REGISTRY", "Provider", "check", "get"]
