"""Multi-party rooms with real aiortc participants through the whole service."""

from __future__ import annotations

import asyncio

import aiohttp
import numpy as np
import pytest

from multipoint.app import LIVE_ROOMS, MEDIA
from signaling.tokens import JoinGrant, issue_token
from tests.peers import ClientPeer, ColourTrack, RtcpProbe, ToneTrack, wait_until
from tests.signal_client import SignalClient

pytestmark = pytest.mark.media

COLOURS = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (220, 220, 30), (30, 220, 220)]


def room_token(server, room: str, role: str = "guest") -> str:
    return issue_token(server.settings.signing_secret(), JoinGrant(room=room, role=role), 300)


async def join(server, room: str, index: int, role: str = "guest") -> SignalClient:
    client = await SignalClient.connect(server.ws_url)
    peer = ClientPeer(audio=ToneTrack(300 + 200 * index), video=ColourTrack(COLOURS[index]))
    await client.join_with(peer, room_token(server, room, role), name=f"site-{index}")
    return client


def all_flowing(client: SignalClient, others: set[str], minimum: int = 10) -> bool:
    video, audio = client.live_frames("video"), client.live_frames("audio")
    return (set(video) == others and set(audio) == others
            and all(video[p] >= minimum for p in others) and all(audio[p] >= minimum for p in others))


def participant_id(client: SignalClient) -> str:
    return client.of_type("joined")[0]["participant"]


async def test_four_sites_see_and_hear_each_other_then_one_leaves_and_one_joins_late(server) -> None:
    room = "porada-orp"
    clients = [await join(server, room, i) for i in range(4)]
    ids = [participant_id(c) for c in clients]
    try:
        for client, own in zip(clients, ids, strict=True):
            others = set(ids) - {own}
            assert await wait_until(lambda c=client, o=others: all_flowing(c, o), timeout=30), \
                (client.live_frames("video"), client.live_frames("audio"))
        # Each decoded picture is the colour its sender sent.
        first = clients[0]
        for mid, info in first.tracks.items():
            if info["kind"] == "video":
                frame = first.peer.received[mid].last_frame.to_ndarray(format="rgb24")
                median = np.median(frame.reshape(-1, 3), axis=0)  # the white bar moves
                expected = COLOURS[ids.index(info["participant"])]
                assert all(abs(median[i] - expected[i]) < 40 for i in range(3))

        # One leaves: the others' slots that showed it show nobody now, with no new offer.
        m_lines = len(clients[0].peer.pc.getTransceivers())
        offers = [len(c.of_type("offer")) for c in clients]
        leaving = clients.pop(3)
        gone = ids.pop(3)
        await leaving.send({"type": "leave"})
        await leaving.close()
        media = server.app[MEDIA]
        for client, own in zip(clients, ids, strict=True):
            assert await wait_until(
                lambda c=client: gone not in {i["participant"] for i in c.tracks.values()})
            participant = media.rooms[room].participants[own]
            assert all(c.producer is None or c.producer.owner_id != gone
                       for c in participant.consumers.values())
            assert await wait_until(lambda c=client, o=set(ids) - {own}: all_flowing(c, o, 20))
            assert client.of_type("slots")

        # A late joiner gets every video quickly: the forwarder asks publishers for a keyframe.
        requests_before = media.counters.keyframe_requests
        late = await join(server, room, 4)
        clients.append(late)
        assert await wait_until(lambda: all_flowing(late, set(ids), minimum=5), timeout=10)
        assert media.counters.keyframe_requests > requests_before
        # The newcomer shows in the slots the one who left freed: same m-lines, and
        # nobody already in the room was sent a new offer, for the leave or the join.
        assert await wait_until(lambda: participant_id(late) in clients[0].live_frames("audio"))
        assert len(clients[0].peer.pc.getTransceivers()) == m_lines
        for client in clients[:-1]:
            assert await wait_until(lambda c=client: participant_id(late) in c.live_frames("video")
                                    and c.live_frames("video")[participant_id(late)] > 5)
            assert await wait_until(lambda c=client: c.live_frames("audio").get(participant_id(late), 0) > 5)
        assert [len(c.of_type("offer")) for c in clients[:-1]] == offers[:3]
    finally:
        for client in clients:
            await client.close()


