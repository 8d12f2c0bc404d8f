"""H.264 rooms with real aiortc participants (libx264 through PyAV) through the service:
the room's codec from its participants, H.264 forwarded and decoded, a participant that
cannot do the room's codec, and the composite of H.264 cameras (docs/codecs.md)."""

from __future__ import annotations

import numpy as np
import pytest
from mcu._fanout import CODEC_VP8, is_keyframe_start

from multipoint.app import MEDIA
from tests.media.test_mixing import colour_share, received
from tests.media.test_multiparty import participant_id, room_token
from tests.peers import ClientPeer, ColourTrack, RtcpProbe, ToneTrack, wait_until
from tests.signal_client import SignalClient

pytestmark = pytest.mark.media

RED, GREEN, BLUE = (220, 30, 30), (30, 200, 30), (30, 30, 220)


async def join(server, room: str, name: str, colour, video_codecs: list[str] | None,
               mode: str = "forwarded", tone: float = 440, role: str = "guest") -> SignalClient:
    client = await SignalClient.connect(server.ws_url)
    client.peer = ClientPeer(audio=ToneTrack(tone), video=ColourTrack(colour))
    message = {"type": "join", "v": 1, "token": room_token(server, room, role), "name": name,
               "mode": mode}
    if video_codecs is not None:
        message["video_codecs"] = video_codecs
    await client.send(message)
    await client.next("joined")
    offer = await client.next("offer")
    client._show(offer["tracks"])
    await client.send({"type": "answer", "sdp": await client.peer.answer(offer["sdp"], offer["publish"]),
                       "revision": offer["revision"]})
    client.auto_answer = True
    return client


def video_codecs_offered(sdp: str) -> set[str]:
    """The codecs of every video m-section of an SDP, e.g. {"H264/90000 42e01f 1", "rtx"}."""
    found = set()
    for section in sdp.split("\r\nm=")[1:]:
        if not section.startswith("video"):
            continue
        lines = section.splitlines()
        fmtp = dict(line[len("a=fmtp:"):].split(" ", 1) for line in lines if line.startswith("a=fmtp:"))
        for line in lines:
            if not line.startswith("a=rtpmap:"):
                continue
            payload_type, codec = line[len("a=rtpmap:"):].split(" ", 1)
            parameters = dict(p.split("=", 1) for p in fmtp.get(payload_type, "").split(";") if "=" in p)
            if codec.startswith("H264"):
                codec += f" {parameters['profile-level-id']} {parameters['packetization-mode']}"
            found.add("rtx" if codec.startswith("rtx") else codec)
    return found


def shows_colour(client: SignalClient, participant: str, colour) -> bool:
    for mid, info in client.tracks.items():
        if info["participant"] == participant and info["kind"] == "video":
            entry = client.peer.received.get(mid)
            if entry is None or entry.frames < 10 or entry.last_frame is None:
                return False
            median = np.median(entry.last_frame.to_ndarray(format="rgb24").reshape(-1, 3), axis=0)
            return all(abs(median[i] - colour[i]) < 40 for i in range(3))
    return False


async def test_two_h264_publishers_decode_each_other(server) -> None:
    room = "h264-pair"
    # The first participant prefers H.264 (MULTIPOINT_VIDEO_CODEC is auto): the room forwards it.
    first = await join(server, room, "Safari", RED, ["h264", "vp8"])
    second = await join(server, room, "Chrome", GREEN, ["vp8", "h264"])
    ids = [participant_id(first), participant_id(second)]
    media = server.app[MEDIA]
    try:
        for client in (first, second):
            offer = client.of_type("offer")[0]
            assert video_codecs_offered(offer["sdp"]) == {"H264/90000 42e01f 1", "rtx"}
            # The H.264 camera is asked for simulcast layers (docs/simulcast.md) ...
            camera_section = next(section for section in offer["sdp"].split("\r\nm=")
                                  if f"a=mid:{offer['publish']['camera']}\r\n" in section + "\r\n")
            assert "a=simulcast:recv q;h;f" in camera_section
        assert await wait_until(lambda: shows_colour(first, ids[1], GREEN), timeout=30), \
            first.live_frames("video")
        assert await wait_until(lambda: shows_colour(second, ids[0], RED), timeout=30), \
            second.live_frames("video")
        # What went through the server was H.264, on legs negotiated for it.
        for own in ids:
            participant = media.rooms[room].participants[own]
            assert participant.video_codec == "h264"
            assert participant.producers["camera"].codec == "h264"
            assert participant.producers["camera"].packets > 0
            # ... and aiortc, which answers without them, sends one stream, forwarded as is.
            assert participant.simulcast and participant.producers["camera"].layers == []
            legs = [c for c in participant.consumers.values() if c.kind == "video" and c.producer is not None]
            assert legs and all(c.codec == "h264" and c.leg.packets > 0 for c in legs)
        listed = second.of_type("participants")[-1]["participants"]
        assert {p["video_codec"] for p in listed} == {"h264"}
    finally:
        for client in (first, second):
            await client.close()


