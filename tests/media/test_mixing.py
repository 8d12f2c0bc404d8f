"""Mixed participants and recording, with real aiortc participants through the service."""

from __future__ import annotations

import asyncio

import av
import numpy as np
import pytest

from multipoint.app import MEDIA
from tests.media.test_multiparty import participant_id, room_token
from tests.peers import ClientPeer, ColourTrack, ToneTrack, wait_until
from tests.signal_client import SignalClient

pytestmark = pytest.mark.media

RED, GREEN, BLUE = (220, 30, 30), (30, 200, 30), (30, 30, 220)
EMPTY = type("Nothing", (), {"frames": 0})()  # no such leg (yet): nothing received


async def join(server, room: str, name: str, tone: float, colour, mode: str = "forwarded",
               role: str = "guest", loudness: float = 0.3,
               receive_video: bool = True, screen=None) -> SignalClient:
    client = await SignalClient.connect(server.ws_url)
    client.peer = ClientPeer(audio=ToneTrack(tone, amplitude=loudness), video=ColourTrack(colour),
                             receive_video=receive_video,
                             screen=ColourTrack(screen) if screen is not None else None)
    await client.send({"type": "join", "v": 1, "token": room_token(server, room, role), "name": name,
                       "mode": mode})
    await client.next("joined")
    offer = await client.next("offer")
    await client.send({"type": "answer", "sdp": await client.peer.answer(offer["sdp"], offer["publish"]),
                       "revision": offer["revision"]})
    client.tracks = offer["tracks"]
    client.auto_answer = True
    return client


def received(client: SignalClient, kind: str):
    return next((r for mid, r in client.peer.received.items()
                 if client.tracks.get(mid, {}).get("source") == "mix" and r.track.kind == kind), None)


def colour_share(frame, colour) -> float:
    image = frame.to_ndarray(format="rgb24").reshape(-1, 3).astype(int)
    return float((np.abs(image - np.array(colour)).max(axis=1) < 45).mean())


async def test_mixed_listeners_hear_everyone_but_themselves_and_see_one_composite(server) -> None:
    room = "mixed"
    forwarded = await join(server, room, "Forwarded", 440, RED)
    talker = await join(server, room, "Room unit", 1000, GREEN, mode="mixed")
    listener = await join(server, room, "Listener", 700, BLUE, mode="mixed", loudness=0.0)
    try:
        # A mixed participant gets exactly two legs: the mix and the composite.
        assert {(i["kind"], i["source"]) for i in listener.tracks.values()} == {("audio", "mix"),
                                                                                ("video", "mix")}
        assert await wait_until(lambda: received(listener, "audio") is not None
                                and received(listener, "audio").frames > 120, timeout=30)
        mix = received(listener, "audio")
        assert mix.spectrum_peak(440) > 20 and mix.spectrum_peak(1000) > 20
        own = received(talker, "audio")
        assert own.spectrum_peak(440) > 20
        # Its own tone is gone (what is left at 1000 Hz is the other tone's leakage).
        assert own.spectrum_peak(1000) < own.spectrum_peak(440) / 100, "the talker hears itself"
        assert mix.spectrum_peak(1000) > mix.spectrum_peak(440) / 10

        # The composite shows every camera's colour in its tile.
        assert await wait_until(lambda: received(listener, "video") is not None
                                and received(listener, "video").frames > 10, timeout=20)
        assert await wait_until(lambda: all(colour_share(received(listener, "video").last_frame, c) > 0.05
                                            for c in (RED, GREEN, BLUE)), timeout=10)
        # Forwarded participants still get separate streams of the mixed ones.
        assert {i["participant"] for i in forwarded.tracks.values()} == {participant_id(talker),
                                                                         participant_id(listener)}
    finally:
        for client in (forwarded, talker, listener):
            await client.close()


async def test_a_source_that_stops_or_sends_garbage_never_stalls_the_mix(server) -> None:
    room = "mixed-faults"
    broken = await join(server, room, "Broken", 440, RED)
    steady = await join(server, room, "Steady", 1000, GREEN)
    listener = await join(server, room, "Listener", 700, BLUE, mode="mixed", loudness=0.0)
    media = server.app[MEDIA]
    try:
        assert await wait_until(lambda: received(listener, "audio") is not None
                                and received(listener, "audio").frames > 60, timeout=30)
        producer = media.rooms[room].participants[participant_id(broken)].producers["microphone"]
        transport = broken.peer.pc.getTransceivers()[0].sender.transport
        # Garbage with a valid RTP header on the broken site's audio: it reaches the mixer.
        rng = np.random.default_rng(1)
        for index in range(50):
            header = bytes([0x80, producer.payload_type]) + (40000 + index).to_bytes(2, "big") \
                + (index * 960).to_bytes(4, "big") + producer.ssrc.to_bytes(4, "big")
            await transport._send_rtp(header + rng.bytes(80))
        # ... and then its camera and microphone stop altogether.
        for transceiver in broken.peer.pc.getTransceivers():
            transceiver.sender.replaceTrack(None)
        audio_before = received(listener, "audio").frames
        video_before = received(listener, "video").frames
        assert await wait_until(lambda: received(listener, "audio").frames > audio_before + 100, timeout=15)
        assert received(listener, "audio").spectrum_peak(1000) > 20
        assert await wait_until(lambda: received(listener, "video").frames > video_before + 10)
        assert colour_share(received(listener, "video").last_frame, RED) > 0.03  # a frozen tile
        assert media.rooms[room].mixer is not None
    finally:
        for client in (broken, steady, listener):
            await client.close()


