"""The pipe's control side (mcu/pipe.py) without peers: what it refuses, what it keeps."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import pytest
from mcu._fanout import receive

from mcu import rtp
from mcu.forwarding import Producer
from mcu.pipe import PipedProducer
from mcu.room import MediaWorker, Room
from mcu.worker import WorkerService
from tests.peers import wait_until

ORIGIN = ("127.0.0.1", 40000)


def camera(owner: str = "elsewhere-1", ssrc: int = 1234) -> PipedProducer:
    return PipedProducer(f"{owner}-camera", owner, "Starosta", "host", "video", "camera", ssrc, 96, 97)


async def test_a_piped_producer_joins_the_room_as_a_remote_participant_and_leaves_it() -> None:
    worker = MediaWorker()
    pipe = await worker.open_pipe()
    try:
        room = worker.room("obec")
        local = room.join("site", "guest")
        piped = PipedProducer.from_json(json.loads(json.dumps(camera().to_json())))
        pipe.import_producer(room, piped, list(ORIGIN))  # JSON gives lists
        remote = room.remote_participants["elsewhere-1"]
        assert (remote.name, remote.role, remote.mode) == ("Starosta", "host", "forwarded")
        assert remote.origin == ORIGIN
        assert room.publishers() == [local, remote] and room.publisher("elsewhere-1") is remote
        producer = remote.producers["camera"]
        assert (producer.ssrc, producer.payload_type, producer.nacks_upstream) == (1234, 96, True)
        assert [d["id"] for d in room.describe_participants()] == []  # local ones only (none negotiated)
        pipe.import_producer(room, piped, ORIGIN)  # the same again: nothing changes
        assert room.remote_participants["elsewhere-1"].producers["camera"] is producer

        # Its sender reports count only from the worker it comes from.
        report = rtp.rtcp_sender_report(1234, (3_900_000_000, 0), 90_000, 10, 1000)
        pipe.datagram_received(report, ("127.0.0.1", 40001))
        assert producer.sender_report is None and worker.counters.pipe_dropped == 1
        pipe.datagram_received(report, ORIGIN)
        assert producer.sender_report is not None and producer.sender_report[1:] == (3_900_000_000.0, 90_000)

        pipe.stop_import("obec", piped.producer_id)
        assert "elsewhere-1" not in room.remote_participants and room.publishers() == [local]
        pipe.stop_import("obec", piped.producer_id)  # unknown now: nothing to do
        pipe.update_import("obec", piped.producer_id, True)
        pipe.datagram_received(report, ORIGIN)
        assert worker.counters.pipe_dropped == 2
    finally:
        await worker.close()
    assert worker.pipe is None


async def test_what_cannot_be_piped_is_refused() -> None:
    worker = MediaWorker()
    pipe = await worker.open_pipe()
    try:
        room = worker.room("obec")
        local = room.join("site", "guest")
        with pytest.raises(ValueError, match="not a local"):
            pipe.export_producer(Producer("x-camera", "x", "video", "camera", worker.counters), ORIGIN)
        with pytest.raises(ValueError, match="on this worker"):
            pipe.import_producer(room, camera(owner=local.id), ORIGIN)
        with pytest.raises(ValueError, match="cannot be"):
            pipe.import_producer(room, replace(camera(), kind="audio"), ORIGIN)
        with pytest.raises(ValueError, match="not open"):
            pipe.import_producer(Room(worker, "never-opened"), camera(), ORIGIN)
        with pytest.raises(ValueError):
            pipe.import_producer(room, camera(), ("not-an-address", 1))
        pipe.import_producer(room, camera(), ORIGIN)
        with pytest.raises(ValueError, match="SSRC"):
            pipe.import_producer(room, camera(owner="elsewhere-2"), ORIGIN)
        with pytest.raises(RuntimeError, match="already"):
            await type(pipe).open(worker)
    finally:
        await worker.close()


async def test_closing_the_room_drops_its_pipes() -> None:
    worker = MediaWorker()
    pipe = await worker.open_pipe()
    room = worker.room("obec")
    pipe.import_producer(room, camera(), ORIGIN)
    room.close()
    assert not room.remote_participants and pipe._tracks == {}
    pipe.import_producer(worker.room("obec"), camera(), ORIGIN)  # a new room: the SSRC is free
    await worker.close()
    await asyncio.sleep(0)


async def test_a_piped_screen_is_subscribed_to_only_while_shared() -> None:
    worker = MediaWorker()
    pipe = await worker.open_pipe()
    try:
        room = worker.room("obec")
        room.join("site", "guest")
        screen = replace(camera(), producer_id="elsewhere-1-screen", source="screen", ssrc=99)
        pipe.import_producer(room, camera(), ORIGIN)
        pipe.import_producer(room, screen, ORIGIN)
        remote = room.remote_participants["elsewhere-1"]
        assert not remote.producers["screen"].sharing  # no slot shows it (tests/media/test_pipe.py)
        pipe.update_import("obec", screen.producer_id, True)
        assert remote.producers["screen"].sharing
        pipe.update_import("obec", screen.producer_id, False)
        assert not remote.producers["screen"].sharing
        pipe.import_producer(room, replace(screen, sharing=True), ORIGIN)  # the same, now shared
        assert remote.producers["screen"].sharing
    finally:
        await worker.close()


def layered(owner: str = "elsewhere-1") -> PipedProducer:
    return replace(camera(owner, ssrc=303), layers=(("q", 101), ("h", 202), ("f", 303)))


def vp8_packet(ssrc: int, seq: int) -> bytes:
    # A VP8 keyframe's first packet (descriptor with S, payload header with P clear).
    return rtp.rtp_header(96, True, seq, seq * 3000, ssrc, False) + bytes([0x10, 0x00, 0x00, 0x00])


async def test_a_layered_camera_is_imported_with_its_layers_and_dropped_whole() -> None:
    worker = MediaWorker()
    pipe = await worker.open_pipe()
    try:
        room = worker.room("obec")
        room.join("site", "guest")
        piped = PipedProducer.from_json(json.loads(json.dumps(layered().to_json())))
        assert piped == layered()
        pipe.import_producer(room, piped, ORIGIN)
        producer = room.remote_participants["elsewhere-1"].producers["camera"]
        assert [(layer.rid, layer.ssrc) for layer in producer.layers] == [("q", 101), ("h", 202), ("f", 303)]
        assert all(layer.nacks_upstream and layer.feedback is not None for layer in producer.layers)
        assert set(pipe._tracks[ORIGIN]) == {101, 202, 303}
        # A layer's sender report is that layer's (lip-sync of a slot on it).
        report = rtp.rtcp_sender_report(202, (3_900_000_000, 0), 90_000, 10, 1000)
        pipe.datagram_received(report, ORIGIN)
        assert producer.layers[1].sender_report is not None and producer.layers[0].sender_report is None
        # A packet of one layer counts on that layer.
        pipe.datagram_received(vp8_packet(101, 7), ORIGIN)
        assert [layer.packets for layer in producer.layers] == [1, 0, 0]

        # Its layers changed at the origin (new SSRCs): imported anew, the old ones gone.
        pipe.import_producer(room, replace(layered(), ssrc=909, layers=(("q", 808), ("f", 909))), ORIGIN)
        again = room.remote_participants["elsewhere-1"].producers["camera"]
        assert again is not producer and [layer.rid for layer in again.layers] == ["q", "f"]
        assert set(pipe._tracks[ORIGIN]) == {808, 909} and set(pipe._imports_by_ssrc) == {808, 909}
        assert all(layer.feedback is None for layer in producer.layers)
        pipe.stop_import("obec", piped.producer_id)
        assert pipe._tracks == {} and pipe._imports_by_ssrc == {}
        assert "elsewhere-1" not in room.remote_participants
    finally:
        await worker.close()


async def test_layers_that_cannot_be_piped_are_refused() -> None:
    worker = MediaWorker()
    pipe = await worker.open_pipe()
    try:
        room = worker.room("obec")
        for wrong in (replace(layered(), layers=(("q", 101),), ssrc=101),  # one is no layering
                      replace(layered(), layers=(("q", 101), ("q", 303))),  # a RID twice
                      replace(layered(), layers=(("q", 303), ("f", 303))),  # an SSRC twice
                      replace(layered(), ssrc=101),  # not the top layer's SSRC
                      replace(layered(), source="screen", producer_id="x-screen")):
            with pytest.raises(ValueError):
                pipe.import_producer(room, wrong, ORIGIN)
        with pytest.raises(ValueError, match="layers"):
            PipedProducer.from_json({**layered().to_json(), "layers": [["q"]]})
        pipe.import_producer(room, camera(owner="elsewhere-2", ssrc=202), ORIGIN)
        with pytest.raises(ValueError, match="SSRC"):  # one of its layers' SSRCs is taken
            pipe.import_producer(room, layered(), ORIGIN)
        assert "elsewhere-1" not in room.remote_participants and set(pipe._imports_by_ssrc) == {202}
    finally:
        await worker.close()


async def test_each_layer_is_piped_on_a_leg_of_its_own_and_the_receivers_use_keeps_it_on() -> None:
    # Two workers, real UDP between their pipe sockets; the origin's camera has three
    # layers (a producer as a participant's answer makes it: mcu/participant.py).
    origin, other = MediaWorker(), MediaWorker()
    origin_pipe, other_pipe = await origin.open_pipe(), await other.open_pipe()
    told: list[dict[str, object]] = []

    async def send_message(message: dict[str, object]) -> None:
        told.append(message)

    try:
        room = origin.room("obec")
        local = room.join("site", "guest")
        local.send_message = send_message
        camera_producer = Producer(f"{local.id}-camera", local.id, "video", "camera", origin.counters)
        camera_producer.payload_type = 96
        local.producers["camera"] = camera_producer
        camera_producer.set_layers(["q", "h", "f"])
        piped = origin_pipe.export_producer(camera_producer, other_pipe.address)
        assert [rid for rid, _ in piped.layers] == ["q", "h", "f"] and piped.ssrc == piped.layers[-1][1]
        assert origin_pipe.export_producer(camera_producer, other_pipe.address) == piped  # idempotent
        assert origin_pipe.described(camera_producer.id, other_pipe.address) == piped
        # One leg on each layer's track, none on the camera's slots (no demand of this worker).
        assert [len(layer.track.legs) for layer in camera_producer.layers] == [1, 1, 1]
        assert camera_producer.consumers == []
        far_room = other.room("obec")
        other_pipe.import_producer(far_room, piped, origin_pipe.address)
        far_camera = far_room.remote_participants[local.id].producers["camera"]

        # Each layer's packets come down on its own pipe SSRC into that layer over there.
        for index, layer in enumerate(camera_producer.layers):
            for seq in range(index + 1):
                receive({1000 + index: layer.track}, vp8_packet(1000 + index, seq),
                        origin.counters.packet_path)
        assert await wait_until(lambda: [layer.packets for layer in far_camera.layers] == [1, 2, 3],
                                timeout=5)

        # Nobody has used the middle layer for a while, here or there; the far worker's
        # slots use the top one: the publisher is asked for the lowest and the top.
        camera_producer.layer_wanted_at = [0.0, 0.0, 0.0]
        room._request_layers()
        assert await wait_until(lambda: bool(told))
        assert told[-1] == {"type": "layers", "source": "camera", "active": ["q"]}
        reports = origin.counters.pipe_layer_reports
        other_pipe.report_layers("obec", far_camera.id, {0, 2})
        # The far room's own control step reports its demand ({0}, no slots there) too,
        # so the top layer marked wanted is what tells that this report arrived.
        assert await wait_until(lambda: camera_producer.layer_wanted_at[2] > 0, timeout=5)
        assert origin.counters.pipe_layer_reports > reports
        room._request_layers()
        assert await wait_until(lambda: told[-1]["active"] == ["q", "f"])
        # The same report from another address than the one it is piped to, or naming
        # SSRCs it does not pipe there, counts for nothing.
        ssrcs = [ssrc for _, ssrc in piped.layers]
        report = rtp.rtcp_app(0, 5, b"LAYR", b"".join(s.to_bytes(4, "big") for s in
                                                      (ssrcs[0], ssrcs[1])))
        camera_producer.layer_wanted_at = [0.0, 0.0, 0.0]
        dropped = origin.counters.pipe_dropped
        origin_pipe.datagram_received(report, ("127.0.0.1", other_pipe.address[1] + 1))
        origin_pipe.datagram_received(rtp.rtcp_app(0, 5, b"LAYR", (4242).to_bytes(4, "big")),
                                      other_pipe.address)
        origin_pipe.datagram_received(rtp.rtcp_app(0, 5, b"ELSE", report[12:]), other_pipe.address)
        assert origin.counters.pipe_dropped == dropped + 3
        room._request_layers()
        assert await wait_until(lambda: told[-1]["active"] == ["q"])
        origin_pipe.datagram_received(report, other_pipe.address)  # from where it is piped
        room._request_layers()
        assert await wait_until(lambda: told[-1]["active"] == ["q", "h"])

        # The publisher's layers change: the old legs go, new ones on new SSRCs.
        old_ssrcs = {ssrc for _, ssrc in piped.layers}
        old_tracks = [layer.track for layer in camera_producer.layers]
        camera_producer.set_layers(["q", "f"])
        renewed = origin_pipe.export_producer(camera_producer, other_pipe.address)
        assert [rid for rid, _ in renewed.layers] == ["q", "f"]
        assert not old_ssrcs & set(origin_pipe._exports_by_ssrc)
        assert all(track.legs == () for track in old_tracks)
        assert [len(layer.track.legs) for layer in camera_producer.layers] == [1, 1]

        # Its owner leaves: nothing of it is piped any more.
        origin_pipe.forget_producers([camera_producer])
        assert origin_pipe._exports == {} and origin_pipe._exports_by_ssrc == {}
        assert all(layer.track.legs == () and not layer.consumers for layer in camera_producer.layers)
        assert origin_pipe._sinks == {}
    finally:
        await origin.close()
        await other.close()


async def test_a_camera_whose_layers_become_known_is_piped_again_and_told_once() -> None:
    # The worker's own path (mcu/worker.py): a participant's answer names its camera's
    # layers after the camera was first piped; the front must hear the new description.
    worker = MediaWorker()
    pipe = await worker.open_pipe()
    events: list[tuple[str, dict[str, Any]]] = []
    service = WorkerService(worker, lambda event, data: events.append((event, data)))
    try:
        room = worker.room("obec")
        local = room.join("site", "guest")
        camera_producer = Producer(f"{local.id}-camera", local.id, "video", "camera", worker.counters)
        camera_producer.payload_type = 96
        local.producers["camera"] = camera_producer
        service.peers["obec"] = [ORIGIN]
        service._export(room)
        service._export(room)  # nothing new: told once
        assert [e for e, _ in events] == ["piped"] and events[0][1]["producers"][0]["layers"] == []
        first_ssrc = events[0][1]["producers"][0]["ssrc"]
        camera_producer.set_layers(["q", "h", "f"])
        service._export(room)
        service._export(room)
        assert [e for e, _ in events] == ["piped", "piped"]
        (described,) = events[1][1]["producers"]
        assert [rid for rid, _ in described["layers"]] == ["q", "h", "f"]
        assert first_ssrc not in pipe._exports_by_ssrc and len(pipe._exports_by_ssrc) == 3
        assert camera_producer.track.legs == ()  # the single stream's leg is gone
    finally:
        await worker.close()
