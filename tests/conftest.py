"""Shared fixtures: settings on a temporary data dir, the whole app on loopback."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from multipoint.app import create_app
from multipoint.settings import Settings, load_settings

# Every server a test starts listens for SIP on a port of its own (several run at once).
os.environ.setdefault("MULTIPOINT_SIP_PORT", "0")

# The fixtures of two media nodes on PostgreSQL (tests/nodes.py), for media and browser tests.
pytest_plugins = ["tests.nodes"]


def non_loopback_addresses() -> list[str]:
    import ifaddr

    found = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            address = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            if address not in ("127.0.0.1", "::1"):
                found.append(address)
    return found


@pytest.fixture(autouse=True)
def _loopback_only_for_media(request: pytest.FixtureRequest) -> None:
    # Every WebRTC and browser test must run where no packet can leave the machine.
    if request.node.get_closest_marker("media") or request.node.get_closest_marker("browser"):
        others = non_loopback_addresses()
        if others:
            pytest.fail("media and browser tests run only in a loopback-only network namespace "
                        f"(found {others}); use scripts/test")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # One media worker inside the test's process, so tests can look at the media objects;
    # tests/media/test_workers.py runs the real worker processes.
    return load_settings(data_dir=tmp_path / "data", media_addresses=["127.0.0.1"],
                         secret_key="test-secret-" + "x" * 20, media_inline=True)


class RunningServer:
    def __init__(self, runner: web.AppRunner, settings: Settings, port: int) -> None:
        self.runner = runner
        self.settings = settings
        self.port = port
        self.app = runner.app

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening_socket() -> tuple[socket.socket, int]:
    """A loopback TCP socket bound now, for a server to listen on (web.SockSite), and its
    port. Unlike free_port() nothing can take the port between choosing and listening: the
    app's start-up opens connections of its own, whose local ports are drawn from the same
    range (a CI run once lost the port that way)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock, sock.getsockname()[1]


async def start_process_server(tmp_path: Path, workers: int, **overrides: object) -> RunningServer:
    """The service as `serve` runs it: a front and ``workers`` media worker processes.

    The test's own aiortc clients run in this process and need loopback candidates of
    their own (with an inline worker the app sets that up for the whole process).
    """
    from mcu import aiortc_adapter

    aiortc_adapter.configure_ice(["127.0.0.1"], None)
    sock, port = listening_socket()
    config = load_settings(data_dir=tmp_path / "data", media_addresses=["127.0.0.1"],
                           secret_key="test-secret-" + "x" * 20, workers=workers,
                           public_url=f"http://127.0.0.1:{port}", **overrides)
    runner = web.AppRunner(create_app(config))
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return RunningServer(runner, config, port)


@pytest.fixture
async def two_workers(tmp_path: Path) -> AsyncIterator[RunningServer]:
    """The service with two media worker processes."""
    server = await start_process_server(tmp_path, 2)
    try:
        yield server
    finally:
        await server.runner.cleanup()


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[RunningServer]:
    sock, port = listening_socket()
    settings.public_url = f"http://127.0.0.1:{port}"
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    site = web.SockSite(runner, sock)
    await site.start()
    try:
        yield RunningServer(runner, settings, port)
    finally:
        await runner.cleanup()