async def test_recording_is_a_playable_file_even_when_the_room_ends_abruptly(server) -> None:
    room = "recorded"
    host = await join(server, room, "Host", 440, RED, role="host")
    guest = await join(server, room, "Guest", 1000, GREEN)
    media = server.app[MEDIA]
    try:
        await guest.send({"type": "record", "active": True})
        assert (await guest.next("error"))["code"] == "forbidden"
        await host.send({"type": "record", "active": True})
        assert await wait_until(lambda: media.rooms[room].recording)
        assert await wait_until(lambda: any(m.get("recording") for m in guest.of_type("participants")))
        path = media.rooms[room].mixer.recording_path
        await asyncio.sleep(3)
    finally:
        # Everyone vanishes without stopping the recording.
        await host.close()
        await guest.close()
    assert await wait_until(lambda: room not in media.rooms, timeout=15)
    with av.open(str(path)) as container:
        kinds = sorted(stream.type for stream in container.streams)
        assert kinds == ["audio", "video"]
        duration = container.duration / 1_000_000
        assert 1.5 < duration < 6, duration
        frames = sum(1 for _ in container.decode(video=0))
        assert frames > 10
        container.seek(int(1.0 * 1_000_000))  # seekable


async def test_recordings_are_listed_and_downloaded_by_host_links_only(server) -> None:
    import aiohttp

    room = "listed"
    host = await join(server, room, "Host", 440, RED, role="host")
    media = server.app[MEDIA]
    try:
        await host.send({"type": "record", "active": True})
        assert await wait_until(lambda: media.rooms[room].recording)
        await asyncio.sleep(2)
        await host.send({"type": "record", "active": False})
        assert await wait_until(lambda: not media.rooms[room].recording)
    finally:
        await host.close()
    host_token, guest_token = room_token(server, room, "host"), room_token(server, room, "guest")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/recordings/{room}", params={"token": guest_token}) as r:
            assert r.status == 403
        async with http.get(f"{server.url}/recordings/{room}", params={"token": "nonsense"}) as r:
            assert r.status == 401
        async with http.get(f"{server.url}/recordings/{room}", params={"token": host_token}) as r:
            listing = await r.json()
        (entry,) = listing["recordings"]
        assert entry["bytes"] > 1000
        async with http.get(f"{server.url}/recordings/{room}/{entry['file']}",
                            params={"token": host_token}) as r:
            assert r.status == 200 and len(await r.read()) == entry["bytes"]
        async with http.get(f"{server.url}/recordings/{room}/..%2Fsecret.key",
                            params={"token": host_token}) as r:
            assert r.status == 404


async def test_a_shared_screen_is_shown_large_in_the_composite_while_it_is_shared(server) -> None:
    room = "mixed-screen"
    yellow = (230, 230, 40)
    presenter = await join(server, room, "Presenter", 440, RED, screen=yellow)
    unit = await join(server, room, "Room unit", 1000, GREEN, mode="mixed", loudness=0.0)
    mixer = server.app[MEDIA].rooms[room].mixer
    assert mixer is not None

    def composite():
        return (received(unit, "video") or EMPTY).frames and received(unit, "video").last_frame

    try:
        assert await wait_until(lambda: composite() and colour_share(composite(), RED) > 0.05, timeout=20)
        assert colour_share(composite(), yellow) < 0.01
        # The presenter shares its screen: the unit, which has no screen slot, sees it
        # in the composite, larger than the cameras (which stay, in a strip below).
        await presenter.send({"type": "screen", "active": True})
        assert await wait_until(lambda: colour_share(composite(), yellow) > 0.3, timeout=20)
        assert colour_share(composite(), RED) > 0.005 and colour_share(composite(), GREEN) > 0.005
        assert colour_share(composite(), yellow) > 4 * colour_share(composite(), RED)
        assert mixer.describe()["screens"] == [participant_id(presenter)]
        # The share ends: the composite shows the cameras alone again.
        await presenter.send({"type": "screen", "active": False})
        assert await wait_until(lambda: colour_share(composite(), yellow) < 0.01, timeout=20)
        assert colour_share(composite(), RED) > 0.05 and mixer.screens == {}
        # Sharing again and leaving while sharing: its screen leaves with it.
        await presenter.send({"type": "screen", "active": True})
        assert await wait_until(lambda: colour_share(composite(), yellow) > 0.3, timeout=20)
        await presenter.close()
        assert await wait_until(lambda: colour_share(composite(), yellow) < 0.01, timeout=20)
        assert mixer.screens == {} and not any(":screen" in str(s) for s in mixer.decoders.selected)
    finally:
        for client in (presenter, unit):
            await client.close()


