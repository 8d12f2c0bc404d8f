"""A test client for the signaling protocol, over a real WebSocket."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from tests.peers import ClientPeer


class SignalClient:
    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.session = session
        self.ws = ws
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.all: list[dict[str, Any]] = []
        self._reader = asyncio.ensure_future(self._read())
        self.peer: ClientPeer | None = None
        self.auto_answer = False
        self.tracks: dict[str, dict[str, str]] = {}  # mid -> what the slot shows (offer, then "slots")
        self._shown_since: dict[str, int] = {}  # mid -> its frame count when it began showing that

    @classmethod
    async def connect(cls, ws_url: str) -> SignalClient:
        session = aiohttp.ClientSession()
        ws = await session.ws_connect(ws_url)
        return cls(session, ws)

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                message = json.loads(msg.data)
                self.all.append(message)
                if message.get("type") == "offer":
                    self._show(message["tracks"])
                elif message.get("type") == "slots":
                    self._show({mid: info for mid, info in message["slots"].items() if info})
                if message.get("type") == "offer" and self.auto_answer:
                    # Answer every later offer (renegotiation) on its own.
                    await self._answer(message)
                else:
                    await self.messages.put(message)

    def _show(self, tracks: dict[str, dict[str, str]]) -> None:
        # A slot re-pointed at someone else starts counting that one's frames afresh.
        for mid, info in tracks.items():
            old = self.tracks.get(mid)
            if old is None or (old["participant"], old["source"]) != (info["participant"], info["source"]):
                received = self.peer.received.get(mid) if self.peer is not None else None
                self._shown_since[mid] = received.frames if received is not None else 0
        self.tracks = tracks

    async def send(self, message: dict[str, Any] | str) -> None:
        await self.ws.send_str(message if isinstance(message, str) else json.dumps(message))

    async def next(self, kind: str | None = None, timeout: float = 10) -> dict[str, Any]:
        while True:
            message = await asyncio.wait_for(self.messages.get(), timeout)
            if kind is None or message.get("type") == kind:
                return message

    async def _answer(self, offer: dict[str, Any]) -> None:
        assert self.peer is not None
        sdp = await self.peer.answer(offer["sdp"], offer["publish"])
        await self.send({"type": "answer", "sdp": sdp, "revision": offer["revision"]})

    async def join_with(self, peer: ClientPeer, token: str, name: str = "test",
                        **fields: Any) -> dict[str, Any]:
        """Join (with any other ``join`` fields: ``mode``, ``video_codecs``), answer the
        first offer with this peer, and keep answering later offers."""
        self.peer = peer
        await self.send({"type": "join", "v": 1, "token": token, "name": name, **fields})
        joined = await self.next("joined")
        offer = await self.next("offer")
        await self._answer(offer)
        self.auto_answer = True
        return joined

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.all if m.get("type") == kind]

    def live_frames(self, kind: str) -> dict[str, int]:
        """Frames received per remote participant, on the slots that show it now (counted
        since the slot began showing it)."""
        assert self.peer is not None
        frames = self.peer.frames(kind)
        return {info["participant"]: frames.get(mid, 0) - self._shown_since.get(mid, 0)
                for mid, info in self.tracks.items()
                if info["kind"] == kind and info["source"] != "screen"}

    async def close(self) -> None:
        self._reader.cancel()
        await self.ws.close()
        await self.session.close()
        if self.peer is not None:
            await self.peer.close()
