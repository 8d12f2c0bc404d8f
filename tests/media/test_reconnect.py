"""Coming back after a lost network: ICE restarted on the same connection, and a lost
socket taken over by a new one, without a new join (docs/protocol.md, "Coming back")."""

from __future__ import annotations

import re

import pytest

import signaling.server as signaling_server
from multipoint.app import LIVE_ROOMS, MEDIA
from tests.media.test_multiparty import all_flowing, join, participant_id, room_token
from tests.peers import wait_until
from tests.signal_client import SignalClient

pytestmark = pytest.mark.media


def ice_ufrag(sdp: str) -> str:
    found = re.search(r"^a=ice-ufrag:(\S+)", sdp, re.MULTILINE)
    assert found is not None
    return found.group(1)


@pytest.fixture(autouse=True)
def _quick_heartbeats(monkeypatch: pytest.MonkeyPatch) -> None:
    # A socket whose client went quiet is given up after 1.5 s instead of 12 s.
    monkeypatch.setattr(signaling_server, "HEARTBEAT_S", 1.0)


async def lose_socket(server, client: SignalClient, participant: str) -> None:
    """The client's network goes quiet: it stops reading, so stops answering the server's
    heartbeats, and the server gives the socket up as lost (not closed by the client)."""
    client._reader.cancel()
    socket = server.app[LIVE_ROOMS].signaling.connections[participant].ws
    assert await wait_until(lambda: socket.closed, timeout=10)


def frames_now(client: SignalClient, other: str) -> tuple[int, int]:
    return client.live_frames("video").get(other, 0), client.live_frames("audio").get(other, 0)


async def grows(client: SignalClient, other: str, timeout: float = 15) -> bool:
    """Both video frames and audio frames from ``other`` keep arriving."""
    before = frames_now(client, other)
    return await wait_until(lambda: all(now > then + 5 for now, then in
                                        zip(frames_now(client, other), before, strict=True)),
                            timeout=timeout)


async def test_an_ice_restart_keeps_the_participant_its_slots_and_its_media(server) -> None:
    room = "obnova-ice"
    first, second = await join(server, room, 0), await join(server, room, 1)
    ids = participant_id(first), participant_id(second)
    try:
        assert await wait_until(lambda: all_flowing(first, {ids[1]}) and all_flowing(second, {ids[0]}),
                                timeout=30)
        offers = len(first.of_type("offer"))
        old_ufrag = ice_ufrag(first.of_type("offer")[-1]["sdp"])
        await first.send({"type": "restart_ice"})
        participant = server.app[MEDIA].rooms[room].participants[ids[0]]
        assert await wait_until(lambda: participant.ice_restarts == 1, timeout=15)
        (restart,) = first.of_type("offer")[offers:]
        assert ice_ufrag(restart["sdp"]) != old_ufrag  # new credentials on the same connection
        assert restart["tracks"]  # what the slots show comes with it
        assert first.peer is not None and first.peer.ice_restarts == 1
        assert not first.of_type("error")
        # Still the same participant, and media flows both ways over the new pair.
        assert await grows(first, ids[1]) and await grows(second, ids[0])
        assert [p["id"] for p in second.of_type("participants")[-1]["participants"]] == list(ids)
    finally:
        await first.close()
        await second.close()


async def test_a_lost_socket_is_taken_over_by_a_new_one_without_a_new_join(server) -> None:
    room = "obnova-spojeni"
    first, second = await join(server, room, 0), await join(server, room, 1)
    ids = participant_id(first), participant_id(second)
    secret = first.of_type("joined")[0]["resume"]
    replacement = None
    try:
        assert await wait_until(lambda: all_flowing(first, {ids[1]}) and all_flowing(second, {ids[0]}),
                                timeout=30)
        lists = len(second.of_type("participants"))
        signaling = server.app[LIVE_ROOMS].signaling
        lost = signaling.connections[ids[0]]
        peer, first.peer = first.peer, None  # the media connection lives on; the socket dies
        await lose_socket(server, first, ids[0])
        assert signaling.connections[ids[0]] is lost  # kept, waiting for the page
        # The room keeps the participant meanwhile (nobody is told it left).
        replacement = await SignalClient.connect(server.ws_url)
        replacement.peer = peer
        await replacement.send({"type": "resume", "v": 1, "participant": ids[0], "resume": secret})
        resumed = await replacement.next("resumed")
        assert resumed["participant"] == ids[0] and resumed["resume"] == secret
        assert resumed["room"] == room
        offer = await replacement.next("offer")  # the ICE restart
        await replacement._answer(offer)
        replacement.auto_answer = True
        participant = server.app[MEDIA].rooms[room].participants[ids[0]]
        assert await wait_until(lambda: participant.ice_restarts == 1, timeout=15)
        assert await grows(second, ids[0])
        assert all(ids[0] in [p["id"] for p in m["participants"]]
                   for m in second.of_type("participants")[lists:])
        # The participant is the new socket's now: what it says goes out under its id.
        taken_over = signaling.connections[ids[0]]
        assert taken_over is not lost and not taken_over.ws.closed
        await replacement.send({"type": "chat", "text": "zpět"})
        assert await wait_until(lambda: any(m["text"] == "zpět" and m["from"] == ids[0]
                                            for m in second.of_type("chat")))
    finally:
        await first.session.close()
        if replacement is not None:
            await replacement.close()
        await second.close()


