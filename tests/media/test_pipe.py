"""Rooms that span two media workers (mcu/pipe.py), with real aiortc clients on loopback.

Two MediaWorkers in one process, each with its own pipe socket on 127.0.0.1 and a room
of the same name; the tests wire the pipes themselves (export on the origin, import on
the other side), as the control channel between worker processes will.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pylibsrtp
import pytest
from aiortc import RTCSessionDescription

from bench import _sdp
from bench._clients import OutStream, Pacer, configure_layers, new_peer_connection
from bench._media import EncodedMedia, encode_media
from mcu import aiortc_adapter, rtp
from mcu.forwarding import Consumer
from mcu.participant import Offer, Participant
from mcu.pipe import PipedProducer, PipeTransport, pipe_key
from mcu.room import MediaWorker, Room
from tests.peers import ClientPeer, ColourTrack, RtcpProbe, ToneTrack, first_ssrc_per_mid, wait_until

pytestmark = pytest.mark.media

ROOM = "kraj-a-obce"


class Site:
    """One client of one worker's room, driven without the HTTP server: the server's
    offers are answered as signaling would deliver them (in a task of their own), and
    its other messages are recorded.

    What each receive slot (mid) shows comes from the offers, then from the ``slots``
    messages that re-point them (joins, leaves and imports renegotiate nobody); what a
    slot received is counted from the moment it began showing its present source.

    A ``light`` site decodes nothing: its receivers are taken over and it counts RTP
    packets per SSRC (cheap enough for many subscribers in one test).
    """

    def __init__(self, room: Room, participant: Participant, peer: ClientPeer, light: bool) -> None:
        self.room = room
        self.participant = participant
        self.peer = peer
        self.light = light
        self.tracks: dict[str, dict[str, str]] = {}  # mid -> what the slot shows (offer, then "slots")
        self.publish: dict[str, str] = {}
        self.offers: list[Offer] = []
        self.messages: list[dict[str, Any]] = []
        self.ssrc_of_mid: dict[str, int] = {}  # light: from the offers' SDP
        self.packets: Counter[int] = Counter()  # light: RTP packets by SSRC
        self.keyframes: Counter[tuple[int, int]] = Counter()  # light: VP8 keyframes by (SSRC, height)
        self._shown_since: dict[str, int] = {}  # mid -> what it had received when it began showing that
        self._taken: set[int] = set()
        self._tasks: set[asyncio.Future[None]] = set()

    @classmethod
    async def join(cls, room: Room, name: str, peer: ClientPeer | None = None,
                   light: bool = False, video_codec: str = "vp8") -> Site:
        participant = room.join(name, "guest", video_codec=video_codec, video_codecs=[video_codec])
        site = cls(room, participant, peer or ClientPeer(), light)
        participant.send_offer = site._send_offer
        participant.send_message = site._receive_message
        await participant.renegotiate()
        room.announce_join(participant)
        return site

    async def _send_offer(self, offer: Offer) -> None:
        if self.peer.pc.signalingState == "closed":  # the client has gone; nobody answers
            return
        self.offers.append(offer)
        self.publish = offer.publish
        self.ssrc_of_mid.update(first_ssrc_per_mid(offer.sdp))
        self._show(offer.tracks)
        task = asyncio.ensure_future(self._answer(offer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _receive_message(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        if message["type"] == "slots":
            self._show({mid: info for mid, info in message["slots"].items() if info})

    def _show(self, tracks: dict[str, dict[str, str]]) -> None:
        # A slot re-pointed at someone else starts counting that one's media afresh.
        for mid, info in tracks.items():
            old = self.tracks.get(mid)
            if old is None or (old["participant"], old["source"]) != (info["participant"], info["source"]):
                self._shown_since[mid] = self._received_on(mid)
        self.tracks = dict(tracks)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == kind]

    async def _answer(self, offer: Offer) -> None:
        if self.light:
            pc = self.peer.pc
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
            for transceiver in pc.getTransceivers():
                self._take_over(transceiver)
                if transceiver.mid in offer.publish.values():
                    transceiver.direction = "inactive"
            await pc.setLocalDescription(await pc.createAnswer())
            sdp = pc.localDescription.sdp
        else:
            sdp = await self.peer.answer(offer.sdp, offer.publish)
        await self.participant.accept_answer(sdp, offer.revision)

    def _take_over(self, transceiver: Any) -> None:
        if id(transceiver) in self._taken:
            return
        self._taken.add(id(transceiver))
        aiortc_adapter.take_over_transceiver(transceiver, on_receive=None, on_send=None)
        dtls = transceiver.receiver.transport
        if id(dtls) not in self._taken:
            self._taken.add(id(dtls))
            aiortc_adapter.tap_transport(dtls, self._count, lambda data: None, self._fail)

    def _count(self, data: bytes, arrival: int) -> None:
        ssrc = int.from_bytes(data[8:12], "big")
        self.packets[ssrc] += 1
        height = keyframe_height(data)  # read as the slots' SSRCs are asked for (audio's is noise)
        if height is not None:
            self.keyframes[(ssrc, height)] += 1

    def _fail(self, exc: BaseException) -> None:
        raise AssertionError(f"client packet path failed: {exc!r}")

    def _received_on(self, mid: str) -> int:
        """Frames (light: RTP packets) received on a slot so far."""
        if self.light:
            ssrc = self.ssrc_of_mid.get(mid)
            return self.packets[ssrc] if ssrc is not None else 0
        received = self.peer.received.get(mid)
        return received.frames if received is not None else 0

    def received_from(self, owner: str, kind: str) -> int:
        """Frames (light: packets) on the slots that show that participant now, since
        each began showing it."""
        return sum(self._received_on(mid) - self._shown_since.get(mid, 0)
                   for mid, info in self.tracks.items()
                   if info["participant"] == owner and info["kind"] == kind)

    def hears_and_sees(self, owner: str, minimum: int = 10) -> bool:
        return self.received_from(owner, "audio") >= minimum and self.received_from(owner, "video") >= minimum

    def in_step(self) -> bool:
        """What the client was told its slots show is what the server's slots show."""
        return self.tracks == {mid: info for mid, info in self.participant.slot_map().items() if info}

    def consumer(self, producer_id: str) -> Consumer:
        """The receive slot that shows this producer now."""
        return next(c for c in self.participant.consumers.values()
                    if c.producer is not None and c.producer.id == producer_id)

    def mid_of(self, producer_id: str) -> str:
        consumer = self.consumer(producer_id)
        return next(m for m, slot in self.participant._leg_by_mid.items() if slot is consumer)

    def client_transceiver(self, producer_id: str) -> Any:
        mid = self.mid_of(producer_id)
        return next(t for t in self.peer.pc.getTransceivers() if t.mid == mid)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.peer.close()