async def test_keyframe_request_and_nack_between_participants(server) -> None:
    room = "pli-nack"
    publisher, subscriber = await join(server, room, 0), await join(server, room, 1)
    try:
        publisher_id = participant_id(publisher)
        assert await wait_until(lambda: all_flowing(subscriber, {publisher_id}))
        media = server.app[MEDIA]
        sub = media.rooms[room].participants[participant_id(subscriber)]
        leg = next(c for c in sub.consumers.values()
                   if c.kind == "video" and c.producer is not None and c.producer.owner_id == publisher_id)
        mid = next(m for m, i in subscriber.tracks.items()
                   if i["participant"] == publisher_id and i["kind"] == "video")
        transceiver = next(t for t in subscriber.peer.pc.getTransceivers() if t.mid == mid)

        # PLI from the subscriber reaches the publisher's own sender (throttled to 1/s).
        probe_pub = RtcpProbe(publisher.peer)
        camera = next(t for t in publisher.peer.pc.getTransceivers()
                      if t.mid == publisher.of_type("offer")[0]["publish"]["camera"])
        probe_pub.watch_sender(camera)
        await asyncio.sleep(1.1)
        await probe_pub.send_pli(transceiver, leg.ssrc)
        assert await wait_until(lambda: camera.sender._ssrc in probe_pub.keyframe_requests, timeout=5)

        # NACK: the retransmission carries the very packet that was sent first.
        probe_sub = RtcpProbe(subscriber.peer)
        probe_sub.watch_transport(transceiver)
        assert await wait_until(lambda: sum(1 for p in probe_sub.received if p[1] == leg.ssrc) >= 5)
        seq, payload = [(s, data) for _, ssrc, s, data in probe_sub.received if ssrc == leg.ssrc][-2]
        await probe_sub.send_nack(transceiver, leg.ssrc, [seq])
        assert await wait_until(lambda: any(p[0] == leg.rtx_payload_type for p in probe_sub.received))
        rtx = next(p for p in probe_sub.received if p[0] == leg.rtx_payload_type)
        assert rtx[1] == leg.rtx_ssrc
        assert int.from_bytes(rtx[3][:2], "big") == seq and rtx[3][2:] == payload

        # Its receiver reports answer our sender reports: what passed since one left,
        # less how long the subscriber held it before answering (DLSR: up to a second
        # with aiortc), is the round trip of a loopback, and the estimator runs on it.
        assert await wait_until(lambda: sub.rtt_s is not None, timeout=5)
        assert 0 <= sub.rtt_s < 0.1
        assert sub.estimator.rtt_s == sub.rtt_s and sub.quality()["rtt_ms"] == round(sub.rtt_s * 1000, 1)
    finally:
        await publisher.close()
        await subscriber.close()


async def test_a_subscriber_that_dies_never_disturbs_the_publisher_or_the_others(server) -> None:
    room = "dies"
    clients = [await join(server, room, i) for i in range(3)]
    ids = [participant_id(c) for c in clients]
    media = server.app[MEDIA]
    try:
        for client, own in zip(clients, ids, strict=True):
            assert await wait_until(lambda c=client, o=set(ids) - {own}: all_flowing(c, o))
        # Its media connection drops dead without a word on the signaling socket.
        dying = clients.pop(2)
        dead = ids.pop(2)
        await dying.peer.pc.close()
        assert await wait_until(lambda: dead not in media.rooms[room].participants, timeout=15)
        assert await wait_until(lambda: dying.of_type("disconnected"), timeout=5)
        for client, own in zip(clients, ids, strict=True):
            before = dict(client.live_frames("video"))
            others = set(ids) - {own}
            assert await wait_until(lambda c=client, b=before, o=others: all(
                c.live_frames("video").get(p, 0) > b.get(p, 0) + 10 for p in o))
            assert client.peer.pc.connectionState == "connected"
        await dying.close()
    finally:
        for client in clients:
            await client.close()


async def test_garbage_from_one_participant_leaves_the_call_going_for_the_rest(server) -> None:
    room = "garbage"
    good, bad, other = [await join(server, room, i) for i in range(3)]
    ids = [participant_id(c) for c in (good, bad, other)]
    media = server.app[MEDIA]
    try:
        assert await wait_until(lambda: all_flowing(good, {ids[1], ids[2]}))
        transport = bad.peer.pc.getTransceivers()[0].sender.transport
        for index in range(20):
            await transport._send_rtp(b"\xa0\x60" + index.to_bytes(2, "big") + bytes(8) + b"\x00\xff")
            await transport._send_rtp(b"\x80\xc9\x00\x40" + bytes(8))
        for text in ("{", "[]", '{"type": "mute"}', '{"type": "chat", "text": 5}', "x" * 70_000):
            await bad.send(text)
        assert await wait_until(lambda: len(bad.of_type("error")) >= 5)
        assert {e["code"] for e in bad.of_type("error")} >= {"bad_json", "bad_message", "too_large"}
        # Counted as they arrive (UDP, read by the worker in its own time).
        assert await wait_until(lambda: media.counters.packets_malformed >= 20
                                and media.counters.rtcp_malformed >= 20)
        before = dict(good.live_frames("video"))
        assert await wait_until(lambda: all(good.live_frames("video")[p] > before[p] + 15
                                            for p in (ids[1], ids[2])))
        assert media.counters.handler_errors == 0
    finally:
        for client in (good, bad, other):
            await client.close()