async def test_a_participant_without_the_rooms_codec_is_heard_and_listed_but_its_video_stays_apart(
        server) -> None:
    room = "h264-mixed-codecs"
    h264 = await join(server, room, "Room unit", RED, ["h264"], tone=500)
    vp8_only = await join(server, room, "Old page", GREEN, None, tone=900)  # says nothing: VP8
    both = await join(server, room, "Laptop", BLUE, ["vp8", "h264"], tone=1300)
    ids = {c: participant_id(c) for c in (h264, vp8_only, both)}
    media = server.app[MEDIA]
    try:
        assert video_codecs_offered(vp8_only.of_type("offer")[0]["sdp"]) == {"VP8/90000", "rtx"}
        assert video_codecs_offered(both.of_type("offer")[0]["sdp"]) == {"H264/90000 42e01f 1", "rtx"}
        # Everybody hears everybody.
        for client in (h264, vp8_only, both):
            others = {ids[c] for c in ids if c is not client}
            assert await wait_until(lambda c=client, o=others: set(c.live_frames("audio")) == o
                                    and all(v > 20 for v in c.live_frames("audio").values()), timeout=30)
        # The H.264 two see each other; the VP8 one's video reaches nobody, and it sees nobody.
        assert await wait_until(lambda: shows_colour(h264, ids[both], BLUE), timeout=30)
        assert await wait_until(lambda: shows_colour(both, ids[h264], RED), timeout=30)
        assert not any(i["kind"] == "video" for i in vp8_only.tracks.values())
        for client in (h264, both):
            shown = {i["participant"] for i in client.tracks.values() if i["kind"] == "video"}
            assert ids[vp8_only] not in shown
        participants = media.rooms[room].participants
        assert participants[ids[vp8_only]].video_codec == "vp8"
        assert participants[ids[vp8_only]].producers["camera"].packets > 0  # it sends; it is not forwarded
        assert all(c.producer is None for c in participants[ids[vp8_only]].slots["camera"])
        # The list says who uses which codec: the page marks those it cannot see.
        listed = {p["id"]: p["video_codec"] for p in vp8_only.of_type("participants")[-1]["participants"]}
        assert listed == {ids[h264]: "h264", ids[vp8_only]: "vp8", ids[both]: "h264"}
    finally:
        for client in (h264, vp8_only, both):
            await client.close()


async def test_a_mixed_participant_sees_h264_cameras_in_the_vp8_composite(server) -> None:
    room = "h264-composite"
    red = await join(server, room, "Red", RED, ["h264", "vp8"])
    green = await join(server, room, "Green", GREEN, ["h264", "vp8"])
    unit = await join(server, room, "Room unit", BLUE, ["h264", "vp8"], mode="mixed", tone=1000)
    media = server.app[MEDIA]
    try:
        participants = media.rooms[room].participants
        assert participants[participant_id(red)].video_codec == "h264"
        # The composite is VP8: the mixed participant receives VP8, and publishes the
        # room's H.264, so the forwarded ones see its camera.
        mixed = participants[participant_id(unit)]
        assert (mixed.video_codec, mixed.publish_codec) == ("vp8", "h264")
        offer = unit.of_type("offer")[0]
        publish_mids = set(offer["publish"].values())
        sections = {s.split("a=mid:")[1].split("\r\n")[0]: s for s in offer["sdp"].split("\r\nm=")[1:]}
        for mid, section in sections.items():
            if section.startswith("video"):
                wanted = {"H264/90000 42e01f 1", "rtx"} if mid in publish_mids else {"VP8/90000", "rtx"}
                assert video_codecs_offered("\r\nm=" + section) == wanted, mid
        assert await wait_until(lambda: received(unit, "video") is not None
                                and received(unit, "video").frames > 10, timeout=30)
        # The H.264 cameras were decoded into their tiles.
        assert await wait_until(lambda: all(colour_share(received(unit, "video").last_frame, c) > 0.05
                                            for c in (RED, GREEN)), timeout=15)
        # The forwarded H.264 participants see each other and the unit's camera.
        assert await wait_until(lambda: shows_colour(red, participant_id(green), GREEN), timeout=20)
        assert await wait_until(lambda: shows_colour(red, participant_id(unit), BLUE), timeout=20)
    finally:
        for client in (red, green, unit):
            await client.close()