@pytest.fixture
async def workers() -> AsyncIterator[tuple[MediaWorker, MediaWorker]]:
    aiortc_adapter.configure_ice(["127.0.0.1"], None)
    origin, other = MediaWorker(), MediaWorker()
    await origin.open_pipe()
    await other.open_pipe()
    yield origin, other
    await origin.close()
    await other.close()
    assert origin.pipe is None and other.pipe is None


async def publisher_on(worker: MediaWorker) -> Site:
    site = await Site.join(worker.room(ROOM), "presenter",
                           ClientPeer(audio=ToneTrack(440, amplitude=0.5), video=ColourTrack()))
    producers = site.participant.producers
    assert await wait_until(lambda: all(producers[s].payload_type is not None
                                        for s in ("microphone", "camera")))
    return site


def pipe_over(origin: MediaWorker, other: MediaWorker, publisher: Site,
              to: tuple[str, int] | None = None, origin_seen: tuple[str, int] | None = None,
              sources: tuple[str, ...] = ("microphone", "camera")) -> list[PipedProducer]:
    """What the control channel will do: export on the origin, import on the other side,
    with only JSON between them."""
    assert origin.pipe is not None and other.pipe is not None
    piped = []
    for source in sources:
        described = origin.pipe.export_producer(publisher.participant.producers[source],
                                                to or other.pipe.address)
        message = json.loads(json.dumps({"producer": described.to_json(),
                                         "origin": origin_seen or origin.pipe.address}))
        other.pipe.import_producer(other.room(ROOM), PipedProducer.from_json(message["producer"]),
                                   message["origin"])
        piped.append(described)
    return piped


