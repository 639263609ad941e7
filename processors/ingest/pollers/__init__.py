"""Pollers: ask poll-only providers about messages that are not final yet.

`msgstatus poller` (runner.py) learns pending messages from `message.status`, polls each
provider within its rate limit and writes what it learns to `raw.<provider>` exactly like
a webhook (marked as polled). One module per provider says how to ask (ryze.py,
octopods.py); tracker.py decides which message is due.
"""

from __future__ import annotations

from processors.ingest.pollers import octopods, ryze

# Every poll-only provider, keyed by its provider NAME.
MODULES = {module.NAME: module for module in (ryze, octopods)}

__all__ = ["MODULES"]
