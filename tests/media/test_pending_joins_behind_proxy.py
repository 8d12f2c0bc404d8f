"""The per-IP cap on pending joins counts the client a trusted proxy names, and only a
trusted proxy's X-Forwarded-For is believed (MULTIPOINT_TRUSTED_PROXIES)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from multipoint.settings import Settings, load_settings
from tests.media.test_pending_joins import token
from tests.signal_client import SignalClient

pytestmark = pytest.mark.media

PER_IP = 2


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path / "data", media_addresses=["127.0.0.1"],
                         secret_key="test-secret-" + "x" * 20, media_inline=True,
                         udp_port_min=42100, udp_port_max=42139,
                         max_pending_joins_per_ip=PER_IP, max_pending_joins=50,
                         answer_timeout_seconds=30, trusted_proxies=["127.0.0.1"])


async def join(server, address: str, forwarded_for: str, room: str,
               clients: list[SignalClient]) -> str:
    """A join from socket ``address`` claiming ``forwarded_for``: "joined" or the error."""
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)))
    client = SignalClient(session, await session.ws_connect(
        server.ws_url, headers={"X-Forwarded-For": forwarded_for}))
    clients.append(client)
    await client.send({"type": "join", "v": 1, "token": token(server, room)})
    first = await client.next()
    return first["type"] if first["type"] == "joined" else first["code"]


async def test_the_cap_counts_the_client_behind_a_trusted_proxy_only(server) -> None:
    clients: list[SignalClient] = []
    try:
        # Through the proxy (127.0.0.1): each client address has a cap of its own.
        for n in range(PER_IP):
            assert await join(server, "127.0.0.1", "198.51.100.1", f"selftest-a{n}",
                              clients) == "joined"
        assert await join(server, "127.0.0.1", "198.51.100.1", "selftest-a9",
                          clients) == "too_many_pending_joins"
        assert await join(server, "127.0.0.1", "198.51.100.2", "selftest-b0",
                          clients) == "joined"
        # Not a trusted proxy: what it claims is ignored and its own address is capped.
        for n in range(PER_IP):
            assert await join(server, "127.0.0.2", f"203.0.113.{n}", f"selftest-c{n}",
                              clients) == "joined"
        assert await join(server, "127.0.0.2", "203.0.113.99", "selftest-c9",
                          clients) == "too_many_pending_joins"
    finally:
        for client in clients:
            await client.close()
