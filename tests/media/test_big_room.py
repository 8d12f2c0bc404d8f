"""A room of 60 through the whole service: fixed slots keep offers small, and the loudest
voices are re-pointed at the subscribers' audio slots.

Sites are light aiortc clients (mcu.aiortc_adapter takes their transceivers over: ICE,
DTLS and SRTP run, no codec does): subscribers count RTP per SSRC; four publishers send
pre-encoded media from bench._media, thinned to a few packets a second, with an RFC 6464
level we set (that is all speaker detection reads).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections import Counter
from typing import Any

import aiohttp
import pytest

from bench._clients import OutStream, Pacer, new_peer_connection
from bench._media import EncodedMedia, encode_media
from mcu import aiortc_adapter as adapter
from mcu import rtp
from multipoint.app import MEDIA
from signaling.tokens import JoinGrant, issue_token
from tests.peers import first_ssrc_per_mid, wait_until

pytestmark = pytest.mark.media

SITES = 60
PUBLISHERS = 4
OFFER_LIMIT = 32 * 1024
LOUD, SILENT = 12, 127  # -dBov: a voice, and nothing
VIDEO_PERIOD_S = 1 / 15  # thinned media: the room's packet rate stays within 2 cores
AUDIO_PERIOD_S = 0.06


class Site:
    """One participant over the real protocol: answers offers, counts RTP per SSRC."""

    def __init__(self, name: str, media: EncodedMedia | None) -> None:
        self.name = name
        self.pc = new_peer_connection()
        self.streams = {kind: OutStream(kind, media) for kind in ("audio", "video")} if media else {}
        for stream in self.streams.values():
            stream.period = AUDIO_PERIOD_S if stream.kind == "audio" else VIDEO_PERIOD_S
        self.id = ""
        self.messages: list[dict[str, Any]] = []
        self.offer_bytes: list[int] = []
        self.ssrc_of_mid: dict[str, int] = {}
        self.slots: dict[str, dict[str, str]] = {}  # mid -> what it shows (offer, then "slots")
        self.packets: Counter[int] = Counter()  # per SSRC
        self.loud_packets: Counter[int] = Counter()  # audio packets with a voice's level
        self.loud_at_slots: Counter[int] = Counter()  # the same when the last "slots" came
        self.errors: list[BaseException] = []  # in our receive path
        self._taken: set[int] = set()
        self._tapped: set[int] = set()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._session: aiohttp.ClientSession | None = None
        self._reader: asyncio.Task[None] | None = None
        self.answered = asyncio.get_running_loop().create_future()

    async def join(self, ws_url: str, token: str) -> None:
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(ws_url)
        await self._ws.send_str(json.dumps({"type": "join", "v": 1, "token": token, "name": self.name}))
        self._reader = asyncio.ensure_future(self._read())
        await asyncio.wait_for(self.answered, 30)

    async def _read(self) -> None:
        assert self._ws is not None
        async for message in self._ws:
            body = json.loads(message.data)
            self.messages.append(body)
            if body["type"] == "joined":
                self.id = body["participant"]
            elif body["type"] == "offer":
                self.offer_bytes.append(len(message.data.encode()))
                self.slots = dict(body["tracks"])
                await self._answer(body)
            elif body["type"] == "slots":
                self.loud_at_slots = Counter(self.loud_packets)
                self.slots = {mid: info for mid, info in body["slots"].items() if info}

    async def _answer(self, offer: dict[str, Any]) -> None:
        assert self._ws is not None
        self.ssrc_of_mid.update(first_ssrc_per_mid(offer["sdp"]))
        await self.pc.setRemoteDescription(_description(offer["sdp"]))
        sending = {offer["publish"]["microphone"], offer["publish"]["camera"]} if self.streams else set()
        for transceiver in self.pc.getTransceivers():
            self._take_over(transceiver)
            if transceiver.mid in offer["publish"].values():
                transceiver.direction = "sendonly" if transceiver.mid in sending else "inactive"
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        await self._ws.send_str(json.dumps({"type": "answer", "sdp": self.pc.localDescription.sdp,
                                            "revision": offer["revision"]}))
        if not self.answered.done():
            self.answered.set_result(None)

    def _take_over(self, transceiver: Any) -> None:
        if id(transceiver) not in self._taken:
            self._taken.add(id(transceiver))
            adapter.take_over_transceiver(transceiver, on_receive=None, on_send=self._on_send)
        dtls = transceiver.receiver.transport
        if dtls is not None and id(dtls) not in self._tapped:
            self._tapped.add(id(dtls))
            adapter.tap_transport(dtls, self._on_rtp, lambda data: None, self.errors.append)

    def _on_send(self, negotiated: adapter.NegotiatedRtp, ssrc: int, rtx_ssrc: int, dtls: Any) -> None:
        stream = self.streams.get(negotiated.kind)
        if stream is not None and not stream.ready:
            stream.configure(negotiated, ssrc, dtls)

    def _on_rtp(self, data: bytes, arrival_time_ms: int) -> None:
        view = rtp.parse_rtp(data)
        self.packets[view.ssrc] += 1
        level = view.extensions.get(rtp.EXT_AUDIO_LEVEL)
        if level and level[0] & 0x7F <= LOUD + 10:
            self.loud_packets[view.ssrc] += 1

    def set_level(self, level: int) -> None:
        stream = self.streams["audio"]
        stream.media = dataclasses.replace(stream.media, audio_level=level)

    def received(self, participant: str, kind: str) -> int:
        """Packets on the slots that show that participant's microphone or camera now."""
        return sum(self.packets[self.ssrc_of_mid[mid]] for mid, info in self.slots.items()
                   if info["participant"] == participant and info["kind"] == kind)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
        await self.pc.close()


