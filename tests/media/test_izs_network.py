"""A node on the protected IZS network too: its front listens there, its media path
advertises addresses there, and the links of IZS rooms point there."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import aiohttp
import pytest
from sqlalchemy import select

from mcu import aiortc_adapter
from scheduler.access.auth import create_user, issue_api_token
from scheduler.db import Database
from scheduler.models import Organisation
from scheduler.seed import seed
from tests.conftest import free_port
from tests.peers import ClientPeer, ColourTrack, ToneTrack, wait_until
from tests.signal_client import SignalClient

pytestmark = pytest.mark.media

PUBLIC, PROTECTED = "127.0.0.1", "127.0.0.2"  # two addresses of the loopback namespace


@pytest.fixture
def izs_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = free_port()
    env = dict(os.environ, MULTIPOINT_DATA_DIR=str(tmp_path / "data"), MULTIPOINT_WORKERS="1",
               MULTIPOINT_HTTP_HOST=PUBLIC, MULTIPOINT_PUBLIC_URL=f"http://{PUBLIC}:{port}",
               MULTIPOINT_IZS_HTTP_HOST=PROTECTED,
               MULTIPOINT_IZS_PUBLIC_URL=f"http://{PROTECTED}:{port}",
               MULTIPOINT_MEDIA_ADDRESSES=PUBLIC, MULTIPOINT_IZS_MEDIA_ADDRESSES=PROTECTED,
               MULTIPOINT_SECRET_KEY="test-secret-" + "z" * 30, MULTIPOINT_SCHEDULER_JOBS="false")
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "multipoint", "serve", "--port", str(port)],
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield port, tmp_path
    finally:
        process.terminate()
        process.wait(10)


async def healthy(url: str, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(url) as response:
                    if (await response.json()).get("workers") == 1:
                        return True
            except (aiohttp.ClientError, ValueError):
                pass
            await asyncio.sleep(0.2)
    return False


async def test_izs_links_point_at_the_protected_network_where_calls_work(izs_server) -> None:
    port, tmp_path = izs_server
    aiortc_adapter.configure_ice([PUBLIC], None)
    assert await healthy(f"http://{PUBLIC}:{port}/healthz")
    assert await healthy(f"http://{PROTECTED}:{port}/healthz")  # the front listens there too
    database = Database(f"sqlite:///{tmp_path / 'data' / 'multipoint.db'}")
    try:
        with database.session() as session:
            seed(session, local_workers=1)
            izs = session.scalars(select(Organisation).where(Organisation.kind == "izs")).first()
            operator = create_user(session, "hzs", "izs_operator", izs.id)
            token = issue_api_token(session, operator.id)
    finally:
        database.dispose()
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as http, http.post(
            f"http://{PUBLIC}:{port}/api/v1/bridges",
            json={"name": "Povodně", "participants": {"hd": 5}}) as response:
        assert response.status == 201, await response.text()
        bridge = await response.json()
    link = urlparse(bridge["join_links"]["guest"])
    assert (link.hostname, link.port) == (PROTECTED, port)
    client = await SignalClient.connect(f"ws://{PROTECTED}:{port}/ws")
    peer = ClientPeer(audio=ToneTrack(), video=ColourTrack())
    other = await SignalClient.connect(f"ws://{PROTECTED}:{port}/ws")
    other_peer = ClientPeer(audio=ToneTrack(), video=ColourTrack())
    try:
        token = link.query.removeprefix("token=")
        await client.join_with(peer, token, name="HZS")
        await other.join_with(other_peer, token, name="ZZS")
        offer = client.of_type("offer")[0]["sdp"]
        assert f" {PROTECTED} " in offer and f" {PUBLIC} " in offer  # candidates on both
        assert await wait_until(lambda: sum(peer.frames("video").values()) > 5, timeout=30)
    finally:
        await client.close()
        await other.close()
