"""Unit tests never reach the network: only loopback and Unix sockets.

An autouse fixture refuses every connection, datagram and name lookup for another host
(socket.connect / connect_ex / sendto, getaddrinfo, gethostbyname, gethostbyname_ex:
what asyncio's and aiohttp's clients go through), so a unit test that would go out (an
SNS certificate fetch, a subscription confirmation, a DNS lookup) fails loudly instead
of depending on the outside world. uvloop's loop connects and resolves in libuv, past
these: unit tests that make connections run on asyncio's loop. Integration tests start
fakes on 127.0.0.1 and are not affected.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import pytest

LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", ""})


class NetworkBlocked(OSError):
    """Raised for a unit test's attempt to reach a non-loopback address."""


def is_local(host: Any) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).strip("[]").lower()
    if host in LOCAL_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False  # a host name other than localhost
    return address.is_loopback or address.is_unspecified


def _check(address: Any) -> None:
    if isinstance(address, tuple) and address and not is_local(address[0]):
        raise NetworkBlocked(f"unit tests must not reach the network (tried {address[0]!r})")


@pytest.fixture(autouse=True)
def block_outbound_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _check(address)
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _check(address)
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not is_local(host):
            raise NetworkBlocked(f"unit tests must not resolve {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    real_sendto = socket.socket.sendto
    real_gethostbyname = socket.gethostbyname
    real_gethostbyname_ex = socket.gethostbyname_ex

    def sendto(self: socket.socket, data: Any, *args: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _check(args[-1])
        return real_sendto(self, data, *args)

    def gethostbyname(host: Any) -> Any:
        if not is_local(host):
            raise NetworkBlocked(f"unit tests must not resolve {host!r}")
        return real_gethostbyname(host)

    def gethostbyname_ex(host: Any) -> Any:
        if not is_local(host):
            raise NetworkBlocked(f"unit tests must not resolve {host!r}")
        return real_gethostbyname_ex(host)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket.socket, "sendto", sendto)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "gethostbyname", gethostbyname)
    monkeypatch.setattr(socket, "gethostbyname_ex", gethostbyname_ex)
    yield
