"""Pollers: ask poll-only providers about messages that are not final yet.

`msgstatus poller` (runner.py) learns pending messages from `message.status`, polls each
provider within its rate limit and writes what it learns to `raw.<provider>` exactly like
a webhook (marked as polled). A provider module that can be polled declares how to ask in
its POLLING (processors/providers/ryze.py, octopods.py); tracker.py decides which message
is due.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from processors import providers
from processors.ingest.pollers.tracker import Pending, PollSpec
from processors.providers.base import Polling


@dataclass(frozen=True, slots=True)
class Client:
    """A pollable provider as the runner drives it."""

    NAME: str
    SPEC: PollSpec  # what the tracker must know of it
    TOKEN_SETTING: str  # the API token's secret, MSGSTATUS_<P>_API_TOKEN
    URL_SETTING: str  # MSGSTATUS_<P>_API_URL (typed: Settings.poller.api_urls)
    DEFAULT_RATE_LIMIT: int
    request: Callable[[str, str, Pending], tuple[str, dict[str, str]]]
    error_message: Callable[[bytes], str | None]

    @classmethod
    def of(cls, name: str, polling: Polling) -> Client:
        prefix = name.upper().replace("-", "_")
        spec = PollSpec(
            provider=name,
            channels=polling.channels,
            default_channel=polling.default_channel,
            needs_account=polling.needs_account,
            jitter=polling.jitter,
        )
        return cls(
            name,
            spec,
            f"{prefix}_API_TOKEN",
            f"{prefix}_API_URL",
            polling.rate_limit,
            polling.request,
            polling.error_message,
        )


# Every pollable provider of the registry, keyed by its provider NAME.
MODULES: dict[str, Client] = {
    name: Client.of(name, module.POLLING)  # type: ignore[attr-defined]
    for name, module in providers.REGISTRY.items()
    if getattr(module, "POLLING", None) is not None
}

__all__ = ["MODULES", "Client"]
