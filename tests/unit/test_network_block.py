"""The unit suite's autouse network block (tests/unit/conftest.py) really blocks."""

from __future__ import annotations

import asyncio
import socket

import pytest
from conftest import NetworkBlocked, is_local

from processors.providers.ses import certificates

SNS_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem"


def test_non_loopback_connections_are_refused() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock, pytest.raises(NetworkBlocked):
        sock.connect(("192.0.2.1", 443))
    with pytest.raises(NetworkBlocked):
        socket.getaddrinfo("sns.us-east-1.amazonaws.com", 443)
    with pytest.raises(NetworkBlocked):
        socket.create_connection(("example.com", 80), timeout=1)
    with pytest.raises(NetworkBlocked):
        socket.gethostbyname("example.com")
    with pytest.raises(NetworkBlocked):
        socket.gethostbyname_ex("example.com")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, pytest.raises(NetworkBlocked):
        udp.sendto(b"x", ("192.0.2.1", 53))


async def test_asyncio_and_aiohttp_clients_cannot_go_out() -> None:
    import aiohttp

    loop = asyncio.get_running_loop()
    with pytest.raises(NetworkBlocked):
        await loop.getaddrinfo("example.com", 443)
    with pytest.raises(OSError):
        await loop.create_connection(asyncio.Protocol, "192.0.2.1", 443)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            await session.get("https://example.com/", timeout=aiohttp.ClientTimeout(total=5))


def test_loopback_stays_usable() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname(), timeout=1):
            pass
    assert is_local("::1") and is_local("localhost") and not is_local("10.0.0.1")


async def test_the_real_certificate_fetch_cannot_go_out() -> None:
    with pytest.raises(OSError):
        await certificates.fetch_certificate(SNS_URL)
