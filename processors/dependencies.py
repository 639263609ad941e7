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
        DEPENDENCY_UP.labels(name).set(1 if up else 0)
    return dict(zip(names, results, strict=True))