async def test_one_pipe_leg_per_producer_feeds_every_subscriber_on_the_other_worker(workers) -> None:
    origin, other = workers
    publisher = await publisher_on(origin)
    owner = publisher.participant.id
    local = await Site.join(origin.room(ROOM), "local")
    # The room on the other worker exists before the import: one of its subscribers is in.
    far = [await Site.join(other.room(ROOM), f"far-{i}") for i in range(2)]
    sites = [local, *far]
    try:
        microphone_pipe, camera_pipe = pipe_over(origin, other, publisher)
        for site in sites:
            assert await wait_until(lambda s=site: s.hears_and_sees(owner), timeout=30), site.tracks
        # The import re-pointed the far subscribers' slots, told in "slots" messages: nobody
        # was sent a new offer for it (nor `local` for the far ones' joins).
        for site in sites:
            assert await wait_until(site.in_step), (site.tracks, site.participant.slot_map())
            assert len(site.offers) == 1
        for site in far:  # their one offer was made before the import
            assert any(info is not None and info["participant"] == owner
                       for message in site.of_type("slots") for info in message["slots"].values())

        # One pipe leg per producer, whatever the number of subscribers over there.
        camera = publisher.participant.producers["camera"]
        pipe_legs = [leg for leg in camera.track.legs if leg.sink is not None and leg.sink.plain]
        assert len(pipe_legs) == 1 and len(camera.track.legs) == 2  # the pipe and `local`
        assert pipe_legs[0].ssrc == camera_pipe.ssrc and pipe_legs[0].packets > 0
        assert origin.pipe.exports_of(camera) == [other.pipe.address]
        assert origin.pipe.export_producer(camera, other.pipe.address) == camera_pipe  # idempotent
        assert len(camera.track.legs) == 2
        far_room = other.rooms[ROOM]
        remote = far_room.remote_participants[owner]
        assert (remote.name, remote.role) == ("presenter", "guest")
        assert [p.id for p in far_room.publishers()] == [s.participant.id for s in far] + [owner]
        far_camera = remote.producers["camera"]
        assert far_camera.ssrc == camera_pipe.ssrc and len(far_camera.track.legs) == 2
        assert {c.subscriber_id for c in far_camera.consumers} == {s.participant.id for s in far}
        assert {d["id"] for d in far_room.describe_participants()} == {s.participant.id for s in far}
        assert all(info["name"] == "presenter" for s in far for info in s.tracks.values()
                   if info["participant"] == owner)

        # Speaker detection over there works on the piped audio level.
        assert await wait_until(lambda: far_room.speakers.active == owner, timeout=10)

        # Lip-sync: the far producer's sender report is the publisher's own (NTP, RTP)
        # pair, extrapolated by the origin onto the pipe's timestamps: exact to a tick
        # while the publisher has not sent a newer one in between.
        near_microphone = publisher.participant.producers["microphone"]
        pipe_leg = next(c for c in near_microphone.consumers if c.ssrc == microphone_pipe.ssrc)

        def on_the_publishers_timeline() -> bool:
            far_report = remote.producers["microphone"].sender_report
            near_report = near_microphone.sender_report
            if far_report is None or near_report is None:
                return False
            (_, far_ntp, far_rtp), (_, near_ntp, near_rtp) = far_report, near_report
            expected = near_rtp + round((far_ntp - near_ntp) * 48000) + pipe_leg.leg.ts_offset
            return abs(((far_rtp - expected + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)) <= 2

        assert await wait_until(on_the_publishers_timeline, timeout=10, interval=0.02)

        # A keyframe request from a far subscriber reaches the publisher's camera.
        probe = RtcpProbe(publisher.peer)
        camera_slot = next(t for t in publisher.peer.pc.getTransceivers()
                           if t.mid == publisher.publish["camera"])
        probe.watch_sender(camera_slot)
        requests = origin.counters.pipe_keyframe_requests
        await asyncio.sleep(1.1)  # past the one-a-second throttles on both workers
        await probe.send_pli(far[1].client_transceiver(camera.id), far[1].consumer(camera.id).ssrc)
        assert await wait_until(lambda: camera_slot.sender._ssrc in probe.keyframe_requests, timeout=5)
        assert origin.counters.pipe_keyframe_requests > requests

        # Mute is the origin's: nothing more comes down the pipe.
        origin.rooms[ROOM].set_muted(publisher.participant, "microphone", True)
        await asyncio.sleep(0.3)
        muted_at = remote.producers["microphone"].packets
        await asyncio.sleep(0.5)
        assert remote.producers["microphone"].packets == muted_at
        origin.rooms[ROOM].set_muted(publisher.participant, "microphone", False)
        assert await wait_until(lambda: remote.producers["microphone"].packets > muted_at + 10)

        # stop_import takes the far subscribers' slots off the camera (they show nobody
        # now, or someone else), then the participant goes with its microphone.
        camera_mids = {s: s.mid_of(camera.id) for s in far}
        told = {s: len(s.of_type("slots")) for s in far}
        other.pipe.stop_import(ROOM, camera.id)
        assert far_camera.track.legs == () and not far_camera.consumers
        for site, mid in camera_mids.items():
            assert not any(c.producer is not None and c.producer.id == camera.id
                           for c in site.participant.consumers.values())
            shown = site.participant.slot_map()[mid]
            assert shown is None or shown["participant"] != owner
            assert await wait_until(lambda s=site: not any(
                i["participant"] == owner and i["kind"] == "video" for i in s.tracks.values()))
            assert any(i["participant"] == owner and i["kind"] == "audio" for i in site.tracks.values())
            assert len(site.of_type("slots")) > told[site]
        assert owner in far_room.remote_participants  # its microphone is still piped in
        microphone_mids = {s: s.mid_of(near_microphone.id) for s in far}
        far_microphone = remote.producers["microphone"]
        other.pipe.stop_import(ROOM, near_microphone.id)
        assert owner not in far_room.remote_participants
        assert [p.id for p in far_room.publishers()] == [s.participant.id for s in far]
        assert far_microphone.track.legs == () and not far_microphone.consumers
        for site, mid in microphone_mids.items():  # told as when someone leaves: no new offer
            assert await wait_until(lambda s=site: not any(
                info["participant"] == owner for info in s.tracks.values()), timeout=10)
            assert all(c.producer is None or c.producer.owner_id != owner
                       for c in site.participant.consumers.values())
            shown = site.participant.slot_map()[mid]
            assert shown is None or shown["participant"] != owner
            assert await wait_until(site.in_step)
            assert len(site.offers) == 1
        origin.pipe.stop_export(camera.id, other.pipe.address)
        origin.pipe.stop_export(near_microphone.id, other.pipe.address)
        assert [leg.sink.plain for leg in camera.track.legs] == [False]  # `local` is left
        assert local.hears_and_sees(owner)
    finally:
        for site in (publisher, *sites):
            await site.close()


class LossyLink(asyncio.DatagramProtocol):
    """A wire between two pipe sockets that loses one chosen packet once, and records
    what crosses it. Each direction has its own socket, as two workers' addresses."""

    def __init__(self, forward_to: tuple[str, int], name: str) -> None:
        self.forward_to = forward_to
        self.name = name
        self.peer: LossyLink | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.drop_ssrc: int | None = None
        self.dropped: int | None = None  # the sequence number lost
        self.seen: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.seen.append(data)
        is_rtp = len(data) >= 12 and not 192 <= data[1] <= 223
        if (is_rtp and self.dropped is None and self.drop_ssrc == int.from_bytes(data[8:12], "big")
                and sum(1 for d in self.seen if d[8:12] == data[8:12]) > 60):
            self.dropped = int.from_bytes(data[2:4], "big")
            return
        # Out through the other direction's socket: the far side sees that address.
        assert self.peer is not None and self.peer.transport is not None
        self.peer.transport.sendto(data, self.forward_to)

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[:2]


async def test_an_h264_track_is_piped_as_h264_and_decoded_on_the_other_worker(workers) -> None:
    origin, other = workers
    publisher = await Site.join(origin.room(ROOM), "presenter",
                                ClientPeer(audio=ToneTrack(), video=ColourTrack((30, 200, 30))),
                                video_codec="h264")
    camera = publisher.participant.producers["camera"]
    assert await wait_until(lambda: camera.payload_type is not None)
    vp8_far = await Site.join(other.room(ROOM), "vp8-far")
    h264_far = await Site.join(other.room(ROOM), "h264-far", video_codec="h264")
    try:
        piped = pipe_over(origin, other, publisher)
        assert [p.codec for p in piped] == [None, "h264"]  # audio has none
        far_camera = other.rooms[ROOM].remote_participants[publisher.participant.id].producers["camera"]
        assert far_camera.codec == "h264" and far_camera.track.codec == camera.track.codec
        owner = publisher.participant.id
        assert await wait_until(lambda: h264_far.hears_and_sees(owner), timeout=30), h264_far.tracks
        mid = next(m for m, i in h264_far.tracks.items()
                   if i["participant"] == owner and i["kind"] == "video")
        frame = h264_far.peer.received[mid].last_frame.to_ndarray(format="rgb24")
        assert abs(float(frame[..., 1].mean()) - 200) < 40  # the green decoded over there
        # The VP8 subscriber over there hears it, and is never pointed at its video.
        assert await wait_until(lambda: vp8_far.received_from(owner, "audio") > 10)
        assert not any(i["kind"] == "video" for i in vp8_far.tracks.values())
        assert all(c.producer is None for c in vp8_far.participant.slots["camera"])
    finally:
        for site in (publisher, vp8_far, h264_far):
            await site.close()


def unprotected(data: bytes, key: bytes) -> bytes | None:
    """One SRTP/SRTCP packet decrypted with ``key`` (a fresh session: no replay state)."""
    session = pylibsrtp.Session(pylibsrtp.Policy(
        key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
        srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80))
    return aiortc_adapter.unprotect_with(session, data)


@pytest.mark.parametrize("srtp", [False, True], ids=["plain", "srtp"])
async def test_a_packet_lost_on_the_pipe_is_nacked_up_it_and_resent_from_its_history(
        workers, srtp: bool) -> None:
    origin, other = workers
    assert origin.pipe is not None and other.pipe is not None
    loop = asyncio.get_running_loop()
    _, downstream = await loop.create_datagram_endpoint(
        lambda: LossyLink(other.pipe.address, "down"), local_addr=("127.0.0.1", 0))
    _, upstream = await loop.create_datagram_endpoint(
        lambda: LossyLink(origin.pipe.address, "up"), local_addr=("127.0.0.1", 0))
    downstream.peer, upstream.peer = upstream, downstream
    if srtp:  # workers of two nodes: the resent packet must pass SRTP's replay check too
        origin.pipe.secure(downstream.address, other.pipe.secret)
        other.pipe.secure(upstream.address, origin.pipe.secret)
    feedback_key = pipe_key(other.pipe.secret, origin.pipe.secret)
    publisher = await publisher_on(origin)
    far = await Site.join(other.room(ROOM), "far")
    try:
        # The origin sends to `downstream`, and hears feedback from it; the far worker
        # sends feedback to `upstream`, and hears the media from it.
        _, camera_pipe = pipe_over(origin, other, publisher, to=downstream.address,
                                   origin_seen=upstream.address)
        owner = publisher.participant.id
        assert await wait_until(lambda: far.hears_and_sees(owner), timeout=30)
        camera = publisher.participant.producers["camera"]
        leg = far.consumer(camera.id)
        probe = RtcpProbe(far.peer)
        probe.watch_transport(far.client_transceiver(camera.id))
        downstream.drop_ssrc = camera_pipe.ssrc
        assert await wait_until(lambda: downstream.dropped is not None, timeout=10)
        lost = downstream.dropped
        # The far client NACKs the gap; its worker's history never had the packet, so the
        # NACK goes up the pipe, and the origin resends it from the pipe leg's history.
        assert await wait_until(lambda: origin.counters.pipe_nacks_received > 0, timeout=5)
        nacks = [p for data in upstream.seen if data[1] == rtp.RTCP_RTPFB
                 for p in aiortc_adapter.parse_rtcp(unprotected(data, feedback_key) if srtp
                                                    else data)]
        assert any(p.media_ssrc == camera_pipe.ssrc and lost in p.lost for p in nacks)
        on_the_pipe = camera_pipe.ssrc.to_bytes(4, "big")
        assert await wait_until(lambda: sum(1 for d in downstream.seen if d[8:12] == on_the_pipe
                                            and int.from_bytes(d[2:4], "big") == lost) == 2)
        on_the_leg = (lost + leg.leg.seq_offset) & 0xFFFF
        assert await wait_until(lambda: any(ssrc == leg.ssrc and seq == on_the_leg
                                            for _, ssrc, seq, _ in probe.received), timeout=5)
        assert origin.counters.retransmissions >= 1
    finally:
        await publisher.close()
        await far.close()
        downstream.transport.close()
        upstream.transport.close()


async def test_garbage_on_the_pipe_is_counted_and_dropped_and_the_call_goes_on(workers) -> None:
    origin, other = workers
    assert origin.pipe is not None and other.pipe is not None
    publisher = await publisher_on(origin)
    far = await Site.join(other.room(ROOM), "far")
    try:
        pipe_over(origin, other, publisher)
        owner = publisher.participant.id
        assert await wait_until(lambda: far.hears_and_sees(owner), timeout=30)
        loop = asyncio.get_running_loop()
        sender, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                        local_addr=("127.0.0.1", 0))
        garbage = [
            b"", b"\x00", b"hello, pipe", bytes(200),  # not RTP at all
            rtp.rtp_header(96, False, 1, 1, 0xDEADBEEF, False) + b"who?",  # unknown SSRC
            b"\xa0\x60\x00\x01" + bytes(8) + b"\xff",  # more padding than packet
            b"\x8f\x60" + bytes(10),  # fifteen CSRCs promised, none there
            b"\x80\xc8\x00\x40" + bytes(8),  # RTCP with a length far past the end
            rtp.rtcp_pli(1, 0xDEADBEEF),  # a keyframe request for no pipe of ours
            rtp.rtcp_nack(1, 0xDEADBEEF, [1, 2]),
        ]
        before = [(w.counters.pipe_dropped, w.counters.handler_errors) for w in (origin, other)]
        for worker in (origin, other):
            for datagram in garbage:
                sender.sendto(datagram, worker.pipe.address)
        # An empty datagram may be dropped by the kernel path; everything else is counted.
        assert await wait_until(lambda: all(w.counters.pipe_dropped - b[0] >= len(garbage) - 1
                                            for w, b in zip((origin, other), before, strict=True)))
        assert [w.counters.handler_errors for w in (origin, other)] == [b[1] for b in before]
        sender.close()
        frames = far.received_from(owner, "video")
        assert await wait_until(lambda: far.received_from(owner, "video") > frames + 15)
        assert far.participant.pc.connectionState == "connected"
    finally:
        await publisher.close()
        await far.close()


