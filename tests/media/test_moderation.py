"""Moderation, chat, speaker and bandwidth decisions, each seen from the affected side."""

from __future__ import annotations

import asyncio

import pytest
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, pack_remb_fci

from mcu import aiortc_adapter as adapter
from mcu import twcc
from multipoint.app import MEDIA
from tests.media.test_multiparty import all_flowing, participant_id, room_token
from tests.peers import ClientPeer, ColourTrack, ToneTrack, wait_until
from tests.signal_client import SignalClient

pytestmark = pytest.mark.media


async def join(server, room: str, name: str, role: str = "guest", loudness: float = 0.3,
               colour: tuple[int, int, int] = (90, 90, 90)) -> SignalClient:
    client = await SignalClient.connect(server.ws_url)
    peer = ClientPeer(audio=ToneTrack(440, amplitude=loudness), video=ColourTrack(colour))
    await client.join_with(peer, room_token(server, room, role), name=name)
    return client


async def error_code(client: SignalClient, message: dict) -> str:
    count = len(client.of_type("error"))
    await client.send(message)
    assert await wait_until(lambda: len(client.of_type("error")) > count, timeout=5)
    return client.of_type("error")[-1]["code"]


async def test_host_mutes_asks_to_unmute_locks_and_removes(server) -> None:
    room = "moderated"
    host = await join(server, room, "Hejtman", role="host")
    alice = await join(server, room, "Alice")
    bob = await join(server, room, "Bob")
    host_id, alice_id, bob_id = (participant_id(c) for c in (host, alice, bob))
    media = server.app[MEDIA]
    try:
        assert await wait_until(lambda: all_flowing(bob, {host_id, alice_id}))

        # Guests cannot moderate.
        assert await error_code(alice, {"type": "mute", "participant": bob_id}) == "forbidden"
        assert await error_code(alice, {"type": "lock", "locked": True}) == "forbidden"
        assert await error_code(host, {"type": "mute", "participant": "p999"}) == "unknown_participant"

        # Mute: Alice is told, and nobody receives her audio any more, whatever she sends.
        await host.send({"type": "mute", "participant": alice_id})
        assert await wait_until(lambda: alice.of_type("muted"))
        assert alice.of_type("muted")[-1]["by"] == "Hejtman"
        assert await wait_until(lambda: any(
            p["id"] == alice_id and p["audio_muted"] for m in bob.of_type("participants")
            for p in m["participants"]))
        await asyncio.sleep(0.3)
        heard = bob.live_frames("audio")[alice_id]
        await asyncio.sleep(1.0)
        assert bob.live_frames("audio")[alice_id] <= heard + 2  # a frame or two in flight
        assert bob.live_frames("audio")[host_id] > 0

        # The host asks her to unmute; only she can do it, and then she is heard again.
        await host.send({"type": "request_unmute", "participant": alice_id})
        assert await wait_until(lambda: alice.of_type("unmute_requested"))
        await alice.send({"type": "set_muted", "audio": False})
        assert await wait_until(lambda: bob.live_frames("audio")[alice_id] > heard + 20)

        # Chat reaches everyone, with the sender's name.
        await alice.send({"type": "chat", "text": "Dobrý den všem"})
        for client in (host, alice, bob):
            assert await wait_until(lambda c=client: c.of_type("chat"))
            assert client.of_type("chat")[-1]["name"] == "Alice"
            assert client.of_type("chat")[-1]["text"] == "Dobrý den všem"

        # Lock: a new guest is refused; the room sees that it is locked.
        await host.send({"type": "lock", "locked": True})
        assert await wait_until(lambda: any(m["locked"] for m in bob.of_type("participants")))
        latecomer = await SignalClient.connect(server.ws_url)
        await latecomer.send({"type": "join", "v": 1, "token": room_token(server, room)})
        assert (await latecomer.next("error"))["code"] == "room_locked"
        await latecomer.close()
        assert len(media.rooms[room].participants) == 3

        # Remove: Bob is told and disconnected; the others stop receiving him.
        await host.send({"type": "remove", "participant": bob_id})
        assert await wait_until(lambda: bob.of_type("removed"))
        assert await wait_until(lambda: bob.ws.closed)
        assert await wait_until(lambda: bob_id not in media.rooms[room].participants)
        assert await wait_until(lambda: bob_id not in {i["participant"] for i in alice.tracks.values()})
    finally:
        for client in (host, alice, bob):
            await client.close()


async def test_participants_hear_who_speaks(server) -> None:
    room = "speakers"
    quiet = await join(server, room, "Quiet", loudness=0.0005)
    loud = await join(server, room, "Loud", loudness=0.5)
    try:
        loud_id = participant_id(loud)
        assert await wait_until(lambda: any(m["active"] == loud_id for m in quiet.of_type("speaker")),
                                timeout=10)
        last = [m for m in quiet.of_type("speaker")][-1]
        assert participant_id(quiet) not in last["speaking"]
    finally:
        await quiet.close()
        await loud.close()


async def send_remb(client: SignalClient, bitrate: int, ssrcs: list[int]) -> None:
    """The client reports a receive estimate covering these streams (as Chrome does)."""
    packet = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=pack_remb_fci(bitrate, ssrcs))
    await client.peer.pc.getTransceivers()[0].sender.transport._send_rtp(bytes(packet))