async def test_a_join_with_malformed_video_codecs_is_refused(server) -> None:
    client = await SignalClient.connect(server.ws_url)
    try:
        token = room_token(server, "h264-bad")
        for value, code in (("h264", "bad_message"), ([1], "bad_message"), (["x" * 33], "too_large"),
                            (["vp8"] * 9, "too_large")):
            await client.send({"type": "join", "v": 1, "token": token, "video_codecs": value})
            assert (await client.next("error"))["code"] == code
        assert "h264-bad" not in server.app[MEDIA].rooms
        # Names it does not know are ignored: nothing left is VP8.
        client.peer = ClientPeer(audio=ToneTrack(), video=ColourTrack())
        await client.send({"type": "join", "v": 1, "token": token, "video_codecs": ["av1"]})
        await client.next("joined")
        offer = await client.next("offer")
        assert video_codecs_offered(offer["sdp"]) == {"VP8/90000", "rtx"}
    finally:
        await client.close()


async def test_switched_to_mixed_its_receive_slots_renegotiate_to_vp8_and_back(server) -> None:
    room = "h264-switch"
    host = await join(server, room, "Host", RED, ["h264", "vp8"], role="host")
    unit = await join(server, room, "Room unit", GREEN, ["h264", "vp8"])
    unit_id = participant_id(unit)
    participant = server.app[MEDIA].rooms[room].participants[unit_id]
    probe = RtcpProbe(unit.peer)
    try:
        assert await wait_until(lambda: shows_colour(unit, participant_id(host), RED), timeout=30)
        probe.watch_transport(unit.peer.pc.getTransceivers()[0])  # one bundled transport: all of it
        await host.send({"type": "set_mode", "participant": unit_id, "mode": "mixed"})
        assert await wait_until(lambda: len(unit.of_type("offer")) == 2)
        assert (participant.video_codec, participant.publish_codec) == ("vp8", "h264")
        composite = participant.slots["camera"][0]
        assert await wait_until(lambda: composite.codec == "vp8" and composite.leg.packets > 20, timeout=30)
        # The composite goes out as VP8 under the payload type the new answer settled,
        # from a keyframe on. (aiortc's own receiver cannot change codec on a started
        # track, so this client is looked at on the wire; a browser decodes it.)
        sent = [(pt, payload) for pt, ssrc, _, payload in probe.received if ssrc == composite.ssrc]
        composite_payload_type = composite.payload_type
        after = [payload for pt, payload in sent if pt == composite_payload_type]
        assert after and is_keyframe_start(after[0], CODEC_VP8)
        assert not [pt for pt, _ in sent[len(sent) - len(after):] if pt != composite.payload_type]
        # Its camera stayed H.264 and in the host's view all along.
        before = host.live_frames("video").get(unit_id, 0)
        assert await wait_until(lambda: host.live_frames("video").get(unit_id, 0) > before + 10)
        assert shows_colour(host, unit_id, GREEN)
        # Forwarded again: the slots are H.264 once more and show the host.
        await host.send({"type": "set_mode", "participant": unit_id, "mode": "forwarded"})
        assert await wait_until(lambda: len(unit.of_type("offer")) == 3)
        assert await wait_until(lambda: all(c.codec == "h264" for c in participant.slots["camera"]))
        # The next control step points a slot at the host's camera again: H.264 on the
        # wire under the H.264 payload type, no VP8.
        host_camera = server.app[MEDIA].rooms[room].participants[participant_id(host)].producers["camera"]
        assert await wait_until(lambda: any(c.producer is host_camera and c.leg.packets > 0
                                            for c in participant.slots["camera"]), timeout=15)
        slot = next(c for c in participant.slots["camera"] if c.producer is host_camera)
        probe.received.clear()
        assert await wait_until(lambda: sum(1 for p in probe.received if p[1] == slot.ssrc) > 10)
        payload_types = {p[0] for p in probe.received if p[1] == slot.ssrc}
        assert payload_types <= {slot.payload_type, slot.rtx_payload_type}
        assert slot.payload_type in payload_types and slot.payload_type != composite_payload_type
    finally:
        for client in (host, unit):
            await client.close()