async def test_one_publisher_and_sixteen_subscribers_on_two_workers(workers) -> None:
    origin, other = workers
    publisher = await publisher_on(origin)
    sites = []
    try:
        for index in range(8):
            sites.append(await Site.join(origin.room(ROOM), f"near-{index}", light=True))
            sites.append(await Site.join(other.room(ROOM), f"far-{index}", light=True))
        pipe_over(origin, other, publisher)
        owner = publisher.participant.id
        for site in sites:
            assert await wait_until(lambda s=site: s.hears_and_sees(owner, minimum=20), timeout=40)
        for producer in publisher.participant.producers.values():
            if producer.source == "screen":
                continue
            legs = producer.track.legs
            assert len(legs) == 9 and sum(1 for leg in legs if leg.sink is not None and leg.sink.plain) == 1
            far_producer = other.rooms[ROOM].remote_participants[owner].producers[producer.source]
            assert len(far_producer.track.legs) == 8
        # Every subscriber's slots were re-pointed for the joins and the import, never
        # renegotiated: one offer each.
        for site in sites:
            assert await wait_until(site.in_step)
            assert len(site.offers) == 1
        # When the publisher leaves its worker, its pipes go too.
        await origin.rooms[ROOM].leave(publisher.participant)
        assert origin.pipe is not None and not origin.pipe.exports_of(
            publisher.participant.producers["camera"])
    finally:
        await publisher.close()
        for site in sites:
            await site.close()


