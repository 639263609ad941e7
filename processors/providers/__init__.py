"""Provider registry: every module (or package) of this package that declares a NAME is a
provider, served under that NAME.

Adding a provider is adding its module: the registry imports every module here, collects
those with a NAME, and refuses at import time one that has only some of the Provider
attributes or a NAME used twice. Helper modules (base, common, auth, ...) declare no NAME.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

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


def _modules() -> dict[str, object]:
    """Every module of this package, in name order (the order of `msgstatus providers`)."""
    return {
        info.name: importlib.import_module(f"{__name__}.{info.name}")
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name)
    }


REGISTRY: dict[str, Provider] = _collect(_modules())


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