async def test_audio_only_units_cost_no_video_work_until_somebody_watches(server) -> None:
    room = "mixed-audio-only"
    media = server.app[MEDIA]
    # Room units that send their camera but declined the composite.
    units = [await join(server, room, f"Unit {index}", tone, RED, mode="mixed",
                        receive_video=False) for index, tone in enumerate((500, 900))]
    watcher = None
    try:
        mixer = media.rooms[room].mixer
        assert mixer is not None
        # The mix flows; nobody receives the composite: no camera decoded, nothing composed.
        assert await wait_until(lambda: all((received(u, "audio") or EMPTY).frames > 60
                                            for u in units), timeout=30)
        assert not mixer.composing and mixer.frames_composed == 0

        assert not mixer.video_ticking  # not even woken 15 times a second to find that out
        # A participant that watches: the composite is composed, starting on keyframes.
        watcher = await join(server, room, "Watcher", 700, BLUE, mode="mixed", loudness=0.0)
        assert await wait_until(lambda: (received(watcher, "video") or EMPTY).frames > 10,
                                timeout=20)
        assert mixer.composing
        # It leaves: composing stops again.
        await watcher.close()
        watcher = None
        assert await wait_until(lambda: not mixer.composing, timeout=10)
        assert await wait_until(lambda: not mixer.video_ticking, timeout=5)
        composed = mixer.frames_composed
        await asyncio.sleep(1.0)
        assert mixer.frames_composed == composed
    finally:
        for client in [*units, *([watcher] if watcher else [])]:
            await client.close()


async def test_a_room_where_nobody_talks_gets_the_mix_every_tick_and_costs_no_codec_work(server) -> None:
    room = "mixed-silent"
    media = server.app[MEDIA]
    # Room units in a quiet room: their microphones send digital silence (level 127).
    units = [await join(server, room, f"Unit {index}", 500, RED, mode="mixed", loudness=0.0,
                        receive_video=False) for index in range(3)]
    try:
        mixer = media.rooms[room].mixer
        assert mixer is not None
        assert await wait_until(lambda: all((received(u, "audio") or EMPTY).frames > 60
                                            for u in units), timeout=30)
        stats = mixer.audio.stats
        ticks, encodes = stats.ticks, stats.encodes
        frames = [received(u, "audio").frames for u in units]
        assert await wait_until(lambda: stats.ticks >= ticks + 100, timeout=10)
        ticked = stats.ticks - ticks
        for unit, before in zip(units, frames, strict=True):
            # One packet a tick to each (a few may still be on their way).
            assert received(unit, "audio").frames - before >= ticked - 5
            assert float(np.max(np.abs(np.concatenate(received(unit, "audio").audio[-50:])))) < 50
        assert stats.decodes == 0  # nobody was ever selected: no source decoded
        assert stats.encodes == encodes  # the packet for silence settled long ago
    finally:
        for client in units:
            await client.close()


async def test_a_quiet_unit_reaches_python_only_while_it_talks_and_is_heard_when_it_does(server) -> None:
    room = "mixed-gated"
    media = server.app[MEDIA]
    quiet = await join(server, room, "Quiet", 900, RED, mode="mixed", loudness=0.0, receive_video=False)
    listener = await join(server, room, "Listener", 500, BLUE, mode="mixed", loudness=0.0,
                          receive_video=False)
    try:
        mixer = media.rooms[room].mixer
        assert mixer is not None
        assert await wait_until(lambda: (received(listener, "audio") or EMPTY).frames > 60, timeout=30)
        source = participant_id(quiet)
        track = mixer.sources[source][0].tap_track
        buffer = mixer.audio.playout(source).buffer
        # Silent: its packets are forwarded and counted in C, none reaches the mixer.
        assert track.tap_level_limit < 127
        packets, pushed = track.packets, buffer.stats.received
        assert await wait_until(lambda: track.packets > packets + 50, timeout=10)
        assert buffer.stats.received == pushed
        # It talks: the gate opens with its first loud packet and the listener hears it.
        quiet.peer.audio.amplitude = 0.3
        assert await wait_until(lambda: track.tap_level_limit == 127, timeout=10)
        assert await wait_until(lambda: received(listener, "audio").spectrum_peak(900) > 20, timeout=10)
        # Never itself: the other unit is silent, so what it hears is silence.
        assert int(np.max(np.abs(np.concatenate(received(quiet, "audio").audio[-25:])))) < 100
        # It stops: a second and a half later (hold, then the gate's second) it is gated again.
        quiet.peer.audio.amplitude = 0.0
        assert await wait_until(lambda: track.tap_level_limit < 127, timeout=10)
        assert mixer.audio.selector.selected == []
    finally:
        for client in (quiet, listener):
            await client.close()


