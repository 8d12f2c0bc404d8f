"""A client that stops reading its socket is dropped; its room's messages keep flowing."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from pathlib import Path

import pytest

from multipoint.app import LIVE_ROOMS
from multipoint.settings import Settings, load_settings
from signaling.tokens import JoinGrant, issue_token
from tests.signal_client import SignalClient

pytestmark = pytest.mark.media

ROOM = "porada"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # Nobody here answers an offer: the answer deadline must not end them first.
    return load_settings(data_dir=tmp_path / "data", media_addresses=["127.0.0.1"],
                         secret_key="test-secret-" + "x" * 20, media_inline=True,
                         answer_timeout_seconds=600, send_queue_messages=8,
                         send_timeout_seconds=2,
                         # The talker chats as fast as it can until the reader is dropped.
                         message_rate="1000000/second")


def token(server, name: str) -> str:
    grant = JoinGrant(room=ROOM, role="guest", name=name)
    return issue_token(server.settings.signing_secret(), grant, 300)


def masked_text_frame(text: str) -> bytes:
    payload = text.encode()
    mask = os.urandom(4)
    if len(payload) < 126:
        header = struct.pack("!BB", 0x81, 0x80 | len(payload))
    else:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, len(payload))
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def stuck_client(server, name: str) -> socket.socket:
    """A raw WebSocket client with a tiny receive buffer that joins, then never reads."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", server.port))
    key = base64.b64encode(os.urandom(16)).decode()
    await loop.sock_sendall(sock, (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode())
    response = b""
    while b"\r\n\r\n" not in response:
        response += await loop.sock_recv(sock, 1)
    assert response.startswith(b"HTTP/1.1 101"), response
    await loop.sock_sendall(sock, masked_text_frame(json.dumps(
        {"type": "join", "v": 1, "token": token(server, name)})))
    return sock


async def test_a_client_that_stops_reading_is_dropped_and_the_room_goes_on(server) -> None:
    signaling = server.app[LIVE_ROOMS].signaling
    talker = await SignalClient.connect(server.ws_url)
    listener = await SignalClient.connect(server.ws_url)
    stuck: socket.socket | None = None
    try:
        for client, name in ((talker, "talker"), (listener, "listener")):
            await client.send({"type": "join", "v": 1, "token": token(server, name)})
            await client.next("joined")
        stuck = await stuck_client(server, "stuck")

        def stuck_in_room() -> bool:
            channel = signaling.channels.get(ROOM)
            return channel is not None and any(c.name == "stuck" for c in channel.connections.values())

        for _ in range(100):
            if stuck_in_room():
                break
            await asyncio.sleep(0.05)
        assert stuck_in_room()

        # Chat until the server gives up on the stuck client: every message reaches the
        # listener (a blocked broadcast would leave it waiting), in order.
        text = "x" * 1900
        sent = 0
        while stuck_in_room():
            assert sent < 20_000, "the client that stopped reading is still in the room"
            await talker.send({"type": "chat", "text": f"{sent} {text}"})
            chat = await listener.next("chat", timeout=10)
            assert chat["text"] == f"{sent} {text}"
            sent += 1
        assert sent > 10  # it had filled its socket's buffers first
        assert signaling.counters["signaling_dropped"] == 1

        # The others hear that it left, and chat on.
        while True:
            update = await listener.next("participants", timeout=10)
            if sorted(p["name"] for p in update["participants"]) == ["listener", "talker"]:
                break
        await talker.send({"type": "chat", "text": "still here"})
        assert (await listener.next("chat", timeout=10))["text"] == "still here"
        assert not listener.of_type("error") and not talker.of_type("error")
    finally:
        if stuck is not None:
            stuck.close()
        await talker.close()
        await listener.close()
