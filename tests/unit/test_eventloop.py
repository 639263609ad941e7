"""The gateway's event loop choice: asyncio by default, uvloop on request."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from processors import eventloop
from processors.config import ConfigError, Settings


def test_asyncio_is_the_default_and_uvloop_can_be_chosen() -> None:
    assert Settings.from_env({}).gateway_event_loop == "asyncio"
    chosen = Settings.from_env({"MSGSTATUS_GATEWAY_EVENT_LOOP": " AsyncIO "})
    assert chosen.gateway_event_loop == "asyncio"


def test_an_unknown_loop_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="MSGSTATUS_GATEWAY_EVENT_LOOP"):
        Settings.from_env({"MSGSTATUS_GATEWAY_EVENT_LOOP": "trio"})


@pytest.mark.parametrize("name", ["uvloop", "asyncio"])
def test_run_uses_the_named_loop(name: str) -> None:
    async def which() -> bool:
        return isinstance(asyncio.get_running_loop(), uvloop.Loop)

    assert eventloop.run(which(), name) is (name == "uvloop")