async def test_a_pipe_to_another_nodes_worker_is_srtp_and_takes_only_authentic_packets(
        workers) -> None:
    origin, other = workers
    assert origin.pipe is not None and other.pipe is not None
    loop = asyncio.get_running_loop()
    # A tap on the wire between them (as a switch of the operator's network would see).
    _, downstream = await loop.create_datagram_endpoint(
        lambda: LossyLink(other.pipe.address, "down"), local_addr=("127.0.0.1", 0))
    _, upstream = await loop.create_datagram_endpoint(
        lambda: LossyLink(origin.pipe.address, "up"), local_addr=("127.0.0.1", 0))
    downstream.peer, upstream.peer = upstream, downstream
    origin.pipe.secure(downstream.address, other.pipe.secret)
    other.pipe.secure(upstream.address, origin.pipe.secret)
    publisher = await publisher_on(origin)
    far = await Site.join(other.room(ROOM), "far")
    try:
        _, camera_pipe = pipe_over(origin, other, publisher, to=downstream.address,
                                   origin_seen=upstream.address)
        owner = publisher.participant.id
        assert await wait_until(lambda: far.hears_and_sees(owner), timeout=30)
        # Every packet on the wire is SRTP under the key of that direction: it decrypts
        # with it (and to other bytes), not with the other direction's key.
        on_the_pipe = camera_pipe.ssrc.to_bytes(4, "big")
        media = [d for d in downstream.seen if d[8:12] == on_the_pipe][-5:]
        key, reverse = (pipe_key(origin.pipe.secret, other.pipe.secret),
                        pipe_key(other.pipe.secret, origin.pipe.secret))
        for packet in media:
            plain = unprotected(packet, key)
            assert plain is not None and plain[12:] != packet[12:len(plain)]
            assert unprotected(packet, reverse) is None
        reports = [d for d in downstream.seen if d[1] == rtp.RTCP_SR]
        assert reports and all(unprotected(d, key) is not None for d in reports)

        # A plain packet of that track, even from the address it is piped from, is not
        # authentic: dropped, the call goes on. So is anything from another address.
        forged = rtp.rtp_header(camera_pipe.payload_type, False, 1, 1, camera_pipe.ssrc, False) \
            + b"forged"
        dropped = other.counters.pipe_dropped
        upstream.transport.sendto(forged, other.pipe.address)
        stranger, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                          local_addr=("127.0.0.1", 0))
        stranger.sendto(media[-1], other.pipe.address)  # an authentic packet, replayed
        assert await wait_until(lambda: other.counters.pipe_dropped >= dropped + 2)
        stranger.close()
        frames = far.received_from(owner, "video")
        assert await wait_until(lambda: far.received_from(owner, "video") > frames + 15)
        # Unlinked: its keys go, and it is a plain pipe again.
        other.pipe.unsecure(upstream.address)
        assert other.pipe.secured() == []
    finally:
        await publisher.close()
        await far.close()
        downstream.transport.close()
        upstream.transport.close()