def _description(sdp: str) -> Any:
    from aiortc import RTCSessionDescription

    return RTCSessionDescription(sdp=sdp, type="offer")



async def test_sixty_sites_get_small_offers_and_the_loudest_voices_through_their_slots(server) -> None:
    room = "krajska-porada"
    media = encode_media(seconds=2.0)
    token = issue_token(server.settings.signing_secret(), JoinGrant(room=room, role="guest"), 300)
    publishers = [Site(f"publisher-{i}", media) for i in range(PUBLISHERS)]
    publishers[-1].set_level(SILENT)  # the last one listens first, and speaks later
    for site in publishers[:-1]:
        site.set_level(LOUD)
    sites = publishers + [Site(f"site-{i}", None) for i in range(SITES - PUBLISHERS)]
    pacer = Pacer()
    for index, stream in enumerate(s for site in publishers for s in site.streams.values()):
        pacer.add(stream, phase=index * 0.004)
    pacer.start()
    started = time.monotonic()
    try:
        for batch in range(0, SITES, 10):  # a few at a time, as a briefing fills
            await asyncio.gather(*(site.join(server.ws_url, token) for site in sites[batch:batch + 10]))
        joined_in = time.monotonic() - started
        ids = [site.id for site in publishers]
        speakers, newcomer = ids[:-1], ids[-1]

        # Every site hears the three voices and sees all four cameras through its slots.
        def receives(site: Site, voices: list[str], minimum: int = 5) -> bool:
            return (all(site.received(p, "video") >= minimum for p in ids if p != site.id)
                    and all(site.received(p, "audio") >= minimum for p in voices if p != site.id))

        assert await wait_until(lambda: all(receives(s, speakers) for s in sites), timeout=30), \
            [s.name for s in sites if not receives(s, speakers)][:5]
        worker = server.app[MEDIA]
        assert len(worker.rooms[room].participants) == SITES

        # The silent one speaks up and the first speaker goes quiet: each receive-only
        # site's slot that held the first speaker now shows the new voice, and carries it.
        # (A publisher has only three others that send: it may have heard all along.)
        listeners = sites[PUBLISHERS:]
        before = {s.id: len([m for m in s.messages if m["type"] == "slots"]) for s in listeners}
        publishers[-1].set_level(LOUD)
        publishers[0].set_level(SILENT)

        def repointed(site: Site) -> bool:
            mids = [m for m, i in site.slots.items() if i["participant"] == newcomer and i["kind"] == "audio"]
            if not mids:
                return False
            ssrc = site.ssrc_of_mid[mids[0]]  # the voice since the slot was re-pointed
            return site.loud_packets[ssrc] - site.loud_at_slots[ssrc] >= 5

        assert await wait_until(lambda: all(repointed(s) for s in listeners), timeout=20), \
            [s.name for s in listeners if not repointed(s)][:5]
        for site in listeners:
            assert len([m for m in site.messages if m["type"] == "slots"]) > before[site.id]
            (mid,) = [m for m, i in site.slots.items()
                      if i["participant"] == newcomer and i["kind"] == "audio"]
            assert site.packets[site.ssrc_of_mid[mid]] > 0
            assert receives(site, [*speakers[1:], newcomer], minimum=1)

        # Nobody was renegotiated for the others' joins, and every offer stayed small.
        offers = [size for site in sites for size in site.offer_bytes]
        assert all(len(site.offer_bytes) == 1 for site in sites)
        assert max(offers) <= OFFER_LIMIT, max(offers)
        assert not any(site.errors for site in sites)
        print(f"\n{SITES} sites joined in {joined_in:.1f} s; offer {max(offers)} bytes at most")
    finally:
        pacer.stop()
        await asyncio.gather(*(site.close() for site in sites), return_exceptions=True)