async def test_a_resume_that_finds_nothing_is_refused_and_the_page_joins_again(server) -> None:
    room = "obnova-odmitnuta"
    first = await join(server, room, 0)
    secret = first.of_type("joined")[0]["resume"]
    own = participant_id(first)
    stranger = await SignalClient.connect(server.ws_url)
    try:
        for message in ({"type": "resume", "v": 1, "participant": own, "resume": "x" * 43},
                        {"type": "resume", "v": 1, "participant": "p-nobody", "resume": secret},
                        {"type": "resume", "v": 1, "participant": own, "resume": "ž"}):
            await stranger.send(message)
            assert (await stranger.next("error"))["code"] == "resume_failed"
        await stranger.send({"type": "resume", "v": 1, "participant": own})
        assert (await stranger.next("error"))["code"] == "bad_message"
        # A participant that left on purpose cannot be taken back.
        await first.send({"type": "leave"})
        signaling = server.app[LIVE_ROOMS].signaling
        assert await wait_until(lambda: own not in signaling.connections)
        await stranger.send({"type": "resume", "v": 1, "participant": own, "resume": secret})
        assert (await stranger.next("error"))["code"] == "resume_failed"
        await stranger.send({"type": "restart_ice"})
        assert (await stranger.next("error"))["code"] == "not_joined"
    finally:
        await stranger.close()
        await first.close()


async def test_a_participant_whose_socket_does_not_come_back_leaves_after_the_grace(server) -> None:
    signaling = server.app[LIVE_ROOMS].signaling
    signaling.config.resume_grace_s = 1.0
    room = "obnova-pozde"
    first, second = await join(server, room, 0), await join(server, room, 1)
    ids = participant_id(first), participant_id(second)
    try:
        assert await wait_until(lambda: all_flowing(second, {ids[0]}), timeout=30)
        secret = first.of_type("joined")[0]["resume"]
        await lose_socket(server, first, ids[0])
        assert ids[0] in signaling.connections  # kept for the grace
        assert await wait_until(lambda: ids[0] not in signaling.connections, timeout=10)
        assert await wait_until(lambda: [p["id"] for p in second.of_type("participants")[-1]["participants"]]
                                == [ids[1]])
        late = await SignalClient.connect(server.ws_url)
        try:
            await late.send({"type": "resume", "v": 1, "participant": ids[0], "resume": secret})
            assert (await late.next("error"))["code"] == "resume_failed"
        finally:
            await late.close()
    finally:
        await first.close()
        await second.close()


async def test_a_socket_closed_by_its_client_is_a_leave_at_once(server) -> None:
    """A closed tab closes its socket with a handshake: nobody waits for it to come back."""
    signaling = server.app[LIVE_ROOMS].signaling
    room = "obnova-zavreno"
    first, second = await join(server, room, 0), await join(server, room, 1)
    ids = participant_id(first), participant_id(second)
    try:
        assert await wait_until(lambda: all_flowing(second, {ids[0]}), timeout=30)
        first._reader.cancel()
        await first.ws.close()
        assert await wait_until(lambda: ids[0] not in signaling.connections, timeout=5)
        assert await wait_until(lambda: [p["id"] for p in second.of_type("participants")[-1]["participants"]]
                                == [ids[1]])
    finally:
        await first.close()
        await second.close()


async def test_a_participant_whose_media_never_connected_cannot_be_resumed_and_still_times_out(
        server) -> None:
    """A resume used to take over a join that had not answered yet: the pending claim and
    the answer deadline stayed with the old socket, so the participant held its media
    ports for as long as the new socket stayed open."""
    signaling = server.app[LIVE_ROOMS].signaling
    signaling.config.answer_timeout_s = 2.0
    media = server.app[MEDIA]
    first = await SignalClient.connect(server.ws_url)
    second = await SignalClient.connect(server.ws_url)
    try:
        await first.send({"type": "join", "v": 1, "token": room_token(server, "obnova-bez-medii")})
        joined = await first.next("joined")
        await first.next("offer")  # never answered
        assert signaling.pending_total == 1
        await second.send({"type": "resume", "v": 1, "participant": joined["participant"],
                           "resume": joined["resume"]})
        assert (await second.next("error"))["code"] == "resume_failed"
        assert not signaling.connections[joined["participant"]].ws.closed  # still the first socket's
        # The join times out as any unanswered join does, and frees what it held.
        assert (await first.next("error", timeout=10))["code"] == "answer_timeout"
        assert await wait_until(lambda: joined["participant"] not in signaling.connections
                                and media.participant_count == 0, timeout=10)
        assert signaling.pending_total == 0 and signaling.pending_joins == {}
        await second.send({"type": "ping"})
        assert (await second.next("pong"))["type"] == "pong"
        assert not second.of_type("resumed")
    finally:
        await first.close()
        await second.close()