async def test_a_mixed_room_reads_its_sockets_on_the_tick_until_someone_receives_them(server) -> None:
    """Mixed participants' sockets are read on the mixer's audio tick (no wake-up per
    packet) while nobody receives their media forwarded; a forwarded participant's slots
    take them back to the event loop, and its leaving gives them to the tick again."""
    room = "mixed-tick-read"
    media = server.app[MEDIA]
    talker = await join(server, room, "Talker", 900, RED, mode="mixed", receive_video=False)
    listener = await join(server, room, "Listener", 500, BLUE, mode="mixed", loudness=0.0,
                          receive_video=False)
    mixed = {participant_id(talker), participant_id(listener)}
    forwarded = None
    try:
        mixer = media.rooms[room].mixer
        assert mixer is not None
        assert await wait_until(lambda: set(mixer.tick_read) == mixed, timeout=30)
        sockets = [sock for socks in mixer.tick_read.values() for sock in socks]
        assert sockets and all(sock.on_tick for sock in sockets)
        loop = asyncio.get_running_loop()
        assert not any(loop.remove_reader(sock.get_extra_info("socket").fileno()) for sock in sockets)
        # The loop does not read them now: whatever they read came through the tick.
        read = [sock.reader.datagrams for sock in sockets]
        frames = received(listener, "audio").frames
        assert await wait_until(lambda: received(listener, "audio").frames > frames + 100, timeout=10)
        assert all(sock.reader.datagrams > before + 50 for sock, before in zip(sockets, read, strict=True))
        assert received(listener, "audio").spectrum_peak(900) > 20  # the talker is heard
        assert mixer.audio.playout(participant_id(talker)).buffer.stats.late == 0

        # Someone receives them forwarded: back to the event loop, and heard at once.
        forwarded = await join(server, room, "Forwarded", 700, GREEN)
        assert await wait_until(lambda: not mixer.tick_read, timeout=10)
        assert not any(sock.on_tick for sock in sockets)
        assert await wait_until(lambda: any(
            r.track.kind == "audio" and r.frames > 50 and r.spectrum_peak(900) > 20
            for r in forwarded.peer.received.values()), timeout=20)
        await forwarded.close()
        forwarded = None
        assert await wait_until(lambda: set(mixer.tick_read) == mixed, timeout=10)

        # One leaves: its sockets are let go of; the other's stay on the tick.
        await talker.close()
        assert await wait_until(lambda: set(mixer.tick_read) == {participant_id(listener)}, timeout=10)
    finally:
        for client in (talker, listener, forwarded):
            if client is not None:
                await client.close()


async def test_cameras_read_on_the_tick_are_still_composed(server) -> None:
    """Read on the tick, a talker's camera comes in before the mix, and its pictures
    are decoded after the mix is out: the composite shows every camera all the same."""
    room = "mixed-tick-read-video"
    media = server.app[MEDIA]
    talker = await join(server, room, "Talker", 900, RED, mode="mixed")
    listener = await join(server, room, "Listener", 500, BLUE, mode="mixed", loudness=0.0)
    try:
        mixer = media.rooms[room].mixer
        assert mixer is not None
        assert await wait_until(lambda: len(mixer.tick_read) == 2, timeout=30)
        decoded = dict(mixer.frames_decoded)
        frames = (received(listener, "video") or EMPTY).frames
        assert await wait_until(lambda: all(mixer.frames_decoded.get(source, 0) > decoded.get(source, 0) + 30
                                            for source in mixer.tick_read), timeout=20)
        assert len(mixer.tick_read) == 2  # still read on the tick
        assert await wait_until(lambda: received(listener, "video").frames > frames + 10, timeout=10)
        assert await wait_until(lambda: all(colour_share(received(listener, "video").last_frame, c) > 0.05
                                            for c in (RED, BLUE)), timeout=10)
        assert received(listener, "audio").spectrum_peak(900) > 20
    finally:
        for client in (talker, listener):
            await client.close()
