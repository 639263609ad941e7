"""`msgstatus_dependency_up{dependency}`: can this process reach Kafka and Redis right now?

Shared by the gateway (set on each scrape of its /metrics), the poller and the worker, so
one alert covers every process; the `instance` label Prometheus adds says which one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from prometheus_client import Gauge

DEPENDENCY_UP = Gauge(
    "msgstatus_dependency_up",
    "1 when the process reached the dependency at its last check, else 0",
    ["dependency"],
)
KAFKA = "kafka"
REDIS = "redis"

Probe = Callable[[], Awaitable[bool]]

# the last answer per dependency (periodic probes, and components that notice at once)
LAST: dict[str, bool] = {}


def mark(name: str, up: bool) -> None:
    """Record what a component just saw (the Redis state backend on every failure)."""
    LAST[name] = up
    DEPENDENCY_UP.labels(name).set(1 if up else 0)


def ready(required: tuple[str, ...]) -> tuple[bool, dict[str, bool]]:
    """Every required dependency answered its last check (unknown counts as up: no
    check has run yet)."""
    states = {name: LAST.get(name, True) for name in required}
    return all(states.values()), states


async def check(probes: dict[str, Probe], timeout: float = 3.0) -> dict[str, bool]:
    """Run the probes side by side and set the gauge; a probe that raises or takes longer
    than `timeout` counts as down."""

    async def one(probe: Probe) -> bool:
        try:
            return bool(await asyncio.wait_for(probe(), timeout))
        except Exception:
            return False

    names = list(probes)
    results = await asyncio.gather(*(one(probes[name]) for name in names))
    for name, up in zip(names, results, strict=True):
        mark(name, up)
    return dict(zip(names, results, strict=True))