def test_a_pipe_secret_of_the_wrong_size_is_refused() -> None:
    worker = MediaWorker()
    with pytest.raises(ValueError, match="32 bytes"):
        PipeTransport(worker).secure(("127.0.0.1", 9), b"short")


# Simulcast across workers ---------------------------------------------------------------


class LayeredPublisher:
    """A publisher that answers the server's request for camera layers as Chrome does and
    sends three, the way bench/_clients.py does (aiortc cannot send simulcast): the
    pre-encoded layers of bench/_media.py, each on an SSRC of its own with its RID, and
    a microphone. Like Chrome it pauses the layers a ``layers`` message leaves out, and
    records which SSRCs the server asks keyframes of."""

    def __init__(self, room: Room, media: EncodedMedia) -> None:
        self.room = room
        self.participant = room.join("presenter", "guest", video_codecs=["vp8"])
        self.participant.send_offer = self._send_offer
        self.participant.send_message = self._receive_message
        self.pc = new_peer_connection()
        self.audio = OutStream("audio", media)
        self.layers = [OutStream("video", media, layer) for layer in media.layers]
        self.answered_rids: list[str] = []
        self.active: list[str] | None = None  # the last "layers" message
        self.keyframe_requests: Counter[int] = Counter()  # PLIs by media SSRC
        self.pacer = Pacer()
        for stream in (self.audio, *self.layers):
            self.pacer.add(stream, 0.0)
        self._writers: dict[int, Any] = {}  # layer streams paused by the server: their writer
        self._taken: set[int] = set()
        self._tasks: set[asyncio.Future[None]] = set()

    async def start(self) -> None:
        await self.participant.renegotiate()
        self.room.announce_join(self.participant)
        self.pacer.start()

    async def _send_offer(self, offer: Offer) -> None:
        task = asyncio.ensure_future(self._answer(offer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, offer: Offer) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
        sending = {offer.publish["microphone"], offer.publish["camera"]}
        for transceiver in self.pc.getTransceivers():
            if id(transceiver) not in self._taken:
                self._taken.add(id(transceiver))
                aiortc_adapter.take_over_transceiver(transceiver, on_receive=None, on_send=self._on_send)
            dtls = transceiver.receiver.transport
            if dtls is not None and id(dtls) not in self._taken:
                self._taken.add(id(dtls))
                aiortc_adapter.tap_transport(dtls, lambda data, arrival: None, self._on_rtcp, self._fail)
            transceiver.direction = "sendonly" if transceiver.mid in sending else "inactive"
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        sdp, self.answered_rids = _sdp.answer_simulcast(self.pc.localDescription.sdp, offer.sdp,
                                                        offer.publish["camera"])
        await self.participant.accept_answer(sdp, offer.revision)

    def _on_send(self, negotiated: aiortc_adapter.NegotiatedRtp, ssrc: int, rtx_ssrc: int,
                 dtls: Any) -> None:
        if negotiated.kind == "audio":
            if not self.audio.ready:
                self.audio.configure(negotiated, ssrc, dtls)
            return
        configure_layers(self.layers, negotiated, ssrc, rtx_ssrc, dtls,
                         skip=lambda stream: stream.ssrc in self._writers)  # paused, not new

    async def _receive_message(self, message: dict[str, Any]) -> None:
        if message["type"] != "layers":
            return
        self.active = list(message["active"])
        for stream in self.layers:  # as the page sets `active: false` on an encoding
            rid = stream.rid.decode()
            if rid not in self.active and stream.write is not None:
                self._writers[stream.ssrc], stream.write = stream.write, None
            elif rid in self.active and stream.ssrc in self._writers:
                stream.write = self._writers.pop(stream.ssrc)

    def _on_rtcp(self, data: bytes) -> None:
        for packet in aiortc_adapter.parse_rtcp(data):
            if isinstance(packet, aiortc_adapter.RtcpPsfb) and packet.fmt == rtp.RTCP_PSFB_PLI:
                self.keyframe_requests[packet.media_ssrc] += 1

    def _fail(self, exc: BaseException) -> None:
        raise AssertionError(f"publisher packet path failed: {exc!r}")

    def ssrc_of(self, rid: str) -> int:
        return next(stream.ssrc for stream in self.layers if stream.rid == rid.encode())

    async def close(self) -> None:
        self.pacer.stop()
        for task in list(self._tasks):
            task.cancel()
        await self.pc.close()


def keyframe_height(data: bytes) -> int | None:
    """The picture height of a VP8 keyframe's first RTP packet (RFC 7741; RFC 6386 9.1),
    None for any other packet."""
    try:
        view = rtp.parse_rtp(data)
    except rtp.MalformedPacket:
        return None
    payload = view.payload(data)
    if len(payload) < 16:
        return None
    start = 1
    if payload[0] & 0x80:  # X: extensions follow
        extended = payload[1]
        start = 2
        if extended & 0x80:  # I: a 7- or 15-bit picture ID
            start += 2 if payload[start] & 0x80 else 1
        start += bool(extended & 0x40) + bool(extended & 0x30)  # L, then T/K
    first = payload[0] & 0x10 and payload[0] & 0x07 == 0
    if not first or payload[start] & 0x01 or len(payload) < start + 10:
        return None  # not the start of a keyframe
    return int.from_bytes(payload[start + 8:start + 10], "little") & 0x3FFF


@pytest.fixture(scope="module")
def layered_media() -> EncodedMedia:
    return encode_media(seconds=2.0, layers=True)  # 640x360, 320x180, 160x90


@pytest.mark.parametrize("srtp", [False, True], ids=["plain", "srtp"])
async def test_a_simulcast_camera_is_piped_with_every_layer_and_each_far_subscriber_gets_its_own(
        workers, layered_media: EncodedMedia, srtp: bool) -> None:
    origin, other = workers
    assert origin.pipe is not None and other.pipe is not None
    if srtp:  # workers of two nodes
        origin.pipe.secure(other.pipe.address, other.pipe.secret)
        other.pipe.secure(origin.pipe.address, origin.pipe.secret)
    publisher = LayeredPublisher(origin.room(ROOM), layered_media)
    far_room = other.room(ROOM)
    small, big = [await Site.join(far_room, name, light=True) for name in ("thumbnail", "speaker-view")]
    try:
        await publisher.start()
        camera = publisher.participant.producers["camera"]
        assert await wait_until(lambda: camera.payload_type is not None and len(camera.layers) == 3)
        assert publisher.answered_rids == ["q", "h", "f"]
        owner = publisher.participant.id
        pipe_over(origin, other, publisher, sources=("microphone", "camera"))  # type: ignore[arg-type]
        piped = origin.pipe.described(camera.id, other.pipe.address)
        assert piped is not None and [rid for rid, _ in piped.layers] == ["q", "h", "f"]
        # One pipe leg per layer, on an SSRC of its own: none on the camera's slots here.
        assert [len(layer.track.legs) for layer in camera.layers] == [1, 1, 1]
        assert {leg.ssrc for layer in camera.layers for leg in layer.track.legs} == \
            {ssrc for _, ssrc in piped.layers}
        far_camera = far_room.remote_participants[owner].producers["camera"]
        assert [layer.rid for layer in far_camera.layers] == ["q", "h", "f"]
        assert await wait_until(lambda: all(layer.packets > 30 for layer in far_camera.layers), timeout=20)

        # The thumbnail's tile is small, the speaker view's big (device pixels).
        for site, height in ((small, 80.0), (big, 500.0)):
            assert await wait_until(lambda s=site: any(c.producer is far_camera
                                                       for c in s.participant.consumers.values()))
            site.participant.set_tiles({site.mid_of(camera.id): height})
        small_slot, big_slot = small.consumer(camera.id), big.consumer(camera.id)
        assert await wait_until(lambda: small_slot.layer == 0 and small_slot.target_layer is None,
                                timeout=20)
        assert big_slot.layer in (None, 2) and big_slot.target_layer is None
        # What arrives on each one's slot: keyframes of 90 lines (q) and 360 lines (f).
        for site, slot, lines in ((small, small_slot, 90), (big, big_slot, 360)):
            seen = site.keyframes
            before = seen[(slot.ssrc, lines)]
            assert await wait_until(lambda s=seen, sl=slot, n=lines, b=before: s[(sl.ssrc, n)] >= b + 2,
                                    timeout=10), seen
        settled = dict(small.keyframes)
        await asyncio.sleep(1.5)  # over a keyframe interval: nothing but the low layer comes
        assert {lines for (ssrc, lines), count in small.keyframes.items()
                if ssrc == small_slot.ssrc and count > settled.get((ssrc, lines), 0)} == {90}
        # The low layer's keyframe was asked of the publisher, through the pipe, on its SSRC.
        assert publisher.keyframe_requests[publisher.ssrc_of("q")] > 0
        assert origin.counters.pipe_keyframe_requests > 0

        # Nobody on either worker watches the middle layer: paused at the publisher; the
        # top stays on for the far speaker view (no subscriber on the origin wants it).
        assert await wait_until(lambda: publisher.active == ["q", "f"], timeout=15), publisher.active
        assert origin.counters.pipe_layer_reports > 0
        middle = far_camera.layers[1].packets
        await asyncio.sleep(1.0)
        assert far_camera.layers[1].packets == middle  # not sent, so not piped either
        top = far_camera.layers[2].packets
        assert await wait_until(lambda: far_camera.layers[2].packets > top + 10)

        # The speaker view becomes a thumbnail too: the top layer is watched nowhere.
        big.participant.set_tiles({big.mid_of(camera.id): 80.0})
        assert await wait_until(lambda: big_slot.layer == 0, timeout=20)
        assert await wait_until(lambda: publisher.active == ["q"], timeout=15), publisher.active
        low = (small.packets[small_slot.ssrc], big.packets[big_slot.ssrc])
        assert await wait_until(lambda: small.packets[small_slot.ssrc] > low[0] + 10
                                and big.packets[big_slot.ssrc] > low[1] + 10)
    finally:
        await publisher.close()
        for site in (small, big):
            await site.close()
