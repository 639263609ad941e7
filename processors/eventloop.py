"""The gateway's event loop: asyncio by default, uvloop on request (MSGSTATUS_GATEWAY_EVENT_LOOP).

uvloop moves socket reads and writes, timers and callbacks from Python into libuv. The
gateway spends most of its time in that machinery (one HTTP request and one answer per
webhook on 64 keep-alive connections), so it is the first thing its profile pays for.
With a new connection per webhook asyncio's loop is faster (libuv accepts one
connection per loop turn): docs/configuration.md has both measurements. The Faust
worker keeps the loop Faust sets up: this module is for the gateway only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's `new_event_loop` for "uvloop" when it is installed; None = asyncio's."""
    if name != "uvloop":
        return None
    try:
        import uvloop
    except ImportError:  # a platform without uvloop wheels: run, but say so
        log.warning("uvloop is not installed; running on the asyncio event loop")
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], loop: str) -> T:
    """`asyncio.run(main)` on the event loop named by `loop` ("uvloop" or "asyncio")."""
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        return runner.run(main)