async def test_screen_share_reaches_the_others_and_stops(server) -> None:
    room = "screen"
    presenter = await SignalClient.connect(server.ws_url)
    peer = ClientPeer(audio=ToneTrack(), video=ColourTrack(COLOURS[0]), screen=ColourTrack((250, 250, 250)))
    await presenter.join_with(peer, room_token(server, room), name="presenter")
    viewer = await join(server, room, 1)
    presenter_id = participant_id(presenter)

    def screen_frames() -> int:
        return sum(viewer.peer.frames("video").get(mid, 0) for mid, info in viewer.tracks.items()
                   if info["source"] == "screen")

    try:
        assert await wait_until(lambda: all_flowing(viewer, {presenter_id}))
        assert not any(info["source"] == "screen" for info in viewer.tracks.values())
        await presenter.send({"type": "screen", "active": True})
        assert await wait_until(lambda: screen_frames() > 10, timeout=15)
        mid = next(m for m, i in viewer.tracks.items() if i["source"] == "screen")
        image = viewer.peer.received[mid].last_frame.to_ndarray(format="rgb24")
        assert np.median(image.reshape(-1, 3), axis=0).min() > 200  # the white screen, not the camera
        await presenter.send({"type": "screen", "active": False})
        assert await wait_until(lambda: not any(i["source"] == "screen" for i in viewer.tracks.values()))
        assert all(c.producer is None for c in server.app[MEDIA].rooms[room]
                   .participants[participant_id(viewer)].slots["screen"])
        # Sharing on and off changed what a slot shows: no new offer for the viewer.
        assert len(viewer.of_type("offer")) == 1
    finally:
        await presenter.close()
        await viewer.close()


async def test_a_participant_whose_network_dies_is_removed_when_it_does_not_come_back(server) -> None:
    room = "dead-network"
    # Its lost socket keeps it in the room for the grace (docs/protocol.md, "Coming
    # back"), 2 s here, after the 12 s the heartbeats take to notice.
    server.app[LIVE_ROOMS].signaling.config.resume_grace_s = 2.0
    stays = await join(server, room, 0)
    # This client stops answering anything, signaling heartbeats included: a dead network.
    session = aiohttp.ClientSession()
    ws = await session.ws_connect(server.ws_url, autoping=False)
    silent = SignalClient(session, ws)
    silent.peer = ClientPeer(audio=ToneTrack(), video=ColourTrack())
    await silent.send({"type": "join", "v": 1, "token": room_token(server, room), "name": "silent"})
    await silent.next("joined")
    offer = await silent.next("offer")
    await silent.send({"type": "answer", "sdp": await silent.peer.answer(offer["sdp"], offer["publish"]),
                       "revision": offer["revision"]})
    media = server.app[MEDIA]
    silent_id = participant_id(silent)
    try:
        assert await wait_until(lambda: silent_id in stays.live_frames("video"), timeout=15)
        silent._reader.cancel()  # nothing reads, nothing answers the server's pings
        assert await wait_until(lambda: silent_id not in media.rooms[room].participants, timeout=25)
        assert await wait_until(lambda: silent_id not in {i["participant"] for i in stays.tracks.values()})
        remaining = media.rooms[room].participants[participant_id(stays)]
        assert all(c.producer is None or c.producer.owner_id != silent_id
                   for c in remaining.consumers.values())
        assert all(c.subscriber_id != silent_id for p in remaining.producers.values() for c in p.consumers)
    finally:
        await stays.close()
        await silent.peer.close()
        await ws.close()
        await session.close()


async def test_a_participant_never_has_two_offers_out() -> None:
    """Joins that land together each ask to renegotiate the same participant: one offer
    goes out, the rest wait for its answer (two at once broke a browser's negotiation)."""
    from mcu import aiortc_adapter
    from mcu.room import MediaWorker

    aiortc_adapter.configure_ice(["127.0.0.1"], None)
    worker = MediaWorker()
    participant = worker.room("race").join("site", "guest")
    sent = []

    async def send_offer(offer) -> None:
        await asyncio.sleep(0)  # the socket write yields, as signaling's does
        sent.append(offer.revision)

    participant.send_offer = send_offer
    await asyncio.gather(participant.renegotiate(), participant.renegotiate(), participant.renegotiate())
    assert sent == [1] and participant._dirty  # the others are owed an offer after the answer
    await worker.close()