async def test_congested_subscriber_gets_audio_only_then_video_comes_back(server) -> None:
    room = "weak-link"
    # No probe while the test watches the paused video (a probe resumes it by design);
    # a short interval once the estimate has recovered.
    server.app[MEDIA].config.probe_interval_s = 60.0
    speaker = await join(server, room, "Speaker", colour=(200, 40, 40))
    weak = await join(server, room, "Weak office")
    speaker_id = participant_id(speaker)
    media = server.app[MEDIA]
    # The weak office's estimates are the test's alone: aiortc's own, sent when its
    # estimator likes, would cut a congestion short at random moments.
    adapter.stop_bandwidth_reports(weak.peer.pc)
    try:
        assert await wait_until(lambda: all_flowing(weak, {speaker_id}))
        subscriber = media.rooms[room].participants[participant_id(weak)]
        leg = next(c for c in subscriber.consumers.values() if c.kind == "video")
        # transport-cc was offered; aiortc's answer leaves it out (it sends no transport
        # feedback), so this connection's estimate is its REMB.
        offer = next(m for m in weak.all if m.get("type") == "offer")
        assert f"a=extmap:5 {twcc.URI}" in offer["sdp"] and " transport-cc" in offer["sdp"]
        assert subscriber.transport_cc_id == 0 and leg.leg.sink.transport_cc_id == 0
        # The weak office keeps reporting 5 kbit/s: after CONGESTION_HOLD_S its video
        # pauses, its audio goes on.
        for _ in range(30):
            await send_remb(weak, 5_000, [leg.ssrc])
            if leg.paused:
                break
            await asyncio.sleep(0.2)
        assert leg.paused
        assert subscriber.quality()["estimator"] == "remb"
        assert subscriber.quality()["estimate_down_kbps"] == 5
        video, audio = weak.live_frames("video")[speaker_id], weak.live_frames("audio")[speaker_id]
        await asyncio.sleep(1.0)
        assert weak.live_frames("video")[speaker_id] <= video + 3
        assert weak.live_frames("audio")[speaker_id] > audio + 5
        media.config.probe_interval_s = 1.0
        # Its estimate recovers: the video is probed again, starting on a keyframe.
        for _ in range(10):
            await send_remb(weak, 5_000_000, [leg.ssrc])
            if not leg.paused:
                break
            await asyncio.sleep(0.5)
        assert not leg.paused
        assert await wait_until(lambda: weak.live_frames("video")[speaker_id] > video + 20)
    finally:
        await speaker.close()
        await weak.close()


async def test_the_operator_sees_live_rooms_and_mutes_and_removes(server) -> None:
    from multipoint.app import LIVE_ROOMS

    room = "operated"
    alice = await join(server, room, "Alice")
    bob = await join(server, room, "Bob")
    live = server.app[LIVE_ROOMS]
    try:
        alice_id, bob_id = participant_id(alice), participant_id(bob)
        assert await wait_until(lambda: all_flowing(alice, {bob_id}))
        (listed,) = [r for r in await live.rooms() if r["name"] == room]
        assert {p["name"] for p in listed["participants"]} == {"Alice", "Bob"}
        assert all(p["bitrate_up_kbps"] >= 0 and "loss_up_pct" in p for p in listed["participants"])
        await live.mute(room, alice_id, by="Operátor")
        assert await wait_until(lambda: alice.of_type("muted"))
        assert alice.of_type("muted")[-1]["by"] == "Operátor"
        await live.remove(room, bob_id, by="Operátor")
        assert await wait_until(lambda: bob.of_type("removed") and bob.ws.closed)
        assert live.load()["participants"] == 1
        with pytest.raises(LookupError):
            await live.mute(room, "p-none", by="x")
    finally:
        await alice.close()
        await bob.close()


async def test_a_lock_set_while_a_guest_is_admitted_keeps_the_guest_out(server) -> None:
    """The join used to look at the lock only before its admission, which awaits the
    scheduler and its database (slow under load): a host who locked the room meanwhile
    still got the guest in. The admission here is the server's own, held up until the
    room is locked."""
    from multipoint.app import LIVE_ROOMS

    room = "locked-meanwhile"
    signaling = server.app[LIVE_ROOMS].signaling
    admit, admitting, go_on = signaling.admit, asyncio.Event(), asyncio.Event()

    async def slow_admit(grant, kind):
        if grant.role != "host":
            admitting.set()
            await go_on.wait()
        return await admit(grant, kind)

    signaling.admit = slow_admit
    host = await join(server, room, "Hejtman", role="host")
    guest = await SignalClient.connect(server.ws_url)
    media, pool = server.app[MEDIA], signaling.pool
    try:
        await guest.send({"type": "join", "v": 1, "token": room_token(server, room)})
        await asyncio.wait_for(admitting.wait(), 10)
        await host.send({"type": "lock", "locked": True})
        assert await wait_until(lambda: any(m["locked"] for m in host.of_type("participants")))
        go_on.set()
        assert (await guest.next("error"))["code"] == "room_locked"
        assert not guest.of_type("joined")
        assert len(media.rooms[room].participants) == 1
        assert len(signaling.channels[room].connections) == 1
        assert sum(len(state.units) for state in pool.states) == 1  # nothing held for it
        # Its join no longer counts as pending: only the host's may (until it connects).
        assert await wait_until(lambda: signaling.pending_total == 0)
    finally:
        go_on.set()
        await host.close()
        await guest.close()
